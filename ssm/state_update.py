"""One recurrent step of the selective scan (streaming decoding), with mamba_ssm's conventions.

:func:`selective_state_update` has the signature and semantics of ``mamba_ssm.ops.triton.
selective_state_update.selective_state_update``: it updates ``state`` **in place** and returns the output.
Per head h, channel p and state index n::

    dt    = softplus(dt + dt_bias)                       (bias and softplus optional)
    state = exp(dt * A[h, p, n]) * state + dt * B[g(h), n] * x          (g(h) = h // (nheads / ngroups))
    out   = (sum_n C[g(h), n] * state + D[h, p] * x) * silu(z)           (D and z optional)

Layouts (both of mamba_ssm's):

==================  ===================================  =========================================
                    single-head                          multi-head
==================  ===================================  =========================================
``state``           (state_batch, dim, dstate)           (state_batch, nheads, dim, dstate)
``x, dt, z``        (batch, dim)                         (batch, nheads, dim)
``A``               (dim, dstate)                        (nheads, dim, dstate)
``B, C``            (batch, dstate) or (batch, G, dstate)  (batch, ngroups, dstate)
``D, dt_bias``      (dim,)                               (nheads, dim)
``out``             (batch, dim), dtype of x             (batch, nheads, dim)
==================  ===================================  =========================================

In the single-head layout a (batch, G, dstate) B/C with G > 1 (an extension: mamba_ssm requires G = 1
there) gives channel d the group d // (dim / G), as in :func:`ssm.selective_scan`.
``state_batch_indices`` (batch,) int picks the state row of each batch row (``state`` may hold more rows
than the batch); a negative index marks padding: its output is 0 and no state is touched.

Arithmetic is float32 (float64 if an input is float64) whatever the input dtypes; the state is written back
in its own dtype. Backends: ``torch`` (differentiable) and ``triton``
(:mod:`kernels.selective_state_update_triton`, in place, no autograd); ``auto`` picks triton for CUDA
tensors when no gradient is needed. :func:`selective_state_step` is the functional form used before
(input state untouched, new state returned).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssm.selective_scan import _check_float, _compute_dtype

__all__ = ["STATE_BACKENDS", "selective_state_step", "selective_state_update"]

STATE_BACKENDS = ("auto", "torch", "triton")


def _heads_layout(state, x, dt, A, B, C, D, z, dt_bias):
    """Validate and view every argument in the multi-head layout; returns (views..., was_single_head).

    A single-head call with G groups in B/C becomes G heads of dim / G channels (G = 1 for a 2-D B/C).
    """
    for name, t in (("state", state), ("x", x), ("dt", dt), ("A", A), ("B", B), ("C", C)):
        _check_float(name, t)
    for name, t in (("D", D), ("z", z), ("dt_bias", dt_bias)):
        if t is not None:
            _check_float(name, t)
    if state.dim() not in (3, 4):
        raise ValueError(
            f"state must be (batch, dim, dstate) or (batch, nheads, dim, dstate), got {tuple(state.shape)}"
        )
    single = state.dim() == 3
    batch = x.shape[0] if x.dim() >= 1 else 0
    if single:
        _, dim, dstate = state.shape
        if B.dim() not in (2, 3) or C.dim() not in (2, 3):
            raise ValueError(
                f"B and C must be (batch, dstate) or (batch, groups, dstate), got {tuple(B.shape)}, "
                f"{tuple(C.shape)}"
            )
        groups = B.shape[1] if B.dim() == 3 else 1
        if groups < 1 or dim % groups != 0:
            raise ValueError(f"B: dim={dim} must be divisible by the number of groups, got {groups}")
        heads, per = groups, dim // groups

        def split(t, name, shape_desc):  # (..., dim) -> (..., groups, per)
            if t is None:
                return None
            if t.shape[-1] != dim:
                raise ValueError(f"{name} must have shape {shape_desc} with dim={dim}, got {tuple(t.shape)}")
            return t.unflatten(-1, (heads, per))

        state4 = state.unflatten(1, (heads, per))
        x, dt, z = (split(t, n, "(batch, dim)") for t, n in ((x, "x"), (dt, "dt"), (z, "z")))
        if A.dim() != 2 or A.shape != (dim, dstate):
            raise ValueError(f"A must have shape (dim, dstate) = ({dim}, {dstate}), got {tuple(A.shape)}")
        A = A.unflatten(0, (heads, per))
        D, dt_bias = split(D, "D", "(dim,)"), split(dt_bias, "dt_bias", "(dim,)")
        B = B.unsqueeze(1) if B.dim() == 2 else B
        C = C.unsqueeze(1) if C.dim() == 2 else C
    else:
        state4 = state
        _, heads, per, dstate = state.shape
    shapes = {
        "x": (x, (batch, heads, per)),
        "dt": (dt, (batch, heads, per)),
        "z": (z, (batch, heads, per)),
        "A": (A, (heads, per, dstate)),
        "D": (D, (heads, per)),
        "dt_bias": (dt_bias, (heads, per)),
    }
    for name, (t, shape) in shapes.items():
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    if B.dim() != 3 or B.shape[0] != batch or B.shape[2] != dstate:
        raise ValueError(
            f"B must be (batch, ngroups, dstate) with batch={batch}, dstate={dstate}, got {tuple(B.shape)}"
        )
    if tuple(C.shape) != tuple(B.shape):
        raise ValueError(f"C must have B's shape {tuple(B.shape)}, got {tuple(C.shape)}")
    if heads % B.shape[1] != 0:
        raise ValueError(f"nheads={heads} must be divisible by ngroups={B.shape[1]}")
    for name, t in (
        ("x", x),
        ("dt", dt),
        ("A", A),
        ("B", B),
        ("C", C),
        ("D", D),
        ("z", z),
        ("dt_bias", dt_bias),
    ):
        if t is not None and t.device != state.device:
            raise ValueError(f"{name} must be on the state's device ({state.device}), got {t.device}")
    return state4, x, dt, A, B, C, D, z, dt_bias, single


def _step_math(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus):
    """Multi-head layout, differentiable: -> (out (batch, H, P) compute dtype, new state (batch, H, P, N))."""
    dtype = _compute_dtype(state, x, dt, A, B, C, D, z, dt_bias)
    dt = dt.to(dtype)
    if dt_bias is not None:
        dt = dt + dt_bias.to(dtype)
    if dt_softplus:
        dt = F.softplus(dt)  # threshold 20: identity above, as in mamba_ssm
    x = x.to(dtype)
    rep = x.shape[1] // B.shape[1]  # heads per group
    Bh = B.to(dtype).repeat_interleave(rep, dim=1)[:, :, None, :]  # (batch, H, 1, N)
    Ch = C.to(dtype).repeat_interleave(rep, dim=1)[:, :, None, :]
    new_state = torch.exp(dt[..., None] * A.to(dtype)) * state.to(dtype) + (dt * x)[..., None] * Bh
    out = (new_state * Ch).sum(-1)
    if D is not None:
        out = out + D.to(dtype) * x
    if z is not None:
        out = out * F.silu(z.to(dtype))
    return out, new_state


def selective_state_update(
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
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """mamba_ssm's ``selective_state_update``: update ``state`` in place, return out (see the module doc)."""
    if backend not in STATE_BACKENDS:
        raise ValueError(f"backend must be one of {STATE_BACKENDS}, got {backend!r}")
    state4, x4, dt4, A4, B4, C4, D4, z4, bias4, single = _heads_layout(state, x, dt, A, B, C, D, z, dt_bias)
    batch = x4.shape[0]
    idx = state_batch_indices
    if idx is not None:
        if not isinstance(idx, torch.Tensor) or idx.dtype.is_floating_point or tuple(idx.shape) != (batch,):
            raise ValueError(f"state_batch_indices must be an integer tensor of shape ({batch},)")
        if bool((idx >= state.shape[0]).any()):
            raise ValueError(f"state_batch_indices must be < the state's batch size {state.shape[0]}")
    elif state.shape[0] != batch:
        raise ValueError(f"state has {state.shape[0]} rows but x has batch {batch}: pass state_batch_indices")
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (state, x, dt, A, B, C, D, z, dt_bias)
    )
    if backend == "auto":
        backend = "triton" if x.is_cuda and not needs_grad else "torch"
    if backend == "triton":
        from kernels.selective_state_update_triton import selective_state_update_triton  # lazy: needs triton

        out = selective_state_update_triton(
            state4, x4, dt4, A4, B4, C4, D4, z4, bias4, bool(dt_softplus), idx
        )
    else:
        rows = idx.long().clamp(min=0) if idx is not None else None
        prev = state4 if rows is None else state4[rows]
        out, new_state = _step_math(prev, x4, dt4, A4, B4, C4, D4, z4, bias4, dt_softplus)
        if rows is None:
            state4.copy_(new_state)
        else:
            real = idx >= 0  # padding rows: output 0, state untouched
            out = out * real[:, None, None]
            if bool(real.all()):
                state4.index_copy_(0, rows, new_state.to(state.dtype))
            else:
                state4.index_copy_(0, rows[real], new_state[real].to(state.dtype))
        out = out.to(x.dtype)
    return out.flatten(1) if single else out


def selective_state_step(
    state: torch.Tensor,
    u_t: torch.Tensor,
    delta_t: torch.Tensor,
    A: torch.Tensor,
    B_t: torch.Tensor,
    C_t: torch.Tensor,
    D: torch.Tensor | None = None,
    z_t: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    *,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Functional step (the former ``selective_state_update``): the input state is not modified.

    Same layouts as :func:`selective_state_update`. Returns (y_t in ``u_t.dtype``, new state in float32,
    or float64 for float64 inputs). Running it over t reproduces :func:`ssm.selective_scan`.
    """
    dtype = _compute_dtype(state, u_t, delta_t, A, B_t, C_t, D, z_t, delta_bias)
    new_state = state.to(dtype, copy=True)
    y = selective_state_update(
        new_state, u_t, delta_t, A, B_t, C_t, D, z_t, delta_bias, delta_softplus, backend=backend
    )
    return y, new_state
