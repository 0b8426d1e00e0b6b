"""Triton selective scan (Mamba S6): forward and backward kernels and their ``torch.autograd.Function``.

Semantics and shapes are those of :func:`ssm.selective_scan` (this module is what its ``triton`` backend
calls); per channel d and state index n::

    dt_t = softplus(delta_t + bias)  (optional), 0 at padded steps
    x_t  = exp(dt_t A) x_{t-1} + dt_t u_t B_t,    y_t = (<x_t, C_t> + D u_t) * silu(z_t)

Design:

* **Forward** (``_fwd_kernel``): one program per (batch, block of ``BLOCK_D`` channels). The state tile
  (BLOCK_D, BLOCK_N) lives in registers (``BLOCK_N`` = next power of two of d_state, extra lanes masked)
  and the program walks the sequence; the expanded (batch, dim, length, d_state) tensor never exists in
  memory. Every ``CHUNK`` steps the state entering the chunk is written to a checkpoint buffer
  (batch, n_chunks, dim, d_state).
* **Backward** (``_bwd_kernel``): same grid, chunks visited last to first. For a chunk, the states are
  recomputed from its checkpoint into a small per-program scratch buffer (CHUNK, BLOCK_D, BLOCK_N), then
  the adjoint ``g_t = dL/dx_t = dy_t C_t + exp(dt_{t+1} A) g_{t+1}`` runs backwards through the chunk,
  producing du, ddelta (through softplus and the bias), dz per step, dB/dC per step (summed over the
  channels of the block), and dA, dD, d(delta_bias) accumulated in registers.
* **B/C gradients** of a group are sums over its channels: when every channel block lies inside one group
  (one group, or channels-per-group a multiple of BLOCK_D) the block's sum is stored to a per-block partial
  buffer (batch, n_blocks, d_state, length) and the blocks of a group are summed afterwards
  (deterministic); otherwise the kernel uses atomic adds into (batch, groups, d_state, length).
  dA, dD and d(delta_bias) are written per batch element and summed over the batch afterwards.

Everything accumulates in float32; fp16/bf16 inputs are read as such and outputs/gradients are written in
the input dtype (fp16/bf16 need a GPU: Triton's CPU interpreter works through numpy). Under
``TRITON_INTERPRET=1`` (set before this module is imported) the kernels also run on CPU tensors, slowly.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["DEFAULT_BLOCK_D", "DEFAULT_CHUNK", "selective_scan_triton"]

DEFAULT_CHUNK = 64  # steps between state checkpoints (also the backward's recompute window)
DEFAULT_BLOCK_D = 32  # channels per program


def _interpreting() -> bool:
    return bool(triton.knobs.runtime.interpret)


@triton.jit
def _softplus(v):
    # log1p(exp(v)) without a log1p primitive: log(w) * e / (w - 1) with w = 1 + e is accurate even when
    # e is below the float32 epsilon (Goldberg); identity above 20 as in torch / mamba_ssm
    e = tl.exp(tl.minimum(v, 20.0))
    w = 1.0 + e
    lp = tl.where(w == 1.0, e, tl.log(w) * (e / (w - 1.0)))
    return tl.where(v > 20.0, v, lp)


@triton.jit
def _step_inputs(
    u_ptr,
    delta_ptr,
    bias,
    mask_ptr,
    row,
    t,
    b,
    L,
    mask_d,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    HAS_MASK: tl.constexpr,
):
    """u_t, dt_t (after bias/softplus/mask), the pre-softplus value and the step's mask, each (BLOCK_D,)."""
    u = tl.load(u_ptr + row + t, mask=mask_d, other=0.0).to(tl.float32)
    v = tl.load(delta_ptr + row + t, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_BIAS:
        v = v + bias
    if SOFTPLUS:
        dt = _softplus(v)
    else:
        dt = v
    real = mask_d
    if HAS_MASK:
        # padded step: dt = 0 keeps the state (exp(0) = 1) and u = 0 adds nothing
        m = tl.load(mask_ptr + b * L + t) != 0
        real = real & m
    dt = tl.where(real, dt, 0.0)
    u = tl.where(real, u, 0.0)
    return u, dt, v, real


@triton.jit
def _fwd_kernel(
    u_ptr,
    delta_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    D_ptr,
    z_ptr,
    bias_ptr,
    mask_ptr,
    y_ptr,
    last_ptr,
    ckpt_ptr,
    dim,
    L,
    d_state,
    per_B,
    per_C,
    G_B,
    G_C,
    n_chunks,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    HAS_MASK: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    CHUNK: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d = offs_d < dim
    mask_dn = mask_d[:, None] & (offs_n < d_state)[None, :]
    A = tl.load(A_ptr + offs_d[:, None] * d_state + offs_n[None, :], mask=mask_dn, other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    else:
        bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    row = (b * dim + offs_d) * L  # start of each channel's row in u/delta/z/y
    # B/C of channel d: group d // per; the (BLOCK_D, BLOCK_N) gather rows at time 0
    bc_B = ((b * G_B + offs_d[:, None] // per_B) * d_state + offs_n[None, :]) * L
    bc_C = ((b * G_C + offs_d[:, None] // per_C) * d_state + offs_n[None, :]) * L
    ck_off = offs_d[:, None] * d_state + offs_n[None, :]
    x = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    for c in range(n_chunks):
        # checkpoint: the state entering chunk c
        tl.store(ckpt_ptr + (b * n_chunks + c) * dim * d_state + ck_off, x, mask=mask_dn)
        t0 = c * CHUNK
        for t in range(t0, tl.minimum(t0 + CHUNK, L)):
            u, dt, _v, real = _step_inputs(
                u_ptr, delta_ptr, bias, mask_ptr, row, t, b, L, mask_d, HAS_BIAS, SOFTPLUS, HAS_MASK
            )
            Bt = tl.load(B_ptr + bc_B + t, mask=mask_dn, other=0.0).to(tl.float32)
            Ct = tl.load(C_ptr + bc_C + t, mask=mask_dn, other=0.0).to(tl.float32)
            x = tl.exp(dt[:, None] * A) * x + (dt * u)[:, None] * Bt
            y = tl.sum(x * Ct, axis=1)
            if HAS_D:
                y += Dv * u
            if HAS_Z:
                zt = tl.load(z_ptr + row + t, mask=mask_d, other=0.0).to(tl.float32)
                y = y * zt * tl.sigmoid(zt)
            y = tl.where(real, y, 0.0)
            tl.store(y_ptr + row + t, y, mask=mask_d)
    tl.store(last_ptr + b * dim * d_state + ck_off, x, mask=mask_dn)


@triton.jit
def _bwd_kernel(
    u_ptr,
    delta_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    D_ptr,
    z_ptr,
    bias_ptr,
    mask_ptr,
    dout_ptr,
    dlast_ptr,
    ckpt_ptr,
    scratch_ptr,
    du_ptr,
    ddelta_ptr,
    dz_ptr,
    dB_ptr,
    dC_ptr,
    dA_ptr,
    dD_ptr,
    dbias_ptr,
    dim,
    L,
    d_state,
    per_B,
    per_C,
    G_B,
    G_C,
    n_chunks,
    n_blocks,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    HAS_MASK: tl.constexpr,
    HAS_DLAST: tl.constexpr,
    ATOMIC_B: tl.constexpr,
    ATOMIC_C: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    CHUNK: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d = offs_d < dim
    mask_n = offs_n < d_state
    mask_dn = mask_d[:, None] & mask_n[None, :]
    A = tl.load(A_ptr + offs_d[:, None] * d_state + offs_n[None, :], mask=mask_dn, other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    else:
        bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    row = (b * dim + offs_d) * L
    bc_B = ((b * G_B + offs_d[:, None] // per_B) * d_state + offs_n[None, :]) * L
    bc_C = ((b * G_C + offs_d[:, None] // per_C) * d_state + offs_n[None, :]) * L
    # partial-sum rows of this block (non-atomic path): (batch, n_blocks, d_state, L)
    part = ((b * n_blocks + pid_d) * d_state + offs_n) * L
    ck_off = offs_d[:, None] * d_state + offs_n[None, :]
    # this program's scratch: CHUNK tiles of (BLOCK_D, BLOCK_N), no masking needed
    tile = tl.arange(0, BLOCK_D)[:, None] * BLOCK_N + offs_n[None, :]
    scratch = scratch_ptr + (b * n_blocks + pid_d) * CHUNK * BLOCK_D * BLOCK_N + tile

    # carry = exp(dt_{t+1} A) * g_{t+1}: the adjoint flowing into step t from the future
    if HAS_DLAST:
        carry = tl.load(dlast_ptr + b * dim * d_state + ck_off, mask=mask_dn, other=0.0).to(tl.float32)
    else:
        carry = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    dA_acc = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    dD_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    dbias_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    for cc in range(n_chunks):
        c = n_chunks - 1 - cc
        t0 = c * CHUNK
        t1 = tl.minimum(t0 + CHUNK, L)
        x0 = tl.load(ckpt_ptr + (b * n_chunks + c) * dim * d_state + ck_off, mask=mask_dn, other=0.0)
        # 1. recompute the chunk's states from its checkpoint into the scratch buffer
        x = x0
        for t in range(t0, t1):
            u, dt, v, real = _step_inputs(
                u_ptr, delta_ptr, bias, mask_ptr, row, t, b, L, mask_d, HAS_BIAS, SOFTPLUS, HAS_MASK
            )
            Bt = tl.load(B_ptr + bc_B + t, mask=mask_dn, other=0.0).to(tl.float32)
            x = tl.exp(dt[:, None] * A) * x + (dt * u)[:, None] * Bt
            tl.store(scratch + (t - t0) * BLOCK_D * BLOCK_N, x)
        tl.debug_barrier()
        # 2. reverse pass through the chunk
        for i in range(t1 - t0):
            t = t1 - 1 - i
            u, dt, v, real = _step_inputs(
                u_ptr, delta_ptr, bias, mask_ptr, row, t, b, L, mask_d, HAS_BIAS, SOFTPLUS, HAS_MASK
            )
            Bt = tl.load(B_ptr + bc_B + t, mask=mask_dn, other=0.0).to(tl.float32)
            Ct = tl.load(C_ptr + bc_C + t, mask=mask_dn, other=0.0).to(tl.float32)
            x_t = tl.load(scratch + (t - t0) * BLOCK_D * BLOCK_N)
            x_prev = tl.load(scratch + tl.maximum(t - t0 - 1, 0) * BLOCK_D * BLOCK_N)
            x_prev = tl.where(t > t0, x_prev, x0)
            dout = tl.load(dout_ptr + row + t, mask=mask_d, other=0.0).to(tl.float32)
            dout = tl.where(real, dout, 0.0)  # padded outputs are constant 0
            # output: y = (<x, C> + D u) * silu(z)
            if HAS_Z:
                zt = tl.load(z_ptr + row + t, mask=mask_d, other=0.0).to(tl.float32)
                sig = tl.sigmoid(zt)
                y_pre = tl.sum(x_t * Ct, axis=1)
                if HAS_D:
                    y_pre += Dv * u
                dz = dout * y_pre * sig * (1.0 + zt * (1.0 - sig))
                tl.store(dz_ptr + row + t, dz, mask=mask_d)
                dy = dout * zt * sig
            else:
                dy = dout
            du = tl.zeros([BLOCK_D], dtype=tl.float32)
            if HAS_D:
                du += dy * Dv
                dD_acc += dy * u
            dC = dy[:, None] * x_t  # (BLOCK_D, BLOCK_N)
            g = dy[:, None] * Ct + carry  # adjoint of x_t
            decay = tl.exp(dt[:, None] * A)
            # x_t = decay * x_prev + dt u B
            dB = g * (dt * u)[:, None]
            du += dt * tl.sum(g * Bt, axis=1)
            da = g * decay * x_prev  # gradient of the log decay dt * A
            ddt = u * tl.sum(g * Bt, axis=1) + tl.sum(da * A, axis=1)
            dA_acc += da * dt[:, None]
            carry = decay * g
            # through the mask, softplus and bias to delta
            ddt = tl.where(real, ddt, 0.0)
            if SOFTPLUS:
                ddv = tl.where(v > 20.0, ddt, ddt * tl.sigmoid(v))
            else:
                ddv = ddt
            dbias_acc += ddv
            tl.store(ddelta_ptr + row + t, ddv, mask=mask_d)
            tl.store(du_ptr + row + t, tl.where(real, du, 0.0), mask=mask_d)
            # B/C gradients, summed over this block's channels of each group
            dB = tl.where(mask_dn, dB, 0.0)
            dC = tl.where(mask_dn, dC, 0.0)
            if ATOMIC_B:
                tl.atomic_add(dB_ptr + bc_B + t, dB, mask=mask_dn)
            else:
                tl.store(dB_ptr + part + t, tl.sum(dB, axis=0), mask=mask_n)
            if ATOMIC_C:
                tl.atomic_add(dC_ptr + bc_C + t, dC, mask=mask_dn)
            else:
                tl.store(dC_ptr + part + t, tl.sum(dC, axis=0), mask=mask_n)
        tl.debug_barrier()  # the next chunk overwrites the scratch buffer
    tl.store(dA_ptr + b * dim * d_state + ck_off, dA_acc, mask=mask_dn)
    tl.store(dD_ptr + b * dim + offs_d, dD_acc, mask=mask_d)
    tl.store(dbias_ptr + b * dim + offs_d, dbias_acc, mask=mask_d)


def _launch_config(dim: int, d_state: int, block_d: int | None) -> tuple[int, int]:
    block_n = triton.next_power_of_2(max(1, d_state))
    if block_d is None:
        block_d = min(DEFAULT_BLOCK_D, triton.next_power_of_2(dim))
    return block_d, block_n


class _SelectiveScanFn(torch.autograd.Function):
    """autograd wrapper; inputs are contiguous, B/C grouped (batch, G, N, L), mask uint8 or None."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, mask, softplus, chunk, block_d):
        batch, dim, L = u.shape
        G_B, G_C, d_state = B.shape[1], C.shape[1], A.shape[1]
        block_d, block_n = _launch_config(dim, d_state, block_d)
        n_chunks = max(1, triton.cdiv(L, chunk))
        y = torch.empty_like(u)
        last = torch.empty(batch, dim, d_state, device=u.device, dtype=torch.float32)
        ckpt = torch.empty(batch, n_chunks, dim, d_state, device=u.device, dtype=torch.float32)
        grid = (batch, triton.cdiv(dim, block_d))
        dummy = u  # placeholder pointer for absent optional inputs (never read: the flag is off)
        _fwd_kernel[grid](
            u,
            delta,
            A,
            B,
            C,
            D if D is not None else dummy,
            z if z is not None else dummy,
            delta_bias if delta_bias is not None else dummy,
            mask if mask is not None else dummy,
            y,
            last,
            ckpt,
            dim,
            L,
            d_state,
            dim // G_B,
            dim // G_C,
            G_B,
            G_C,
            n_chunks,
            HAS_D=D is not None,
            HAS_Z=z is not None,
            HAS_BIAS=delta_bias is not None,
            SOFTPLUS=bool(softplus),
            HAS_MASK=mask is not None,
            BLOCK_D=block_d,
            BLOCK_N=block_n,
            CHUNK=chunk,
        )
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, mask, ckpt)
        ctx.cfg = (softplus, chunk, block_d, block_n, n_chunks)
        ctx.set_materialize_grads(False)  # unused outputs (often last_state) get None, not zeros
        return y, last

    @staticmethod
    def backward(ctx, dy, dlast):
        u, delta, A, B, C, D, z, delta_bias, mask, ckpt = ctx.saved_tensors
        softplus, chunk, block_d, block_n, n_chunks = ctx.cfg
        batch, dim, L = u.shape
        G_B, G_C, d_state = B.shape[1], C.shape[1], A.shape[1]
        n_blocks = triton.cdiv(dim, block_d)
        dev, f32 = u.device, torch.float32
        dy = dy.contiguous() if dy is not None else torch.zeros_like(u)
        du = torch.empty_like(u)
        ddelta = torch.empty_like(delta)
        dz = torch.empty_like(z) if z is not None else None
        # B/C: a block lies in one group when the group size is a multiple of the block (or one group)
        per_B, per_C = dim // G_B, dim // G_C
        atomic_B = G_B > 1 and per_B % block_d != 0
        atomic_C = G_C > 1 and per_C % block_d != 0

        def bc_buffer(atomic: bool, groups: int) -> torch.Tensor:
            if atomic:
                return torch.zeros(batch, groups, d_state, L, device=dev, dtype=f32)
            return torch.empty(batch, n_blocks, d_state, L, device=dev, dtype=f32)

        dB_buf, dC_buf = bc_buffer(atomic_B, G_B), bc_buffer(atomic_C, G_C)
        dA_part = torch.empty(batch, dim, d_state, device=dev, dtype=f32)
        dD_part = torch.empty(batch, dim, device=dev, dtype=f32)
        dbias_part = torch.empty(batch, dim, device=dev, dtype=f32)
        scratch = torch.empty(batch * n_blocks * chunk * block_d * block_n, device=dev, dtype=f32)
        dummy = u
        _bwd_kernel[(batch, n_blocks)](
            u,
            delta,
            A,
            B,
            C,
            D if D is not None else dummy,
            z if z is not None else dummy,
            delta_bias if delta_bias is not None else dummy,
            mask if mask is not None else dummy,
            dy,
            dlast.contiguous() if dlast is not None else dummy,
            ckpt,
            scratch,
            du,
            ddelta,
            dz if dz is not None else dummy,
            dB_buf,
            dC_buf,
            dA_part,
            dD_part,
            dbias_part,
            dim,
            L,
            d_state,
            per_B,
            per_C,
            G_B,
            G_C,
            n_chunks,
            n_blocks,
            HAS_D=D is not None,
            HAS_Z=z is not None,
            HAS_BIAS=delta_bias is not None,
            SOFTPLUS=bool(softplus),
            HAS_MASK=mask is not None,
            HAS_DLAST=dlast is not None,
            ATOMIC_B=atomic_B,
            ATOMIC_C=atomic_C,
            BLOCK_D=block_d,
            BLOCK_N=block_n,
            CHUNK=chunk,
        )

        def reduce_bc(buf: torch.Tensor, atomic: bool, groups: int) -> torch.Tensor:
            if not atomic:  # blocks are consecutive and n_blocks / groups of them make one group
                buf = buf.view(batch, groups, n_blocks // groups, d_state, L).sum(2)
            return buf

        dB = reduce_bc(dB_buf, atomic_B, G_B).to(B.dtype)
        dC = reduce_bc(dC_buf, atomic_C, G_C).to(C.dtype)
        dA = dA_part.sum(0).to(A.dtype)
        dD = dD_part.sum(0).to(D.dtype) if D is not None else None
        dbias = dbias_part.sum(0).to(delta_bias.dtype) if delta_bias is not None else None
        return du, ddelta, dA, dB, dC, dD, dz, dbias, None, None, None, None


def selective_scan_triton(
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
    block_d: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton selective scan; returns (y (batch, dim, length) in u.dtype, last_state (batch, dim, N) fp32).

    Inputs as in :func:`ssm.selective_scan` (already validated there): u, delta, z (batch, dim, L);
    A (dim, N); B, C (batch, N, L) or (batch, G, N, L); D, delta_bias (dim,); mask (batch, L) bool.
    The kernels always compute in float32 (float64 inputs are read and written as float64 but not computed
    in it). ``chunk_size`` is the checkpoint interval (default 64), ``block_d`` the channels per program (a power of
    two, default min(32, next_pow2(dim))). Differentiable in every tensor input, including through
    ``last_state``. Needs CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``.
    """
    if not u.is_cuda and not _interpreting():
        raise ValueError(
            "the triton backend needs CUDA tensors (or TRITON_INTERPRET=1 set before importing kernels); "
            f"got tensors on {u.device}: use backend='chunked' or 'reference' on CPU"
        )
    if u.shape[-1] == 0:
        raise ValueError("the triton backend needs length >= 1")
    if block_d is not None and (block_d < 1 or block_d & (block_d - 1)):
        raise ValueError(f"block_d must be a power of two, got {block_d}")
    chunk = chunk_size or DEFAULT_CHUNK
    Bg = (B.unsqueeze(1) if B.dim() == 3 else B).contiguous()
    Cg = (C.unsqueeze(1) if C.dim() == 3 else C).contiguous()
    m = mask.to(torch.uint8).contiguous() if mask is not None else None

    def cont(t: torch.Tensor | None) -> torch.Tensor | None:
        return t.contiguous() if t is not None else None

    return _SelectiveScanFn.apply(
        u.contiguous(),
        delta.contiguous(),
        A.contiguous(),
        Bg,
        Cg,
        cont(D),
        cont(z),
        cont(delta_bias),
        m,
        bool(delta_softplus),
        int(chunk),
        block_d,
    )
