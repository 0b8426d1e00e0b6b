"""Normalisation layers and the pre-norm residual wrappers that every stacked sequence layer shares.

Mixer interface (what :class:`ResidualBlock` wraps; implemented by ``Mamba``, ``Mamba2``, ``S4D``,
``CausalSelfAttention`` and ``FeedForward``):

- ``forward(x, mask=None)``: x (batch, length, d_model) -> (batch, length, d_model); mask (batch, length)
  bool, True = real position. Mixers are causal; each documents what it does with the mask.
- ``init_state(batch_size)``: the streaming state before the first step: None, a tensor or a tuple of
  tensors, every tensor with the batch as its first dimension (so callers can select or merge users' rows).
- ``step(state, x_t)``: x_t (batch, d_model) -> (new_state, y_t (batch, d_model)); one time step, equal to
  position t of ``forward`` on the whole prefix (in eval mode).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("rms", "layer")


def make_norm(kind: str, dim: int, eps: float = 1e-5) -> nn.Module:
    """``"rms"`` -> RMSNorm, ``"layer"`` -> LayerNorm, both over the last dimension of size ``dim``."""
    if kind == "rms":
        return nn.RMSNorm(dim, eps=eps)
    if kind == "layer":
        return nn.LayerNorm(dim, eps=eps)
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


class GatedRMSNorm(nn.Module):
    """RMSNorm of ``y * SiLU(z)`` (the gate is applied before normalising, as in Mamba-2).

    y, z: (..., dim) -> (..., dim).
    """

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(y * F.silu(z), (y.size(-1),), self.weight, self.eps)


class ResidualBlock(nn.Module):
    """Pre-norm residual block around a mixer: ``x + Dropout(mixer(Norm(x)))``.

    forward: x (batch, length, d_model), mask (batch, length) bool or None -> (batch, length, d_model).
    step: x_t (batch, d_model) -> (state, y_t (batch, d_model)); the state is the mixer's.
    """

    def __init__(self, mixer: nn.Module, d_model: int, norm: str = "rms", dropout: float = 0.0):
        super().__init__()
        self.norm = make_norm(norm, d_model)
        self.mixer = mixer
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return x + self.dropout(self.mixer(self.norm(x), mask=mask))

    def init_state(self, batch_size: int):
        return self.mixer.init_state(batch_size)

    def step(self, state, x_t: torch.Tensor):
        state, y_t = self.mixer.step(state, self.norm(x_t))
        return state, x_t + self.dropout(y_t)


class ResidualStack(nn.Module):
    """A sequence of residual blocks followed by a final norm (needed with pre-norm blocks, whose residual
    stream is otherwise never normalised).

    forward: x (batch, length, d_model), mask -> (batch, length, d_model).
    step: state (list, one entry per block), x_t (batch, d_model) -> (state, y_t (batch, d_model)).
    """

    def __init__(self, blocks: list[nn.Module], d_model: int, norm: str = "rms"):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.norm = make_norm(norm, d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, mask=mask)
        return self.norm(x)

    def init_state(self, batch_size: int) -> list:
        return [block.init_state(batch_size) for block in self.blocks]

    def step(self, state: list, x_t: torch.Tensor):
        new_state = []
        for block, block_state in zip(self.blocks, state, strict=True):
            block_state, x_t = block.step(block_state, x_t)
            new_state.append(block_state)
        return new_state, self.norm(x_t)
