"""SASRec-style causal self-attention (Kang & McAuley 2018) as two mixers for pre-LN transformer blocks:
:class:`CausalSelfAttention` and the position-wise :class:`FeedForward`. :class:`ssm.encoders.SequenceEncoder`
adds the learned positional embeddings and builds each transformer layer as
``ResidualBlock(CausalSelfAttention)`` followed by ``ResidualBlock(FeedForward)``.

Streaming: :meth:`CausalSelfAttention.step` keeps a key/value cache, so stepping re-uses every earlier
position exactly as the full pass does (cost per step grows with the history length).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with an optional key-padding mask.

    Args:
        d_model: width; must be divisible by ``n_heads``.
        n_heads: number of heads.
        dropout: dropout on the attention weights (training only).

    forward: x (batch, length, d_model), mask (batch, length) bool or None -> (batch, length, d_model).
        Query t attends to keys s <= t that are real (mask True); every query may attend to itself, so a
        fully padded row yields a finite output instead of NaN.
    step: state = (keys, values), each (batch, n_heads, steps so far, d_model / n_heads),
        x_t (batch, d_model) -> (state, y_t (batch, d_model)).
    """

    def __init__(self, d_model: int, n_heads: int = 2, dropout: float = 0.0):
        super().__init__()
        if n_heads < 1 or d_model % n_heads:
            raise ValueError(f"n_heads ({n_heads}) must be >= 1 and divide d_model ({d_model})")
        self.n_heads, self.dropout = n_heads, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def _qkv(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (batch, length, d_model) -> q, k, v each (batch, n_heads, length, d_model / n_heads)."""
        batch, length, _ = x.shape
        qkv = self.qkv(x).view(batch, length, 3, self.n_heads, -1)
        return list(qkv.permute(2, 0, 3, 1, 4).unbind(0))

    def _merge(self, y: torch.Tensor) -> torch.Tensor:
        """(batch, n_heads, length, head_dim) -> (batch, length, d_model) through the output projection."""
        return self.out_proj(y.transpose(1, 2).flatten(2))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self._qkv(x)
        p = self.dropout if self.training else 0.0
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        else:
            length = x.size(1)
            causal = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
            eye = torch.eye(length, dtype=torch.bool, device=x.device)
            allowed = causal & (mask[:, None, None, :] | eye)  # (batch, 1, length, length)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)
        return self._merge(y)

    def init_state(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.qkv.weight
        empty = w.new_zeros(batch_size, self.n_heads, 0, w.size(1) // self.n_heads)
        return empty, empty

    def step(self, state, x_t: torch.Tensor):
        q, k, v = self._qkv(x_t.unsqueeze(1))
        keys, values = torch.cat([state[0], k], dim=2), torch.cat([state[1], v], dim=2)
        # the cache holds only the past and the present, so no mask is needed
        y = F.scaled_dot_product_attention(q, keys, values)
        return (keys, values), self._merge(y)[:, 0]


class FeedForward(nn.Module):
    """Position-wise feed-forward mixer: Linear(d_model, d_ff) -> GELU -> Dropout -> Linear(d_ff, d_model).

    forward: x (..., d_model) -> (..., d_model); the mask is not needed (nothing mixes across positions).
    step: stateless (state None).
    """

    def __init__(self, d_model: int, d_ff: int | None = None, dropout: float = 0.0):
        super().__init__()
        d_ff = 4 * d_model if d_ff is None else d_ff
        if d_ff < 1:
            raise ValueError(f"d_ff must be >= 1, got {d_ff}")
        self.net = nn.Sequential(
            nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x)

    def init_state(self, batch_size: int) -> None:
        return None

    def step(self, state: None, x_t: torch.Tensor):
        return None, self.net(x_t)
