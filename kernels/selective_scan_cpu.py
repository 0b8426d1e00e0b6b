"""Fused CPU selective scan: the compiled C loops of ``kernels/csrc/selective_scan_cpu.c``.

Built by the project's own install (``setup.py``) and loaded by :mod:`kernels.cpu_lib`. :mod:`ssm.chunked_scan`
uses it as its autograd Function's core when :func:`kernels.cpu_lib.available` (float32 and float64 CPU
tensors), and its torch core otherwise. One call does the whole scan: the step's bias and softplus, the
padding mask, the recurrence, the D skip and the z gate. Shapes follow :func:`ssm.selective_scan`;
channels are read and written channels-last (Mamba's layout), so Mamba's transposed views pass without
copies:

==============================  ===========================================================
``u, delta, z, y, dy``          (batch, dim, L), any layout (copied if channels are not contiguous)
``A``                           (dim, N)
``B, C``                        (batch, G, N, L), any strides (a time-invariant expand is not copied)
``D, delta_bias``               (dim,) or None
``mask``                        (batch, L) bool or None
``ckpt``                        (batch, n_chunks + 1, N, dim): chunk-entry states, then the last state
``dlast``                       (batch, dim, N) or None
==============================  ===========================================================
"""

from __future__ import annotations

import torch

from kernels.cpu_lib import channels_contiguous, check, kernel, ptr, run_slices, slices, strides_bt

__all__ = ["scan_backward", "scan_forward"]


class _Inputs:
    """The inputs in the kernels' layouts, and their argument list for one batch slice."""

    def __init__(self, u, delta, A, B, C, D, z, delta_bias, softplus: bool, mask, others: dict):
        check({"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D, "z": z, "delta_bias": delta_bias}
              | others, u.dtype)  # fmt: skip
        self.u, self.delta, self.z = (channels_contiguous(t, 1) for t in (u, delta, z))
        self.A_t = A.t().contiguous()  # (N, dim)
        self.B, self.C = B, C
        self.D = None if D is None else D.contiguous()
        self.bias = None if delta_bias is None else delta_bias.contiguous()
        self.softplus = int(bool(softplus))
        self.mask = None if mask is None else mask.to(torch.uint8)
        _, dim, length = u.shape
        self.shape = (length, dim, A.shape[1], B.shape[1])  # L, dim, N, G

    def args(self, b0: int, b1: int, chunk: int) -> tuple:
        u, delta, z, m = self.u, self.delta, self.z, self.mask
        return (
            b1 - b0, *self.shape, chunk,
            ptr(u, b0), *strides_bt(u, 2), ptr(delta, b0), *strides_bt(delta, 2), ptr(z, b0), *strides_bt(z, 2),
            ptr(self.A_t), ptr(self.B, b0), *self.B.stride(), ptr(self.C, b0), *self.C.stride(), ptr(self.D),
            ptr(self.bias), self.softplus, ptr(m, b0), *((0, 0) if m is None else m.stride()),
        )  # fmt: skip


def scan_forward(u, delta, A, B, C, D, z, delta_bias, softplus, mask, chunk: int):
    """-> (y (batch, dim, L), a channels-last view; ckpt (batch, n_chunks + 1, N, dim))."""
    inputs = _Inputs(u, delta, A, B, C, D, z, delta_bias, softplus, mask, {})
    fn = kernel("sscan_fwd", u.dtype)
    batch, dim, length = u.shape
    y = u.new_empty(batch, length, dim)
    ckpt = u.new_empty(batch, -(-length // chunk) + 1, A.shape[1], dim)

    def call(i: int, b0: int, b1: int) -> None:
        fn(*inputs.args(b0, b1, chunk), ptr(y, b0), ptr(ckpt, b0))

    run_slices(call, slices(batch))
    return y.transpose(1, 2), ckpt


def scan_backward(u, delta, A, B, C, D, z, delta_bias, softplus, mask, ckpt, dy, dlast, chunk: int):
    """-> (du, ddelta (batch, dim, L), dA (dim, N), dB, dC (batch, G, N, L), dD, dz, d(delta_bias)), the
    optional ones None when their input is."""
    inputs = _Inputs(u, delta, A, B, C, D, z, delta_bias, softplus, mask, {"dy": dy, "dlast": dlast})
    fn = kernel("sscan_bwd", u.dtype)
    dy = channels_contiguous(dy, 1)
    batch, dim, length = u.shape
    groups, n_state = B.shape[1], A.shape[1]
    du, ddelta = u.new_empty(batch, length, dim), u.new_empty(batch, length, dim)
    dz = None if z is None else u.new_empty(batch, length, dim)
    dB, dC = u.new_zeros(batch, length, groups, n_state), u.new_zeros(batch, length, groups, n_state)
    dlast = None if dlast is None else dlast.transpose(1, 2).contiguous()  # (batch, N, dim)
    parts = slices(batch)
    # batch sums: one buffer per thread, added up below
    dA, dD, dbias = (u.new_zeros(len(parts), *shape) for shape in ((n_state, dim), (dim,), (dim,)))

    def call(i: int, b0: int, b1: int) -> None:
        fn(*inputs.args(b0, b1, chunk), ptr(ckpt, b0), ptr(dy, b0), *strides_bt(dy, 2), ptr(dlast, b0),
           ptr(du, b0), ptr(ddelta, b0), ptr(dz, b0), ptr(dB, b0), ptr(dC, b0), ptr(dA[i]),
           ptr(dD[i]) if D is not None else None, ptr(dbias[i]) if delta_bias is not None else None)  # fmt: skip

    run_slices(call, parts)
    return (
        du.transpose(1, 2),
        ddelta.transpose(1, 2),
        dA.sum(0).t(),
        dB.permute(0, 2, 3, 1),
        dC.permute(0, 2, 3, 1),
        None if D is None else dD.sum(0),
        None if dz is None else dz.transpose(1, 2),
        None if delta_bias is None else dbias.sum(0),
    )
