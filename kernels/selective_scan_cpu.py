"""Fused CPU selective scan: the compiled C loops of ``kernels/csrc/selective_scan_cpu.c``.

Built by the project's own install (``setup.py``) and loaded by :mod:`kernels.cpu_lib`. :mod:`ssm.chunked_scan`
uses it as the core of its autograd Function when :func:`kernels.cpu_lib.available` (float32 and float64 CPU
tensors), and its torch core otherwise. It computes the recurrence, the D skip and the z gate; the caller
applies the step's bias, softplus and padding mask. Shapes follow :func:`ssm.selective_scan`; channels
are read and written channels-last (Mamba's layout), so Mamba's transposed views pass without copies:

==============================  ===========================================================
``u, dt, z, y, dy``             (batch, dim, L), any layout (copied if channels are not contiguous)
``A``                           (dim, N)
``B, C``                        (batch, G, N, L), any strides (a time-invariant expand is not copied)
``D``                           (dim,) or None
``ckpt``                        (batch, n_chunks + 1, N, dim): chunk-entry states, then the last state
``dlast``                       (batch, dim, N) or None
==============================  ===========================================================
"""

from __future__ import annotations

import torch

from kernels.cpu_lib import check, kernel, ptr, run_slices, slices, strides_bt

__all__ = ["scan_backward", "scan_forward"]


def _channels_last(t: torch.Tensor | None) -> torch.Tensor | None:
    """(batch, dim, L) with contiguous channels (stride 1 along dim): a view when it already is."""
    if t is None or t.stride(1) == 1 or t.shape[1] == 1:
        return t
    return t.transpose(1, 2).contiguous().transpose(1, 2)


def _inputs(b0: int, u, dt, z, A_t, B, C, D) -> tuple:
    """The kernels' common input arguments for the batch slice starting at ``b0``."""
    return (
        ptr(u, b0), *strides_bt(u, 2), ptr(dt, b0), *strides_bt(dt, 2), ptr(z, b0), *strides_bt(z, 2),
        ptr(A_t), ptr(B, b0), *B.stride(), ptr(C, b0), *C.stride(), ptr(D),
    )  # fmt: skip


def scan_forward(u, dt, A, B, C, D, z, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (y (batch, dim, L), a channels-last view; ckpt (batch, n_chunks + 1, N, dim))."""
    check({"u": u, "dt": dt, "A": A, "B": B, "C": C, "D": D, "z": z}, u.dtype)
    fn = kernel("sscan_fwd", u.dtype)
    u, dt, z = _channels_last(u), _channels_last(dt), _channels_last(z)
    A_t, D = A.t().contiguous(), None if D is None else D.contiguous()  # A_t: (N, dim)
    batch, dim, length = u.shape
    groups, n_state = B.shape[1], A.shape[1]
    y = u.new_empty(batch, length, dim)
    ckpt = u.new_empty(batch, -(-length // chunk) + 1, n_state, dim)

    def call(i: int, b0: int, b1: int) -> None:
        fn(b1 - b0, length, dim, n_state, groups, chunk, *_inputs(b0, u, dt, z, A_t, B, C, D),
           ptr(y, b0), ptr(ckpt, b0))  # fmt: skip

    run_slices(call, slices(batch))
    return y.transpose(1, 2), ckpt


def scan_backward(u, dt, A, B, C, D, z, ckpt, dy, dlast, chunk: int) -> tuple[torch.Tensor | None, ...]:
    """-> (du, ddt (batch, dim, L), dA (dim, N), dB, dC (batch, G, N, L), dD (dim,) or None, dz or None)."""
    check({"u": u, "dt": dt, "A": A, "B": B, "C": C, "D": D, "z": z, "dy": dy, "dlast": dlast}, u.dtype)
    fn = kernel("sscan_bwd", u.dtype)
    u, dt, z, dy = _channels_last(u), _channels_last(dt), _channels_last(z), _channels_last(dy)
    A_t, D = A.t().contiguous(), None if D is None else D.contiguous()
    batch, dim, length = u.shape
    groups, n_state = B.shape[1], A.shape[1]
    du, ddt = u.new_empty(batch, length, dim), u.new_empty(batch, length, dim)
    dz = None if z is None else u.new_empty(batch, length, dim)
    dB, dC = u.new_zeros(batch, length, groups, n_state), u.new_zeros(batch, length, groups, n_state)
    dlast = None if dlast is None else dlast.transpose(1, 2).contiguous()  # (batch, N, dim)
    parts = slices(batch)
    dA, dD = u.new_zeros(len(parts), n_state, dim), u.new_zeros(len(parts), dim)  # per thread, summed below

    def call(i: int, b0: int, b1: int) -> None:
        fn(b1 - b0, length, dim, n_state, groups, chunk, *_inputs(b0, u, dt, z, A_t, B, C, D),
           ptr(ckpt, b0), ptr(dy, b0), *strides_bt(dy, 2), ptr(dlast, b0), ptr(du, b0), ptr(ddt, b0),
           ptr(dz, b0), ptr(dB, b0), ptr(dC, b0), ptr(dA[i]), ptr(dD[i]))  # fmt: skip

    run_slices(call, parts)
    return (
        du.transpose(1, 2),
        ddt.transpose(1, 2),
        dA.sum(0).t(),
        dB.permute(0, 2, 3, 1),
        dC.permute(0, 2, 3, 1),
        None if D is None else dD.sum(0),
        None if dz is None else dz.transpose(1, 2),
    )
