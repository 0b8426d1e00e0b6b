"""Mamba (S6) mixer of Gu & Dao (2023), "Mamba: Linear-Time Sequence Modeling with Selective State Spaces".

Data flow of :class:`Mamba` for x (batch, length, d_model), with d_inner = expand * d_model:

1. ``in_proj`` -> x, z, each (batch, length, d_inner); z is the gate.
2. causal depthwise conv1d of width ``d_conv`` over time on x, then SiLU.
3. input-dependent SSM parameters from x: a low-rank delta (``x_proj`` -> rank ``dt_rank`` -> ``dt_proj``,
   with the bias and softplus applied inside the scan), B and C (batch, d_state, length).
4. selective scan with A = -exp(A_log) (d_inner, d_state) and the D skip, output gated by SiLU(z).
5. ``out_proj`` back to d_model.

:class:`ssm.norms.ResidualBlock` turns the mixer into a pre-norm residual block (RMSNorm by default) and
:class:`ssm.norms.ResidualStack` stacks such blocks; :class:`ssm.encoders.SequenceEncoder` builds both.
:class:`CausalConv1d` and :func:`init_dt_bias` are shared with the Mamba-2 mixer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kernels import cpu_lib
from kernels.causal_conv1d_cpu import causal_conv1d_silu
from ssm.selective_scan import selective_scan
from ssm.state_update import selective_state_update

SCAN_BACKENDS = ("auto", "reference", "chunked", "triton")


def init_dt_bias(
    n: int, dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4
) -> torch.Tensor:
    """Bias (n,) such that softplus(bias) is a step size drawn log-uniformly from [dt_min, dt_max]."""
    if not 0 < dt_min <= dt_max:
        raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
    log_dt = torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
    dt = log_dt.exp().clamp(min=dt_init_floor)
    # inverse of softplus: log(exp(dt) - 1), written to stay accurate for small dt
    return dt + torch.log(-torch.expm1(-dt))


class CausalConv1d(nn.Module):
    """Depthwise causal convolution over time (each channel has its own filter of ``width`` taps).

    forward: x (batch, channels, length) -> (batch, channels, length); output t sees inputs t-width+1..t.
    step: state (batch, channels, width) holds the last ``width`` inputs; x_t (batch, channels)
    -> (state, y_t (batch, channels)).
    """

    def __init__(self, channels: int, width: int, bias: bool = True):
        super().__init__()
        if width < 1:
            raise ValueError(f"conv width (d_conv) must be >= 1, got {width}")
        self.width = width
        self.conv = nn.Conv1d(channels, channels, width, groups=channels, padding=width - 1, bias=bias)

    def forward(self, x: torch.Tensor, time_dim: int = -1) -> torch.Tensor:
        """x (batch, channels, length) by default, or (batch, length, channels) with ``time_dim=1``; returns
        the same layout."""
        # a sum of `width` shifted products: on CPU much cheaper than a grouped nn.Conv1d (whose backward
        # dominated Mamba's non-scan time) and layout-agnostic, so Mamba can stay channels-last
        if x.dim() != 3 or time_dim % 3 not in (1, 2):
            raise ValueError(f"expected a 3-D input with time on axis 1 or 2, got {tuple(x.shape)}, {time_dim}")
        time_dim %= 3
        length = x.size(time_dim)
        xp = F.pad(x, [self.width - 1, 0] if time_dim == 2 else [0, 0, self.width - 1, 0])
        w = self.conv.weight[:, 0]  # (channels, width)
        shape = (-1, 1) if time_dim == 2 else (1, -1)  # broadcast a per-channel value over the layout
        y = None
        for k in range(self.width):  # output t reads input t - width + 1 + k
            term = xp.narrow(time_dim, k, length) * w[:, k].view(shape)
            y = term if y is None else y + term
        if self.conv.bias is not None:
            y = y + self.conv.bias.view(shape)
        return y

    def forward_silu(self, x: torch.Tensor, time_dim: int = -1) -> torch.Tensor:
        """``silu(forward(x, time_dim))``; fused in one compiled kernel for channels-last CPU inputs."""
        if time_dim % 3 == 1 and x.dim() == 3 and cpu_lib.handles(x):
            return causal_conv1d_silu(x, self.conv.weight[:, 0], self.conv.bias)
        return F.silu(self.forward(x, time_dim))

    def init_state(self, batch_size: int) -> torch.Tensor:
        w = self.conv.weight
        return w.new_zeros(batch_size, w.size(0), self.width)

    def step(self, state: torch.Tensor, x_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        state = torch.cat([state[..., 1:], x_t.unsqueeze(-1)], dim=-1)
        y_t = (state * self.conv.weight[:, 0]).sum(-1)
        if self.conv.bias is not None:
            y_t = y_t + self.conv.bias
        return state, y_t


class Mamba(nn.Module):
    """Selective state-space mixer (Mamba-1 / S6).

    Args:
        d_model: input/output width.
        d_state: SSM state size N per channel.
        d_conv: width of the causal depthwise convolution.
        expand: d_inner = expand * d_model.
        dt_rank: rank of the delta projection; ``"auto"`` = ceil(d_model / 16).
        dt_min, dt_max, dt_init_floor, dt_scale: delta initialisation (see :func:`init_dt_bias`).
        scan_backend: passed to :func:`ssm.selective_scan.selective_scan` (auto|reference|chunked|triton).
        scan_chunk_size: the scan's ``chunk_size`` (steps between state checkpoints, i.e. the backward's
            recompute window, of the chunked and triton backends); None = the scan's default.

    forward: x (batch, length, d_model), mask (batch, length) bool or None -> (batch, length, d_model).
        The mask is handed to the scan (padded steps leave the SSM state untouched).
    step: state = (conv_state (batch, d_inner, d_conv), ssm_state (batch, d_inner, d_state)),
        x_t (batch, d_model) -> (state, y_t (batch, d_model)).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        dt_scale: float = 1.0,
        scan_backend: str = "auto",
        scan_chunk_size: int | None = None,
    ):
        super().__init__()
        for name, value in (("d_model", d_model), ("d_state", d_state), ("expand", expand)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if scan_backend not in SCAN_BACKENDS:
            raise ValueError(f"scan_backend must be one of {SCAN_BACKENDS}, got {scan_backend!r}")
        if scan_chunk_size is not None and scan_chunk_size < 1:
            raise ValueError(f"scan_chunk_size must be None or >= 1, got {scan_chunk_size}")
        if dt_rank == "auto":
            dt_rank = math.ceil(d_model / 16)
        if not isinstance(dt_rank, int) or dt_rank < 1:
            raise ValueError(f"dt_rank must be 'auto' or a positive int, got {dt_rank!r}")
        d_inner = expand * d_model
        self.d_inner, self.d_state, self.dt_rank = d_inner, d_state, dt_rank
        self.scan_backend, self.scan_chunk_size = scan_backend, scan_chunk_size

        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv = CausalConv1d(d_inner, d_conv)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner)
        # keep the initial delta = softplus(W r + b) close to the sampled dt: small W, b = softplus^-1(dt)
        nn.init.uniform_(self.dt_proj.weight, -dt_scale * dt_rank**-0.5, dt_scale * dt_rank**-0.5)
        with torch.no_grad():
            self.dt_proj.bias.copy_(init_dt_bias(d_inner, dt_min, dt_max, dt_init_floor))
        # S4D-real initialisation: A_n = -(n + 1) for every channel
        self.A_log = nn.Parameter(
            torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_inner, 1)
        )
        self.D = nn.Parameter(torch.ones(d_inner))
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def _ssm_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (..., d_inner) -> delta before bias and softplus (..., d_inner), B, C (..., d_state)."""
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        # the bias is left to the scan (delta_bias), which also applies the softplus
        return F.linear(dt, self.dt_proj.weight), B, C

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        # channels-last throughout; the scan takes (batch, channels, length) views
        x, z = self.in_proj(x).chunk(2, dim=-1)  # (batch, length, d_inner) each
        x = self.conv.forward_silu(x, time_dim=1)
        delta, B, C = (t.transpose(1, 2) for t in self._ssm_inputs(x))
        z = z.transpose(1, 2)
        y = selective_scan(
            x.transpose(1, 2),
            delta,
            -torch.exp(self.A_log),
            B,
            C,
            D=self.D,
            z=z,
            delta_bias=self.dt_proj.bias,
            delta_softplus=True,
            backend=self.scan_backend,
            mask=mask,
            chunk_size=self.scan_chunk_size,
        )
        return self.out_proj(y.transpose(1, 2))

    def init_state(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        ssm_state = self.A_log.new_zeros(batch_size, self.d_inner, self.d_state)
        return self.conv.init_state(batch_size), ssm_state

    def step(self, state, x_t: torch.Tensor):
        conv_state, ssm_state = state
        x_t, z_t = self.in_proj(x_t).chunk(2, dim=-1)  # (batch, d_inner) each
        conv_state, x_t = self.conv.step(conv_state, x_t)
        x_t = F.silu(x_t)
        delta, B, C = self._ssm_inputs(x_t)
        # the caller may keep the old state (streaming selects/merges users' rows): update a copy in place
        ssm_state = ssm_state.clone()
        y_t = selective_state_update(
            ssm_state,
            x_t,
            delta,
            -torch.exp(self.A_log),
            B,
            C,
            D=self.D,
            z=z_t,
            dt_bias=self.dt_proj.bias,
            dt_softplus=True,
        )
        return (conv_state, ssm_state), self.out_proj(y_t)
