"""Triton kernel for one selective-scan decoding step (state update + output), in place.

Semantics are those of :func:`ssm.state_update.selective_state_update` (mamba_ssm's
``selective_state_update``), which validates the arguments and calls :func:`selective_state_update_triton`
with everything in the multi-head layout: state (state_batch, H, P, N), x/dt/z (batch, H, P), A (H, P, N),
B/C (batch, G, N), D/dt_bias (H, P). Any strides are accepted (views, broadcast A).

Grid: (ceil(P / BLOCK_P), batch, H). A program loads its (BLOCK_P, BLOCK_N) state tile (BLOCK_N = next
power of two of N, extra lanes masked), updates it in float32 registers, stores it back in the state's
dtype and writes out[b, h, p] = sum_n C[n] state[p, n] (+ D x) (* silu(z)). A negative state_batch_index
marks a padding row: its output is 0 and no state is read or written. No autograd (decoding only).
Under ``TRITON_INTERPRET=1`` (set before import) it also runs on CPU tensors.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.selective_scan_triton import _interpreting, _softplus  # shared with the scan kernel

__all__ = ["selective_state_update_triton"]


@triton.jit
def _state_update_kernel(
    state_ptr,
    x_ptr,
    dt_ptr,
    bias_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    D_ptr,
    z_ptr,
    out_ptr,
    idx_ptr,
    P,
    N,
    heads_per_group,
    s_sb,
    s_sh,
    s_sp,
    s_sn,
    x_b,
    x_h,
    x_p,
    dt_b,
    dt_h,
    dt_p,
    bias_h,
    bias_p,
    A_h,
    A_p,
    A_n,
    B_b,
    B_g,
    B_n,
    C_b,
    C_g,
    C_n,
    D_h,
    D_p,
    z_b,
    z_h,
    z_p,
    o_b,
    o_h,
    o_p,
    SOFTPLUS: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_IDX: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid_p = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    h = tl.program_id(2).to(tl.int64)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_n = tl.arange(0, BLOCK_N)
    mask_p = offs_p < P
    mask_pn = mask_p[:, None] & (offs_n < N)[None, :]
    out_ptrs = out_ptr + b * o_b + h * o_h + offs_p * o_p
    if HAS_IDX:
        row = tl.load(idx_ptr + b).to(tl.int64)
    else:
        row = b
    if row < 0:  # padding row
        tl.store(out_ptrs, tl.zeros([BLOCK_P], dtype=tl.float32), mask=mask_p)
    else:
        s_ptrs = state_ptr + row * s_sb + h * s_sh + offs_p[:, None] * s_sp + offs_n[None, :] * s_sn
        state = tl.load(s_ptrs, mask=mask_pn, other=0.0).to(tl.float32)
        x = tl.load(x_ptr + b * x_b + h * x_h + offs_p * x_p, mask=mask_p, other=0.0).to(tl.float32)
        dt = tl.load(dt_ptr + b * dt_b + h * dt_h + offs_p * dt_p, mask=mask_p, other=0.0).to(tl.float32)
        if HAS_BIAS:
            dt += tl.load(bias_ptr + h * bias_h + offs_p * bias_p, mask=mask_p, other=0.0).to(tl.float32)
        if SOFTPLUS:
            dt = _softplus(dt)
        A = tl.load(
            A_ptr + h * A_h + offs_p[:, None] * A_p + offs_n[None, :] * A_n, mask=mask_pn, other=0.0
        ).to(tl.float32)
        g = h // heads_per_group
        Bv = tl.load(B_ptr + b * B_b + g * B_g + offs_n * B_n, mask=offs_n < N, other=0.0).to(tl.float32)
        Cv = tl.load(C_ptr + b * C_b + g * C_g + offs_n * C_n, mask=offs_n < N, other=0.0).to(tl.float32)
        state = tl.exp(dt[:, None] * A) * state + (dt * x)[:, None] * Bv[None, :]
        tl.store(s_ptrs, state.to(state_ptr.dtype.element_ty), mask=mask_pn)
        out = tl.sum(state * Cv[None, :], axis=1)
        if HAS_D:
            out += x * tl.load(D_ptr + h * D_h + offs_p * D_p, mask=mask_p, other=0.0).to(tl.float32)
        if HAS_Z:
            z = tl.load(z_ptr + b * z_b + h * z_h + offs_p * z_p, mask=mask_p, other=0.0).to(tl.float32)
            out = out * z * tl.sigmoid(z)
        tl.store(out_ptrs, out, mask=mask_p)


def _strides(t: torch.Tensor | None, n: int) -> tuple[int, ...]:
    return tuple(t.stride()) if t is not None else (0,) * n


def selective_state_update_triton(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
    state_batch_indices: torch.Tensor | None = None,
) -> torch.Tensor:
    """Multi-head layout, already validated; updates ``state`` in place; returns out (batch, H, P), x.dtype.

    Needs CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``.
    """
    if not x.is_cuda and not _interpreting():
        raise ValueError(
            "the triton state update needs CUDA tensors (or TRITON_INTERPRET=1 set before importing kernels); "
            f"got tensors on {x.device}: use backend='torch' on CPU"
        )
    batch, heads, P = x.shape
    N = state.shape[-1]
    # float32 output buffer (the kernel's accumulator), cast to x's dtype after
    out = torch.empty(batch, heads, P, device=x.device, dtype=torch.float32)
    if batch == 0:
        return out.to(x.dtype)
    block_n = triton.next_power_of_2(max(1, N))
    block_p = max(1, min(triton.next_power_of_2(P), max(4, 4096 // block_n), 64))
    idx = state_batch_indices.contiguous() if state_batch_indices is not None else None
    dummy = x
    grid = (triton.cdiv(P, block_p), batch, heads)
    _state_update_kernel[grid](
        state,
        x,
        dt,
        dt_bias if dt_bias is not None else dummy,
        A,
        B,
        C,
        D if D is not None else dummy,
        z if z is not None else dummy,
        out,
        idx if idx is not None else dummy,
        P,
        N,
        heads // B.shape[1],
        *state.stride(),
        *x.stride(),
        *dt.stride(),
        *_strides(dt_bias, 2),
        *A.stride(),
        *B.stride(),
        *C.stride(),
        *_strides(D, 2),
        *_strides(z, 3),
        *out.stride(),
        SOFTPLUS=bool(dt_softplus),
        HAS_BIAS=dt_bias is not None,
        HAS_D=D is not None,
        HAS_Z=z is not None,
        HAS_IDX=idx is not None,
        BLOCK_P=block_p,
        BLOCK_N=block_n,
    )
    return out.to(x.dtype)
