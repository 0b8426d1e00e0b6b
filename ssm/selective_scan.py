"""Selective scan (the S6 layer of Mamba, Gu & Dao 2023): API, backend dispatch, PyTorch backends.

For every batch element b, channel d and state index n the scan runs the linear recurrence

    delta_t = softplus(delta_t + delta_bias)          (bias and softplus optional)
    x_t     = exp(delta_t * A[d, n]) * x_{t-1} + delta_t * B_t[n] * u_t      (x_{-1} = 0)
    y_t     = sum_n C_t[n] * x_t[n] + D[d] * u_t
    y_t     = y_t * silu(z_t)                         (gate optional)

Shapes (``G`` = number of groups; channel ``d`` reads the B/C of group ``d // (dim // G)``):

=================  ===============================================================
``u, delta, z``    (batch, dim, length)
``A``              (dim, d_state), real (usually negative: ``-exp(A_log)``)
``B, C``           (batch, d_state, length), grouped (batch, G, d_state, length) or time-invariant
                   (dim, d_state) (materialised per step by the chunked and triton backends)
``D, delta_bias``  (dim,)
``mask``           (batch, length) bool, True at real positions (left/right padding)
``lengths``        (batch,) int: the first ``lengths[b]`` positions are real (right padding)
``y``              (batch, dim, length), dtype of ``u``
``last_state``     (batch, dim, d_state), float32 (float64 for float64 inputs)
=================  ===============================================================

Backends: ``reference`` (sequential loop under autograd, the ground truth), ``chunked``
(:mod:`ssm.chunked_scan`: a custom autograd Function that keeps only its inputs and the states at chunk
boundaries and recomputes each chunk in the backward; the CPU path), ``triton``
(:mod:`kernels.selective_scan_triton`) and ``auto`` (triton for CUDA tensors, chunked otherwise, at every
size). All backends accumulate in float32 (float64 when the inputs are float64) and support autograd.
``selective_scan_fn`` / ``selective_scan_ref`` carry mamba_ssm's names and signatures; the streaming step
is :mod:`ssm.state_update`. This package must not import ``ghrs``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssm.chunked_scan import chunked_scan, effective_delta

__all__ = ["BACKENDS", "selective_scan", "selective_scan_fn", "selective_scan_ref"]

BACKENDS = ("auto", "reference", "chunked", "triton")
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# --------------------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------------------


def _check_float(name: str, t: torch.Tensor) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")  # noqa: TRY004
    if t.is_complex():
        raise ValueError(f"{name} must be real (complex A/B/C are not supported), got dtype {t.dtype}")
    if t.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"{name} must be a float16/bfloat16/float32/float64 tensor, got dtype {t.dtype}")


def _check_shape(name: str, t: torch.Tensor, shape: tuple[int, ...], desc: str) -> None:
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {desc} = {tuple(shape)}, got {tuple(t.shape)}")


def _check_bc(name: str, t: torch.Tensor, batch: int, dim: int, length: int, d_state: int) -> int:
    """Validate B or C (time-invariant 2-D, 3-D or grouped 4-D) and return its number of groups."""
    _check_float(name, t)
    if t.dim() == 2:  # time-invariant (dim, d_state), as mamba_ssm accepts: one "group" per channel
        _check_shape(name, t, (dim, d_state), "(dim, d_state)")
        return dim
    if t.dim() == 3:
        _check_shape(name, t, (batch, d_state, length), "(batch, d_state, length)")
        return 1
    if t.dim() == 4:
        groups = t.shape[1]
        _check_shape(name, t, (batch, groups, d_state, length), "(batch, groups, d_state, length)")
        if groups < 1 or dim % groups != 0:
            raise ValueError(f"{name}: dim={dim} must be divisible by the number of groups, got {groups}")
        return groups
    raise ValueError(
        f"{name} must be (dim, d_state), (batch, d_state, length) or (batch, groups, d_state, length), got shape "
        f"{tuple(t.shape)}"
    )


def _validate_mask(
    mask: torch.Tensor | None, lengths: torch.Tensor | None, batch: int, length: int, device: torch.device
) -> torch.Tensor | None:
    """Turn ``mask`` / ``lengths`` into one (batch, length) bool mask, or None when every step is real."""
    if mask is not None and lengths is not None:
        raise ValueError("give either mask or lengths, not both")
    if lengths is not None:
        if not isinstance(lengths, torch.Tensor) or lengths.dtype.is_floating_point or lengths.dim() != 1:
            raise ValueError("lengths must be a 1-D integer tensor (batch,)")
        if lengths.shape[0] != batch:
            raise ValueError(f"lengths must have shape (batch,) = ({batch},), got {tuple(lengths.shape)}")
        if bool(((lengths < 0) | (lengths > length)).any()):
            raise ValueError(f"lengths must lie in [0, length={length}]")
        lengths = lengths.to(device)
        return torch.arange(length, device=device)[None, :] < lengths[:, None]
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise ValueError(
            f"mask must be a bool tensor (batch, length), got {getattr(mask, 'dtype', type(mask))}"
        )
    _check_shape("mask", mask, (batch, length), "(batch, length)")
    if mask.device != device:
        raise ValueError(f"mask must be on {device}, got {mask.device}")
    return mask


def _compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """float64 if any input is float64 (used by gradcheck), float32 otherwise (fp16/bf16 accumulate in fp32)."""
    return (
        torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32
    )


def _as_groups(t: torch.Tensor) -> torch.Tensor:
    """B or C -> grouped view (batch, G, d_state, length) (a view, no copy)."""
    return t.unsqueeze(1) if t.dim() == 3 else t


# --------------------------------------------------------------------------------------------------------
# shared pre/post-processing (torch ops, differentiable)
# --------------------------------------------------------------------------------------------------------


def _finish_output(
    y: torch.Tensor,
    u: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    mask: torch.Tensor | None,
) -> torch.Tensor:
    """y = (y + D u) * silu(z), zeroed at padded steps; all (batch, dim, length) in the compute dtype."""
    if D is not None:
        y = y + D.to(y.dtype)[:, None] * u
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    if mask is not None:
        y = torch.where(mask[:, None, :], y, torch.zeros((), dtype=y.dtype, device=y.device))
    return y


# --------------------------------------------------------------------------------------------------------
# reference backend
# --------------------------------------------------------------------------------------------------------


def _scan_reference(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain sequential scan. u, delta (batch, dim, L); A (dim, N); B, C (batch, G, N, L), all one dtype.

    Returns (sum_n C_t x_t (batch, dim, L), last state (batch, dim, N)). The state is kept as
    (batch, G, dim/G, N) so the group's B_t/C_t broadcast over its channels without copies.
    """
    batch, dim, length = u.shape
    groups, d_state = B.shape[1], B.shape[2]
    per = dim // groups
    u4 = u.view(batch, groups, per, length)
    delta4 = delta.view(batch, groups, per, length)
    A3 = A.view(groups, per, d_state)
    x = u.new_zeros(batch, groups, per, d_state)
    ys = []
    for t in range(length):
        dt = delta4[..., t, None]  # (batch, G, per, 1)
        x = torch.exp(dt * A3) * x + (dt * u4[..., t, None]) * B[:, :, None, :, t]
        ys.append((x * C[:, :, None, :, t]).sum(-1))
    y = torch.stack(ys, dim=-1) if ys else u.new_zeros(batch, groups, per, 0)
    return y.reshape(batch, dim, length), x.reshape(batch, dim, d_state)


# --------------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------------


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    backend: str = "auto",
    mask: torch.Tensor | None = None,
    *,
    lengths: torch.Tensor | None = None,
    chunk_size: int | None = None,
):
    """Selective scan, a drop-in for ``mamba_ssm``'s ``selective_scan_fn`` (see the module docstring).

    Args:
        u: input (batch, dim, length).
        delta: step sizes before bias/softplus (batch, dim, length).
        A: (dim, d_state) real transition rates.
        B, C: (batch, d_state, length) or (batch, groups, d_state, length).
        D: optional skip (dim,). z: optional gate (batch, dim, length). delta_bias: optional (dim,).
        delta_softplus: apply softplus to ``delta + delta_bias``.
        return_last_state: also return the final state (batch, dim, d_state).
        backend: ``auto`` | ``reference`` | ``chunked`` | ``triton``.
        mask: optional (batch, length) bool, True at real steps. Padded steps (left or right padding, or
            holes) neither change the state nor the outputs of real steps; their outputs are 0 and they get
            zero gradients. Values at padded positions must be finite.
        lengths: alternative to ``mask`` (keyword only): (batch,) ints, the first ``lengths[b]`` steps are
            real (right padding).
        chunk_size: chunk length of the ``chunked`` backend (default ~sqrt of its cache block) and the
            state-checkpoint interval of the ``triton`` backend (default 64).

    Returns:
        y (batch, dim, length) in ``u.dtype``, or ``(y, last_state)`` when ``return_last_state``; the state
        is float32 (float64 for float64 inputs). With a mask, ``last_state`` is the state after the last
        real step.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    for name, t in (("u", u), ("delta", delta), ("A", A)):
        _check_float(name, t)
    if u.dim() != 3:
        raise ValueError(f"u must be (batch, dim, length), got shape {tuple(u.shape)}")
    batch, dim, length = u.shape
    _check_shape("delta", delta, (batch, dim, length), "(batch, dim, length)")
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"A must be (dim, d_state) with dim={dim}, got shape {tuple(A.shape)}")
    d_state = A.shape[1]
    gb = _check_bc("B", B, batch, dim, length, d_state)
    gc = _check_bc("C", C, batch, dim, length, d_state)
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None:
            _check_float(name, t)
            _check_shape(name, t, (dim,), "(dim,)")
    if z is not None:
        _check_float("z", z)
        _check_shape("z", z, (batch, dim, length), "(batch, dim, length)")
    for name, t in (
        ("delta", delta),
        ("A", A),
        ("B", B),
        ("C", C),
        ("D", D),
        ("z", z),
        ("delta_bias", delta_bias),
    ):
        if t is not None and t.device != u.device:
            raise ValueError(f"{name} must be on the same device as u ({u.device}), got {t.device}")
    # time-invariant B/C (dim, d_state): a per-channel grouped view (batch, dim, d_state, length), no copy
    if B.dim() == 2:
        B = B[None, :, :, None].expand(batch, dim, d_state, length)
    if C.dim() == 2:
        C = C[None, :, :, None].expand(batch, dim, d_state, length)
    mask = _validate_mask(mask, lengths, batch, length, u.device)
    if mask is not None and not u.is_cuda and bool(mask.all()):
        mask = None  # every step is real: skip the masking ops (checked on CPU only, where it is free)
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")

    if backend == "auto":
        backend = "triton" if u.is_cuda else "chunked"
    if backend == "triton":
        from kernels.selective_scan_triton import selective_scan_triton  # lazy: needs triton

        y, last = selective_scan_triton(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, mask, chunk_size=chunk_size
        )
        return (y, last) if return_last_state else y

    dtype = _compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    # a 3-D B/C is one group; grouped B and C may differ in their number of groups: expand both to the
    # finer grouping (groups always divide dim, and the coarser one divides the finer only if nested)
    Bg, Cg = _as_groups(B).to(dtype), _as_groups(C).to(dtype)
    if gb != gc:
        Bg, Cg = _match_groups(Bg, Cg, dim)
    if backend == "chunked":

        def cast(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(dtype)

        y, last = chunked_scan(
            u.to(dtype),
            delta.to(dtype),
            A.to(dtype),
            Bg,
            Cg,
            cast(D),
            cast(z),
            cast(delta_bias),
            delta_softplus,
            mask,
            chunk_size=chunk_size,
        )
        y = y.to(u.dtype)
        return (y, last) if return_last_state else y
    dt = effective_delta(delta, delta_bias, delta_softplus, mask, dtype)
    uc = u.to(dtype)
    if mask is not None:
        uc = torch.where(mask[:, None, :], uc, torch.zeros((), dtype=dtype, device=u.device))
    y, last = _scan_reference(uc, dt, A.to(dtype), Bg, Cg)
    y = _finish_output(y, uc, D, z, mask).to(u.dtype)
    return (y, last) if return_last_state else y


def _match_groups(Bg: torch.Tensor, Cg: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """B and C with different group counts -> both with one group per channel (batch, dim, N, L)."""

    def per_channel(t: torch.Tensor) -> torch.Tensor:
        return t.repeat_interleave(dim // t.shape[1], dim=1)

    return per_channel(Bg), per_channel(Cg)


def selective_scan_fn(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
):
    """mamba_ssm's ``selective_scan_fn`` signature on :func:`selective_scan` with ``backend="auto"``.

    Unlike mamba_ssm, a gradient through ``last_state`` is propagated.
    """
    return selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


def selective_scan_ref(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
):
    """mamba_ssm's ``selective_scan_ref`` signature on the sequential ``reference`` backend."""
    return selective_scan(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, backend="reference"
    )
