"""CPU selective scan whose backward recomputes states chunk by chunk (the ``chunked`` backend).

Per batch element b, channel d and state index n (bias, softplus, mask, D and the z gate around it)::

    h_t = a_t * h_{t-1} + w_t,   a_t = exp(dt_t[d] * A[d, n]),   w_t = dt_t[d] * u_t[d] * B_t[g(d), n]
    y_t[d] = sum_n C_t[g(d), n] * h_t[d, n]

Memory: autograd through a step loop keeps several (batch, dim, d_state) tensors per step. Here one
``torch.autograd.Function`` keeps only its inputs and the state entering each chunk of ``chunk`` steps.
The backward visits the chunks last to first, recomputes the chunk's decays and states from its
checkpoint, runs the adjoint ``g_t = dy_t C_t + a_{t+1} g_{t+1}`` backwards through it, and turns
(g, states) into every input gradient. This is the schedule of the fused CUDA kernel of state-spaces/mamba.

Two cores run that schedule:

- **compiled** (the default when the project's install built ``kernels._cpu_kernels``): one C call per
  batch slice and direction does everything, the step's bias/softplus and the mask, the recurrence, D and
  the gate (:mod:`kernels.selective_scan_cpu`), channels-last, checkpoints every ``COMPILED_CHUNK`` steps;
- **torch** (fallback: no compiler at install time, or ``COMPILED_CORE = False``): torch ops on tiles of
  (chunk steps x a slice of the batch) whose (T, bt, dim, d_state) buffers stay in the CPU's L2 cache
  (``TILE_ELEMENTS``). Per tile, everything is a handful of vectorised ops; the only per-step op is one
  in-place ``addcmul_`` (forward: h_t += a_t h_{t-1} on top of the precomputed w_t; backward:
  g_t += a_{t+1} g_{t+1}). Inputs are copied once to time-major layout so that every tile is a slice.

Accumulation is in the inputs' dtype, which the caller makes float32 (float64 for float64 inputs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels import cpu_lib
from kernels import selective_scan_cpu as cpu_core

__all__ = [
    "COMPILED_CORE", "STEP_ELEMENTS", "TILE_ELEMENTS", "chunked_scan", "effective_delta", "tile_shape", "use_compiled_core",
]

# the compiled C core (kernels/selective_scan_cpu.py) runs the recurrence when it was built; False forces
# the torch core (tests compare both with the reference)
COMPILED_CORE = True
# default steps per chunk of the compiled core (checkpoint interval and recompute window)
COMPILED_CHUNK = 16

# one tile buffer (T * bt * dim * d_state values): 2^17 fp32 = 512 KiB, so the 4-5 buffers of the backward
# stay in a per-core L2 cache; one step of a tile (bt * dim * d_state) is at least 2^14 values where the
# batch allows, so the per-step op is not dominated by its dispatch cost
TILE_ELEMENTS = 1 << 17
STEP_ELEMENTS = 1 << 14


def tile_shape(batch: int, dim: int, d_state: int, length: int, chunk: int | None = None) -> tuple[int, int]:
    """(steps per chunk T, batch elements per tile bt) for a scan of this size (``chunk`` forces T)."""
    width = max(1, dim * d_state)
    bt = max(1, min(batch, STEP_ELEMENTS // width))
    T = chunk or max(1, TILE_ELEMENTS // (bt * width))
    return max(1, min(length, T)), bt


class _Workspace:
    """Time-major inputs and the per-tile buffers of one forward or backward call.

    Layout puts the state index before the channels, so that sums over it add whole rows of channels:
    time-major u, dt, dt*u (L, batch, G, 1, per); B, C (L, batch, G, N, 1); A (G, N, per).
    Buffers a (decays), h (states) and tmp, each (T, bt, G, N, per).
    """

    def __init__(self, u, dt, A, B, C, T: int, bt: int):
        batch, dim, length = u.shape
        self.G, self.N = B.shape[1], B.shape[2]
        self.per = dim // self.G
        self.u = u.permute(2, 0, 1).contiguous().view(length, batch, self.G, 1, self.per)
        self.dt = dt.permute(2, 0, 1).contiguous().view(length, batch, self.G, 1, self.per)
        self.B = B.permute(3, 0, 1, 2).contiguous().unsqueeze(-1)
        self.C = C.permute(3, 0, 1, 2).contiguous().unsqueeze(-1)
        self.dtu = self.dt * self.u  # input weight of every step, (L, batch, G, 1, per)
        self.A = A.view(self.G, self.per, self.N).transpose(-1, -2).contiguous()
        self.T, self.bt = T, bt
        self.a_buf = u.new_empty(T, bt, self.G, self.N, self.per)
        self.h_buf = torch.empty_like(self.a_buf)
        self.tmp_buf = torch.empty_like(self.a_buf)

    def tiles(self, reverse: bool = False):
        """(c, t0, t1, b0, b1) over batch slices and chunks (last to first if ``reverse``)."""
        length, batch = self.u.shape[0], self.u.shape[1]
        n_chunks = -(-length // self.T)
        chunks = range(n_chunks - 1, -1, -1) if reverse else range(n_chunks)
        for b0 in range(0, batch, self.bt):
            for c in chunks:
                yield c, c * self.T, min(length, (c + 1) * self.T), b0, min(batch, b0 + self.bt)

    def buffers(self, T: int, bt: int):
        return self.a_buf[:T, :bt], self.h_buf[:T, :bt], self.tmp_buf[:T, :bt]

    def states(self, t0: int, t1: int, b0: int, b1: int, h0: torch.Tensor):
        """Decays a and states h (T, bt, G, N, per) of steps t0..t1-1 from the entering state h0."""
        sl = (slice(t0, t1), slice(b0, b1))
        a, h, _ = self.buffers(t1 - t0, b1 - b0)
        torch.mul(self.dt[sl], self.A, out=a)
        a.exp_()
        torch.mul(self.dtu[sl], self.B[sl], out=h)  # inputs w_t; the loop adds the carried state
        hs, As = h.unbind(0), a.unbind(0)
        hs[0].addcmul_(As[0], h0)
        for t in range(1, len(hs)):
            hs[t].addcmul_(As[t], hs[t - 1])
        return a, h


def _scan_forward(ws: _Workspace, dtype_like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Core forward over the workspace's tiles -> (y time-major (L, batch, G, 1, per), checkpoints)."""
    length, batch = ws.u.shape[0], ws.u.shape[1]
    n_chunks = -(-length // ws.T)
    y = dtype_like.new_empty(length, batch, ws.G, 1, ws.per)
    ckpt = dtype_like.new_empty(n_chunks + 1, batch, ws.G, ws.N, ws.per)  # [c] enters chunk c, [-1] = last
    ckpt[0] = 0
    for c, t0, t1, b0, b1 in ws.tiles():
        _, h = ws.states(t0, t1, b0, b1, ckpt[c, b0:b1])
        tmp = ws.buffers(t1 - t0, b1 - b0)[2]
        # y_t = h_t . C_t over the state index
        torch.sum(torch.mul(h, ws.C[t0:t1, b0:b1], out=tmp), dim=-2, keepdim=True, out=y[t0:t1, b0:b1])
        ckpt[c + 1, b0:b1] = h[-1]
    return y, ckpt


def _scan_backward(ws: _Workspace, ckpt: torch.Tensor, dY: torch.Tensor, dlast: torch.Tensor | None):
    """Core backward: dY (L, batch, G, 1, per) -> time-major du, ddt, dB, dC and dA (G, N, per)."""
    batch = ws.u.shape[1]
    G, per, N = ws.G, ws.per, ws.N
    g_buf = torch.empty_like(ws.a_buf)
    du, ddt = torch.empty_like(ws.u), torch.empty_like(ws.u)
    dB, dC = torch.empty_like(ws.B), torch.empty_like(ws.C)
    dA = torch.zeros_like(ws.A)
    # carry: the adjoint flowing into the last step of the current chunk from the future
    carry = torch.zeros_like(ckpt[0])
    if dlast is not None:
        carry.copy_(dlast.reshape(batch, G, per, N).transpose(-1, -2))
    for c, t0, t1, b0, b1 in ws.tiles(reverse=True):
        T, sl = t1 - t0, (slice(t0, t1), slice(b0, b1))
        h0 = ckpt[c, b0:b1]
        a, h = ws.states(t0, t1, b0, b1, h0)
        tmp = ws.buffers(T, b1 - b0)[2]
        dtc, uc, Bc, dyc = ws.dt[sl], ws.u[sl], ws.B[sl], dY[sl]
        # 1. adjoint g_t = dy_t C_t + a_{t+1} g_{t+1}, backwards through the chunk
        g = g_buf[:T, : b1 - b0]
        torch.mul(dyc, ws.C[sl], out=g)
        g[T - 1] += carry[b0:b1]
        gs, As = g.unbind(0), a.unbind(0)
        for t in range(T - 2, -1, -1):
            gs[t].addcmul_(As[t + 1], gs[t + 1])
        torch.mul(As[0], gs[0], out=carry[b0:b1])
        # 2. C (y_t = h_t . C_t) and B (w_t = dt u B), summed over the group's channels
        torch.sum(torch.mul(h, dyc, out=tmp), dim=-1, keepdim=True, out=dC[sl])
        torch.sum(torch.mul(g, ws.dtu[sl], out=tmp), dim=-1, keepdim=True, out=dB[sl])
        # 3. through w_t: s_t = g_t . B_t over the state index
        s = torch.mul(g, Bc, out=tmp).sum(-2, keepdim=True)
        torch.mul(dtc, s, out=du[sl])
        # 4. through the log decay dt*A: q_t = g_t * a_t * h_{t-1} (h_{-1} = the chunk's checkpoint)
        q = a.mul_(g)
        q[1:].mul_(h[:-1])
        q[0].mul_(h0)
        dA += torch.mul(q, dtc, out=tmp).sum((0, 1))
        torch.add(uc * s, torch.mul(q, ws.A, out=tmp).sum(-2, keepdim=True), out=ddt[sl])
    return du, ddt, dB, dC, dA


def _batch_major(t: torch.Tensor, batch: int, dim: int) -> torch.Tensor:
    """Time-major (L, batch, G, 1, per) -> a (batch, dim, L) view."""
    return t.view(t.shape[0], batch, dim).permute(1, 2, 0)


def effective_delta(
    delta: torch.Tensor,
    delta_bias: torch.Tensor | None,
    delta_softplus: bool,
    mask: torch.Tensor | None,
    dtype: torch.dtype,
) -> torch.Tensor:
    """delta (batch, dim, length) -> softplus(delta + bias) in ``dtype``, 0 at padded steps."""
    delta = delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)  # threshold 20: identity above, as in mamba_ssm
    if mask is not None:
        # delta = 0 at a padded step: exp(0 * A) = 1 keeps the state and delta * B * u = 0 adds nothing
        delta = torch.where(mask[:, None, :], delta, torch.zeros((), dtype=dtype, device=delta.device))
    return delta


class _ChunkedScanFn(torch.autograd.Function):
    """Selective scan with the bias, softplus, mask, D skip and z gate fused around the core recurrence.

    forward(u, delta, A, B, C, D, z, delta_bias, mask, softplus, T, bt) -> (y (batch, dim, L), last state
    (batch, dim, N)). Tensors share one float dtype (mask: bool (batch, L) or None). Saved for backward:
    u, delta, z, the pre-gate output, B, C and the state entering each chunk, nothing per step.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, mask, softplus, T, bt, compiled):
        ctx.cfg = (softplus, T, bt, compiled)
        ctx.set_materialize_grads(False)
        if compiled:  # one C call: step, mask, recurrence, D and gate (y_pre is recomputed in backward)
            y, ckpt = cpu_core.scan_forward(u, delta, A, B, C, D, z, delta_bias, softplus, mask, T)
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, mask, None, ckpt)
            return y, ckpt[:, -1].transpose(1, 2).clone()  # (a copy: not a view of the saved checkpoints)
        dt = effective_delta(delta, delta_bias, softplus, mask, u.dtype)
        m = None if mask is None else mask[:, None, :]
        u_in = u if m is None else u.masked_fill(~m, 0)  # padded steps: u = 0 adds nothing (and dt = 0)
        y, ckpt, last = _torch_core_forward(u_in, dt, A, B, C, T, bt)
        del dt
        if D is not None:
            y.addcmul_(u_in, D[:, None])
        y_pre = None
        if z is not None:
            y_pre, y = y, y * F.silu(z)
        if m is not None:
            y.masked_fill_(~m, 0)  # (when z is None y_pre is not saved, so this may overwrite it)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, mask, y_pre, ckpt)
        return y, last

    @staticmethod
    def backward(ctx, dy, dlast):
        u, delta, A, B, C, D, z, delta_bias, mask, y_pre, ckpt = ctx.saved_tensors
        softplus, T, bt, compiled = ctx.cfg
        batch, dim, length = u.shape
        if dy is None:
            dy = u.new_zeros(batch, dim, length)
        if compiled:
            du, ddt, dA, dB, dC, dD, dz, dbias = cpu_core.scan_backward(
                u, delta, A, B, C, D, z, delta_bias, softplus, mask, ckpt, dy, dlast, T
            )
            return du, ddt, dA, dB, dC, dD, dz, dbias, None, None, None, None, None
        m = None if mask is None else mask[:, None, :]
        dt = effective_delta(delta, delta_bias, softplus, mask, u.dtype)
        if m is not None:
            dy = dy.masked_fill(~m, 0)  # padded outputs are constant 0
        u_in = u if m is None else u.masked_fill(~m, 0)
        dz = None
        if z is not None:  # y = y_pre * z * sigmoid(z)
            sig = torch.sigmoid(z)
            dz = (dy * y_pre).mul_(sig).mul_(torch.addcmul(torch.ones_like(z), z, 1 - sig))
            dy = (dy * z).mul_(sig)
            del sig
        du, ddt, dA, dB, dC = _torch_core_backward(u_in, dt, A, B, C, ckpt, dy, dlast, T, bt)
        del dt
        dD = None
        if D is not None:
            dD = (dy * u_in).sum((0, 2))
            du.addcmul_(dy, D[:, None])
        if m is not None:
            du.masked_fill_(~m, 0)
            ddt.masked_fill_(~m, 0)
        if softplus:
            # softplus' = sigmoid (F.softplus is the identity above its threshold 20: derivative 1)
            v = delta if delta_bias is None else delta + delta_bias[:, None]
            slope = torch.sigmoid(v).masked_fill_(v > 20, 1)
            ddt.mul_(slope)
        dbias = ddt.sum((0, 2)) if delta_bias is not None else None
        return du, ddt, dA, dB, dC, dD, dz, dbias, None, None, None, None, None


def _torch_core_forward(u, dt, A, B, C, T: int, bt: int):
    """Torch core -> (y (batch, dim, L) writable, checkpoints (n_chunks + 1, batch, G, N, per), last state
    (batch, dim, N))."""
    batch, dim, _ = u.shape
    ws = _Workspace(u, dt, A, B, C, T, bt)
    y, ckpt = _scan_forward(ws, u)
    N = ws.N
    del ws  # the time-major copies
    last = ckpt[-1].transpose(-1, -2).reshape(batch, dim, N)
    return _batch_major(y, batch, dim), ckpt, last  # y: a view of the time-major result


def _torch_core_backward(u, dt, A, B, C, ckpt, dy, dlast, T: int, bt: int):
    """Torch core backward -> du, ddt (batch, dim, L) writable, dA (dim, N), dB, dC (batch, G, N, L)."""
    batch, dim, length = u.shape
    ws = _Workspace(u, dt, A, B, C, T, bt)
    G, N = ws.G, ws.N
    dY = dy.permute(2, 0, 1).contiguous().view_as(ws.u)
    du, ddt, dB, dC, dA = _scan_backward(ws, ckpt, dY, dlast)
    del ws, dY
    return (
        _batch_major(du, batch, dim),
        _batch_major(ddt, batch, dim),
        dA.transpose(-1, -2).reshape(dim, N),
        dB.view(length, batch, G, N).permute(1, 2, 3, 0),
        dC.view(length, batch, G, N).permute(1, 2, 3, 0),
    )


def use_compiled_core(u: torch.Tensor) -> bool:
    """Whether the chunked backend runs the compiled C core for inputs like ``u`` (else the torch core)."""
    return COMPILED_CORE and cpu_lib.handles(u)


def chunked_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    mask: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Selective scan with chunk-recompute backward (semantics of :func:`ssm.selective_scan`).

    Args:
        u, delta, z: (batch, dim, L). A: (dim, N). B, C: (batch, G, N, L) with G dividing dim.
        D, delta_bias: (dim,). mask: (batch, L) bool or None. All float tensors in one dtype (the compute
        dtype: float32, or float64).
        chunk_size: steps per chunk (checkpoint interval and recompute window); None = :func:`tile_shape`.

    Returns:
        (y (batch, dim, L), last state (batch, dim, N)), differentiable in every float input.
    """
    batch, dim, length = u.shape
    if length == 0:  # nothing to scan; keep the outputs connected to the inputs for autograd
        anchor = sum(0 * t.sum() for t in (u, delta, A, B, C, D, z, delta_bias) if t is not None)
        return u[..., :0] * 1, u.new_zeros(batch, dim, A.shape[1]) + anchor
    compiled = use_compiled_core(u)
    if compiled:  # per-channel recompute buffers are chunk x N values: a long chunk still fits in L1
        T, bt = min(length, chunk_size or COMPILED_CHUNK), batch
    else:
        T, bt = tile_shape(batch, dim, A.shape[1], length, chunk_size)
    return _ChunkedScanFn.apply(
        u, delta, A, B, C, D, z, delta_bias, mask, bool(delta_softplus), T, bt, compiled
    )
