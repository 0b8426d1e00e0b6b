"""Swappable sequence encoders: item (+ feature) embeddings followed by one of several causal layer stacks.

``layer`` picks the stack:

- ``mamba``: Mamba (S6) mixers in pre-norm residual blocks (:mod:`ssm.mamba`).
- ``mamba2``: Mamba-2 / SSD mixers in pre-norm residual blocks (:mod:`ssm.mamba2`).
- ``s4d``: S4D mixers in pre-norm residual blocks (:mod:`ssm.s4d`).
- ``sasrec``: pre-LN transformer layers (causal self-attention + feed-forward) with learned positional
  embeddings (:mod:`ssm.attention`).
- ``gru``: a multi-layer GRU (:mod:`ssm.gru`).
- ``none``: no sequence signal; outputs have width 0 (``out_dim == 0``).

Padding: sequences may be right- or left-padded (item id 0). Left-padded batches are rotated to right
padding before the layers and back afterwards. With right padding every padded step comes after all real
steps of its row, so causal layers cannot let padding leak into real positions; this holds for every layer
type at once, including the time-invariant S4D convolution and the convolutions inside Mamba that a mask
alone would not fix. Real positions are therefore identical for left, right or no padding. Positions count
from each user's first real item (for the positional embeddings of ``sasrec`` too). Outputs at padded
positions are zero.

Streaming: ``init_state`` / ``step`` feed one item per user at a time (every user of the batch advances
together). In eval mode the output of step t equals position t of ``forward`` on the same prefix. A user
whose history is shorter can be right-padded with any item id: its outputs up to its true last step are
unaffected by what follows. ``sasrec`` streams through a key/value cache (at most ``max_len`` steps);
``none`` returns width-0 outputs.
"""

from __future__ import annotations

import inspect
from typing import Any, NamedTuple

import torch
from torch import nn

from ssm.attention import CausalSelfAttention, FeedForward
from ssm.gru import GRUStack
from ssm.mamba import Mamba
from ssm.mamba2 import Mamba2
from ssm.norms import ResidualBlock, ResidualStack
from ssm.s4d import S4D

LAYERS = ("mamba", "mamba2", "s4d", "sasrec", "gru", "none")

# mixers making up one layer of each residual-stack encoder, and that stack's default norm
_MIXERS: dict[str, tuple[type[nn.Module], ...]] = {
    "mamba": (Mamba,),
    "mamba2": (Mamba2,),
    "s4d": (S4D,),
    "sasrec": (CausalSelfAttention, FeedForward),
}
_DEFAULT_NORM = {"mamba": "rms", "mamba2": "rms", "s4d": "layer", "sasrec": "layer"}


class StreamState(NamedTuple):
    """Streaming state of :class:`SequenceEncoder`: steps taken so far and the layer stack's own state."""

    position: int
    layers: Any


def _mixer_options(cls: type[nn.Module]) -> set[str]:
    """Keyword options of a mixer that users may set (d_model and dropout come from the encoder)."""
    return set(inspect.signature(cls).parameters) - {"d_model", "dropout"}


def _build_body(layer: str, d_model: int, n_layers: int, dropout: float, options: dict) -> nn.Module | None:
    """The layer stack for ``layer`` (None for ``none``); raises ValueError for options it does not take."""
    mixers = _MIXERS.get(layer, ())
    allowed = set().union(*map(_mixer_options, mixers)) | ({"norm"} if mixers else set())
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for layer {layer!r}; it accepts {sorted(allowed) or 'none'}"
        )
    if layer == "none":
        return None
    if layer == "gru":
        return GRUStack(d_model, n_layers, dropout)
    norm = options.get("norm", _DEFAULT_NORM[layer])  # make_norm rejects unknown kinds
    blocks = []
    for _ in range(n_layers):
        for cls in mixers:
            params = inspect.signature(cls).parameters
            kwargs = {k: v for k, v in options.items() if k in params}
            if "dropout" in params:
                kwargs["dropout"] = dropout
            blocks.append(ResidualBlock(cls(d_model, **kwargs), d_model, norm=norm, dropout=dropout))
    return ResidualStack(blocks, d_model, norm=norm)


def _rotate_rows(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate each row of x (batch, length, ...) left by shift[b] positions along the length axis."""
    batch, length = x.shape[:2]
    index = (torch.arange(length, device=x.device) + shift.unsqueeze(1)) % length
    index = index.view(batch, length, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, index)


class SequenceEncoder(nn.Module):
    """Encodes users' item sequences into per-position states and a final state per user.

    Args:
        n_items: number of items; sequence ids are 1..n_items and 0 is padding.
        n_features: per-step features (e.g. rating, log time gap) projected and added to the embeddings.
        layer: one of ``mamba, mamba2, s4d, sasrec, gru, none``.
        d_model: width of embeddings and states.
        n_layers: number of stacked layers.
        dropout: dropout on embeddings and on each residual branch (and attention weights / between GRU
            layers).
        max_len: longest sequence (``sasrec`` has max_len positional embeddings; other layers do not
            depend on it).
        **layer_kwargs: options of the chosen layer, e.g. mamba: d_state, d_conv, expand, dt_rank,
            scan_backend, scan_chunk_size; mamba2: d_state, d_conv, expand, headdim, ngroups, chunk_size;
            s4d: d_state, init; sasrec: n_heads, d_ff; all residual stacks: norm (``rms`` or ``layer``).
            gru and none take none.

    Attributes:
        item_embedding: ``nn.Embedding(n_items + 1, out_dim, padding_idx=0)``, may be tied to an output layer.
        out_dim: d_model, or 0 for ``none``.
    """

    def __init__(
        self,
        n_items: int,
        n_features: int = 0,
        layer: str = "mamba",
        d_model: int = 64,
        n_layers: int = 2,
        dropout: float = 0.1,
        max_len: int = 200,
        **layer_kwargs,
    ):
        super().__init__()
        if layer not in LAYERS:
            raise ValueError(f"unknown layer {layer!r}; choose one of {LAYERS}")
        for name, value, low in (
            ("n_items", n_items, 1),
            ("n_features", n_features, 0),
            ("d_model", d_model, 1),
            ("n_layers", n_layers, 1),
            ("max_len", max_len, 1),
        ):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.layer, self.n_items, self.n_features, self.max_len = layer, n_items, n_features, max_len
        self.out_dim = 0 if layer == "none" else d_model

        self.body = _build_body(layer, d_model, n_layers, dropout, dict(layer_kwargs))
        self.item_embedding = nn.Embedding(n_items + 1, self.out_dim, padding_idx=0)
        nn.init.normal_(self.item_embedding.weight, std=0.02)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        self.position_embedding = None
        if layer == "sasrec":
            self.position_embedding = nn.Embedding(max_len, d_model)
            nn.init.normal_(self.position_embedding.weight, std=0.02)
        self.feature_proj = nn.Linear(n_features, d_model) if n_features and self.out_dim else None
        self.dropout = nn.Dropout(dropout)

    def _check_features(self, features: torch.Tensor | None, lead: tuple[int, ...]) -> None:
        if self.n_features and features is None:
            raise ValueError(f"this encoder was built with n_features={self.n_features}; pass features")
        if features is not None and tuple(features.shape) != (*lead, self.n_features):
            raise ValueError(
                f"features must have shape {(*lead, self.n_features)}, got {tuple(features.shape)}"
            )

    def _embed(self, items: torch.Tensor, features: torch.Tensor | None, start: int = 0) -> torch.Tensor:
        """items (batch, length), features (batch, length, n_features) or None -> (batch, length, out_dim);
        ``start`` is the position index of the first column."""
        x = self.item_embedding(items)
        if self.position_embedding is not None:
            x = x + self.position_embedding(torch.arange(start, start + items.size(1), device=items.device))
        if self.feature_proj is not None:
            x = x + self.feature_proj(features)
        return self.dropout(x)

    def forward(
        self,
        items: torch.Tensor,
        lengths: torch.Tensor,
        features: torch.Tensor | None = None,
        padding: str = "right",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a padded batch.

        Args:
            items: (batch, length) long item ids, 0 = padding.
            lengths: (batch,) long number of real items per row (0 allowed).
            features: (batch, length, n_features) float, required iff n_features > 0.
            padding: ``"right"`` (real items first) or ``"left"`` (real items last).

        Returns:
            states (batch, length, out_dim): the state after each position, zero at padding, in the
                input's padding layout; final (batch, out_dim): the state at each row's last real item
                (zero for empty rows).
        """
        if padding not in ("left", "right"):
            raise ValueError(f"padding must be 'left' or 'right', got {padding!r}")
        if items.dim() != 2:
            raise ValueError(f"items must be (batch, length), got shape {tuple(items.shape)}")
        batch, length = items.shape
        if tuple(lengths.shape) != (batch,):
            raise ValueError(f"lengths must have shape ({batch},), got {tuple(lengths.shape)}")
        if batch and (lengths.min() < 0 or lengths.max() > length):
            raise ValueError(f"lengths must lie in [0, {length}]")
        if self.position_embedding is not None and length > self.max_len:
            raise ValueError(f"sequence length {length} exceeds max_len={self.max_len}")
        self._check_features(features, (batch, length))

        lengths = lengths.to(items.device)
        shift = length - lengths  # left padding: row b's real items start at column shift[b]
        if padding == "left":
            items = _rotate_rows(items, shift)
            features = None if features is None else _rotate_rows(features, shift)
        mask = torch.arange(length, device=items.device) < lengths.unsqueeze(1)
        keep = mask.unsqueeze(-1)
        states = self._embed(items, features) * keep
        if self.body is not None:
            states = self.body(states, mask) * keep
        final = states[torch.arange(batch, device=items.device), (lengths - 1).clamp(min=0)]
        final = final * (lengths > 0).unsqueeze(-1)
        if padding == "left":
            states = _rotate_rows(states, -shift)
        return states, final

    def init_state(self, batch_size: int) -> StreamState:
        """Streaming state before the first item."""
        return StreamState(0, None if self.body is None else self.body.init_state(batch_size))

    def step(
        self, state: StreamState, item_t: torch.Tensor, features_t: torch.Tensor | None = None
    ) -> tuple[StreamState, torch.Tensor]:
        """Advance every user by one item.

        Args:
            state: from :meth:`init_state` or a previous step.
            item_t: (batch,) long item ids.
            features_t: (batch, n_features), required iff n_features > 0.

        Returns:
            (new state, y_t (batch, out_dim)); y_t equals ``forward``'s state at this position (eval mode).
        """
        if item_t.dim() != 1:
            raise ValueError(f"item_t must be (batch,), got shape {tuple(item_t.shape)}")
        self._check_features(features_t, (item_t.size(0),))
        if self.position_embedding is not None and state.position >= self.max_len:
            raise ValueError(f"cannot step past max_len={self.max_len} positions")
        x = self._embed(item_t[:, None], None if features_t is None else features_t[:, None], state.position)
        if self.body is None:
            return StreamState(state.position + 1, None), x[:, 0]
        layers, y_t = self.body.step(state.layers, x[:, 0])
        return StreamState(state.position + 1, layers), y_t
