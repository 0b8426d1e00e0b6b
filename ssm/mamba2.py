"""Mamba-2 mixer (Dao & Gu 2024, "Transformers are SSMs"), computed by the chunked SSD algorithm.

The SSM of each head h is scalar-times-identity: with state S (headdim P, d_state N),

    S_t = exp(dt_t * A_h) * S_{t-1} + dt_t * x_t B_t^T        y_t = S_t C_t (+ D_h x_t)

where B, C (d_state,) are shared by the heads of a group. :func:`ssd_chunked` evaluates it in chunks of
``chunk_size`` steps: inside a chunk as a masked, attention-like product (the 1-semiseparable mask
exp(segsum(dt * A))), across chunks by passing the chunk-end states forward. :func:`ssd_recurrent` is the
same model as a plain loop over time (tests; :meth:`Mamba2.step` uses its one-step update).

Shapes in this module: x (batch, length, heads, P), dt (batch, length, heads), A (heads,),
B, C (batch, length, groups, N), state (batch, heads, P, N).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssm.mamba import CausalConv1d, init_dt_bias
from ssm.norms import GatedRMSNorm


def segsum(a: torch.Tensor) -> torch.Tensor:
    """Segment sums: a (..., T) -> (..., T, T) with out[..., i, j] = a[j+1] + ... + a[i] for i >= j
    (0 on the diagonal) and -inf above it, so that exp(out) is the causal decay matrix."""
    T = a.size(-1)
    lower = torch.ones(T, T, dtype=torch.bool, device=a.device).tril()
    # a cumulative sum down each column of a masked copy instead of cumsum[i] - cumsum[j] avoids the
    # cancellation error of differencing two large cumulative sums
    out = a.unsqueeze(-1).expand(*a.shape, T).masked_fill(~lower.tril(-1), 0).cumsum(dim=-2)
    return out.masked_fill(~lower, float("-inf"))


def _heads_per_group(B: torch.Tensor, heads: int) -> torch.Tensor:
    """(..., groups, N) -> (..., heads, N), each group's B/C repeated for the heads it serves."""
    groups = B.size(-2)
    if heads % groups:
        raise ValueError(f"number of heads ({heads}) must be a multiple of the number of groups ({groups})")
    return B.repeat_interleave(heads // groups, dim=-2)


def ssd_chunked(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int = 64,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked SSD. Returns y (batch, length, heads, P) (without the D skip) and the final state
    (batch, heads, P, N). Any chunk_size >= 1 works; the length is zero-padded up to a multiple of it."""
    batch, length, heads, headdim = x.shape
    chunk_size = max(1, min(chunk_size, length))  # a single short chunk needs no padding
    B, C = _heads_per_group(B, heads), _heads_per_group(C, heads)
    a = dt * A  # (batch, length, heads): log of the per-step decay
    xdt = x * dt.unsqueeze(-1)
    pad = -length % chunk_size
    if pad:
        # padded steps have decay exp(0) = 1 and no input, so they leave the state unchanged
        a, xdt, B, C = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (a, xdt, B, C))
    n_chunks = (length + pad) // chunk_size
    # layout (batch, chunks, heads, Q, ...) so that every product below is a batched matmul
    xdt, B, C = (t.unflatten(1, (n_chunks, chunk_size)).transpose(2, 3) for t in (xdt, B, C))
    a = a.unflatten(1, (n_chunks, chunk_size)).transpose(2, 3)  # (batch, chunks, heads, Q)
    a_cum = a.cumsum(dim=-1)

    # 1. within each chunk: y_i = sum_{j<=i} (C_i . B_j) exp(a_{j+1} + ... + a_i) xdt_j
    scores = (C @ B.transpose(-1, -2)) * torch.exp(segsum(a))  # (batch, chunks, heads, Q, Q)
    y = scores @ xdt

    # 2. state each chunk would end in if it started from zero: sum_j exp(a_{j+1} + ... + a_Q) xdt_j B_j^T
    decay_to_end = torch.exp(a_cum[..., -1:] - a_cum).unsqueeze(-1)  # (batch, chunks, heads, Q, 1)
    chunk_states = xdt.transpose(-1, -2) @ (B * decay_to_end)  # (batch, chunks, heads, P, N)

    # 3. carry states across chunks: entering state of chunk c = decayed sum of all earlier chunk states
    if initial_state is None:
        initial_state = x.new_zeros(batch, heads, headdim, B.size(-1))
    states = torch.cat([initial_state.unsqueeze(1), chunk_states], dim=1)  # (batch, chunks+1, ...)
    chunk_decay = torch.exp(segsum(F.pad(a_cum[..., -1].transpose(1, 2), (1, 0))))  # (b, h, c+1, c+1)
    states = torch.einsum("bhzc,bchpn->bzhpn", chunk_decay, states)
    entering, final_state = states[:, :-1], states[:, -1]

    # 4. output due to the entering state, decayed up to each position of the chunk
    y = y + (C * torch.exp(a_cum).unsqueeze(-1)) @ entering.transpose(-1, -2)

    y = y.transpose(2, 3).flatten(1, 2)[:, :length]  # back to (batch, length, heads, P)
    return y, final_state


def ssd_step(
    state: torch.Tensor,
    x_t: torch.Tensor,
    dt_t: torch.Tensor,
    A: torch.Tensor,
    B_t: torch.Tensor,
    C_t: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One recurrence step. state (batch, heads, P, N), x_t (batch, heads, P), dt_t (batch, heads),
    B_t, C_t (batch, groups, N) -> (y_t (batch, heads, P), new state)."""
    heads = x_t.size(1)
    B_t, C_t = _heads_per_group(B_t, heads), _heads_per_group(C_t, heads)
    decay = torch.exp(dt_t * A)[..., None, None]
    state = decay * state + (dt_t.unsqueeze(-1) * x_t).unsqueeze(-1) * B_t.unsqueeze(-2)
    return torch.einsum("bhpn,bhn->bhp", state, C_t), state


def ssd_recurrent(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The SSD model as a loop over time; same inputs and outputs as :func:`ssd_chunked`."""
    batch, length, heads, headdim = x.shape
    state = initial_state if initial_state is not None else x.new_zeros(batch, heads, headdim, B.size(-1))
    ys = []
    for t in range(length):
        y_t, state = ssd_step(state, x[:, t], dt[:, t], A, B[:, t], C[:, t])
        ys.append(y_t)
    return torch.stack(ys, dim=1), state


class Mamba2(nn.Module):
    """Mamba-2 mixer: multi-head SSD with per-head scalar A, B/C shared within groups.

    Args:
        d_model: input/output width.
        d_state: state size N per head.
        d_conv: width of the causal depthwise convolution applied to (x, B, C).
        expand: d_inner = expand * d_model, split into d_inner / headdim heads.
        headdim: head dimension P (must divide d_inner).
        ngroups: number of B/C groups (must divide the number of heads).
        chunk_size: SSD chunk length Q.
        dt_min, dt_max, dt_init_floor: initial step sizes (per head), see :func:`ssm.mamba.init_dt_bias`.
        A_init_range: A_h = -a with a drawn uniformly from this range.

    forward: x (batch, length, d_model), mask (batch, length) bool or None -> (batch, length, d_model).
        Padded steps get dt = 0 (no decay, no input), so they leave the state untouched.
    step: state = (conv_state (batch, d_inner + 2 ngroups N, d_conv), ssm_state (batch, heads, P, N)),
        x_t (batch, d_model) -> (state, y_t (batch, d_model)).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        headdim: int = 32,
        ngroups: int = 1,
        chunk_size: int = 64,
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        A_init_range: tuple[float, float] = (1.0, 16.0),
    ):
        super().__init__()
        for name, value in (
            ("d_model", d_model),
            ("d_state", d_state),
            ("expand", expand),
            ("headdim", headdim),
            ("ngroups", ngroups),
            ("chunk_size", chunk_size),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        d_inner = expand * d_model
        if d_inner % headdim:
            raise ValueError(f"headdim ({headdim}) must divide expand * d_model ({d_inner})")
        nheads = d_inner // headdim
        if nheads % ngroups:
            raise ValueError(f"ngroups ({ngroups}) must divide the number of heads ({nheads})")
        lo, hi = A_init_range
        if not 0 < lo <= hi:
            raise ValueError(f"A_init_range must satisfy 0 < low <= high, got {A_init_range}")
        self.d_inner, self.d_state, self.headdim, self.ngroups = d_inner, d_state, headdim, ngroups
        self.nheads, self.chunk_size = nheads, chunk_size

        # one projection yields the gate z, the conv input (x, B, C) and the per-head dt
        self.in_proj = nn.Linear(d_model, 2 * d_inner + 2 * ngroups * d_state + nheads, bias=False)
        self.conv = CausalConv1d(d_inner + 2 * ngroups * d_state, d_conv)
        self.dt_bias = nn.Parameter(init_dt_bias(nheads, dt_min, dt_max, dt_init_floor))
        self.A_log = nn.Parameter(torch.empty(nheads).uniform_(lo, hi).log())
        self.D = nn.Parameter(torch.ones(nheads))
        self.norm = GatedRMSNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def _split_proj(self, proj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(..., in_proj out) -> z (..., d_inner), xBC (..., d_inner + 2 G N), dt (..., heads)."""
        conv_dim = self.d_inner + 2 * self.ngroups * self.d_state
        return proj.split([self.d_inner, conv_dim, self.nheads], dim=-1)

    def _split_xbc(self, xbc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(..., d_inner + 2 G N) -> x (..., heads, P), B, C (..., groups, N)."""
        gn = self.ngroups * self.d_state
        x, B, C = xbc.split([self.d_inner, gn, gn], dim=-1)
        lead = xbc.shape[:-1]
        return (
            x.reshape(*lead, self.nheads, self.headdim),
            B.reshape(*lead, self.ngroups, self.d_state),
            C.reshape(*lead, self.ngroups, self.d_state),
        )

    def _output(self, y: torch.Tensor, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """SSM output y, input x (..., heads, P) and gate z (..., d_inner) -> (..., d_model)."""
        y = y + self.D.unsqueeze(-1) * x
        return self.out_proj(self.norm(y.flatten(-2), z))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        z, xbc, dt = self._split_proj(self.in_proj(x))
        xbc = self.conv.forward_silu(xbc, time_dim=1)
        xs, B, C = self._split_xbc(xbc)
        dt = F.softplus(dt + self.dt_bias)
        if mask is not None:
            dt = dt * mask.unsqueeze(-1)
        y, _ = ssd_chunked(xs, dt, -torch.exp(self.A_log), B, C, self.chunk_size)
        return self._output(y, xs, z)

    def init_state(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        ssm_state = self.A_log.new_zeros(batch_size, self.nheads, self.headdim, self.d_state)
        return self.conv.init_state(batch_size), ssm_state

    def step(self, state, x_t: torch.Tensor):
        conv_state, ssm_state = state
        z, xbc, dt = self._split_proj(self.in_proj(x_t))
        conv_state, xbc = self.conv.step(conv_state, xbc)
        xs, B, C = self._split_xbc(F.silu(xbc))
        y, ssm_state = ssd_step(ssm_state, xs, F.softplus(dt + self.dt_bias), -torch.exp(self.A_log), B, C)
        return (conv_state, ssm_state), self._output(y, xs, z)
