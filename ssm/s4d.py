"""S4D mixer (Gu, Gupta, Goel & Re 2022, "On the Parameterization and Initialization of Diagonal State
Space Models").

Each of the d_model channels is an independent linear time-invariant SSM with a diagonal complex A
(d_state / 2 modes; the conjugate modes are implied, hence the 2 Re(.) below):

    s_t = exp(dt A) s_{t-1} + u_t          y_t = 2 Re(C' s_t) + D u_t,     C' = C (exp(dt A) - 1) / A

(zero-order hold with B folded into C). Unrolled, y = K * u + D u with the causal kernel
K_l = 2 Re(C' exp(dt A)^l), computed as a Vandermonde product and applied by FFT convolution (both signals
zero-padded to 2L so the circular convolution equals the linear one). :meth:`S4D.step` runs the same
system as a recurrence with a complex state.

Padding: :meth:`S4D.forward` zeroes padded inputs; with a time-invariant kernel, zeros before a sequence
then contribute nothing to it within this layer. Stacked layers (norms, biases) make padded positions
non-zero again, which is why :class:`ssm.encoders.SequenceEncoder` feeds right-padded sequences only (it
moves left padding to the right and back): with causal layers, positions after a sequence cannot affect it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

S4D_INITS = ("lin", "inv")


def fft_causal_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Causal convolution y_t = sum_{l<=t} k_l u_{t-l}. u (..., H, L), k (H, L) -> (..., H, L)."""
    length = u.size(-1)
    n = 2 * length  # padding to 2L turns the FFT's circular convolution into a linear one
    y = torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(k, n=n), n=n)
    return y[..., :length]


class S4D(nn.Module):
    """Diagonal state-space mixer with S4D-Lin or S4D-Inv initialisation.

    Args:
        d_model: channels H (each with its own SSM).
        d_state: state size N per channel (even; N / 2 complex modes are stored).
        init: ``"lin"`` (A_n = -1/2 + i pi n) or ``"inv"`` (A_n = -1/2 + i N/pi (N / (2n + 1) - 1)).
        dt_min, dt_max: step sizes drawn log-uniformly per channel.

    forward: x (batch, length, d_model), mask (batch, length) bool or None -> (batch, length, d_model).
        The SSM output goes through GELU and a GLU output projection.
    step: state (batch, d_model, d_state / 2) complex, x_t (batch, d_model) -> (state, y_t (batch, d_model)).
    """

    def __init__(
        self, d_model: int, d_state: int = 64, init: str = "lin", dt_min: float = 1e-3, dt_max: float = 0.1
    ):
        super().__init__()
        if d_model < 1:
            raise ValueError(f"d_model must be >= 1, got {d_model}")
        if d_state < 2 or d_state % 2:
            raise ValueError(f"S4D d_state must be a positive even number, got {d_state}")
        if init not in S4D_INITS:
            raise ValueError(f"S4D init must be one of {S4D_INITS}, got {init!r}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        modes = d_state // 2
        n = torch.arange(modes, dtype=torch.float32)
        if init == "lin":
            imag = math.pi * n
        else:
            imag = d_state / math.pi * (d_state / (2 * n + 1) - 1)

        self.log_dt = nn.Parameter(
            torch.rand(d_model) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        )
        self.log_A_real = nn.Parameter(torch.full((d_model, modes), math.log(0.5)))
        self.A_imag = nn.Parameter(imag.repeat(d_model, 1))
        # complex C stored as real pairs (d_model, modes, 2) so optimisers and weight decay see real tensors
        self.C = nn.Parameter(torch.view_as_real(torch.randn(d_model, modes, dtype=torch.cfloat)))
        self.D = nn.Parameter(torch.randn(d_model))
        self.out_proj = nn.Linear(d_model, 2 * d_model)

    def _discrete(self) -> tuple[torch.Tensor, torch.Tensor]:
        """ZOH discretisation: (dt A, C') both complex (d_model, d_state / 2)."""
        A = torch.complex(-torch.exp(self.log_A_real), self.A_imag)
        dtA = A * torch.exp(self.log_dt).unsqueeze(-1)
        return dtA, torch.view_as_complex(self.C) * torch.expm1(dtA) / A

    def kernel(self, length: int) -> torch.Tensor:
        """Convolution kernel K (d_model, length), K_l = 2 Re(sum_n C'_n exp(dt A_n)^l)."""
        dtA, C = self._discrete()
        steps = torch.arange(length, device=dtA.device, dtype=torch.float32)
        vandermonde = torch.exp(dtA.unsqueeze(-1) * steps)  # (d_model, modes, length)
        return 2 * torch.einsum("hn,hnl->hl", C, vandermonde).real

    def _output(self, y: torch.Tensor) -> torch.Tensor:
        """SSM output (..., d_model) -> GELU -> GLU projection (..., d_model)."""
        return F.glu(self.out_proj(F.gelu(y)), dim=-1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None:
            x = x * mask.unsqueeze(-1)
        u = x.transpose(1, 2)  # (batch, d_model, length)
        y = fft_causal_conv(u, self.kernel(u.size(-1))) + self.D.unsqueeze(-1) * u
        return self._output(y.transpose(1, 2))

    def init_state(self, batch_size: int) -> torch.Tensor:
        return torch.zeros(batch_size, *self.log_A_real.shape, dtype=torch.cfloat, device=self.D.device)

    def step(self, state: torch.Tensor, x_t: torch.Tensor):
        dtA, C = self._discrete()
        state = torch.exp(dtA) * state + x_t.unsqueeze(-1)
        y_t = 2 * (C * state).sum(-1).real + self.D * x_t
        return state, self._output(y_t)
