"""GRU sequence body (GRU4Rec-style, Hidasi et al. 2016): a multi-layer ``torch.nn.GRU`` over the embedded
sequence, with the same forward / init_state / step interface as :class:`ssm.norms.ResidualStack`."""

from __future__ import annotations

import torch
from torch import nn


class GRUStack(nn.Module):
    """``n_layers`` stacked GRU layers of width d_model, dropout between layers.

    forward: x (batch, length, d_model), mask (batch, length) bool or None -> (batch, length, d_model).
        The GRU is causal, so with right padding (what :class:`ssm.encoders.SequenceEncoder` feeds) padded
        steps come after every real one and cannot affect it; the mask is therefore not needed.
    step: state (batch, n_layers, d_model), x_t (batch, d_model) -> (state, y_t (batch, d_model)).
    """

    def __init__(self, d_model: int, n_layers: int = 1, dropout: float = 0.0):
        super().__init__()
        # nn.GRU applies its dropout between layers only, and warns when there is a single layer
        self.gru = nn.GRU(
            d_model, d_model, n_layers, batch_first=True, dropout=dropout if n_layers > 1 else 0.0
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.gru(x)[0]

    def init_state(self, batch_size: int) -> torch.Tensor:
        """Hidden state (batch, num_layers, hidden): batch first, like every stream state in ``ssm``."""
        w = self.gru.weight_hh_l0
        return w.new_zeros(batch_size, self.gru.num_layers, self.gru.hidden_size)

    def step(self, state: torch.Tensor, x_t: torch.Tensor):
        # nn.GRU wants its hidden state as (num_layers, batch, hidden)
        y, h = self.gru(x_t.unsqueeze(1), state.transpose(0, 1).contiguous())
        return h.transpose(0, 1), y[:, 0]
