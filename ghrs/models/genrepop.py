"""Genre-preference baseline for cold items (``model=genrepop``).

A user's genre preference ``p_u`` (n_genres,) is the share of the user's history in each genre (an
item with g genres adds 1/g to each of them); an item's score is ``p_u · g_i`` with ``g_i`` its genre
multi-hot, i.e. the summed preference of the user for the item's genres. Uses item content only, so it
scores items without any interaction; popularity (log training count) breaks ties at 1e-6 weight.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

import numpy as np
import pandas as pd

from ghrs.data.dataset import RatingsDataset
from ghrs.errors import UserError
from ghrs.features.item_features import encode_item_side
from ghrs.models.item_item import ItemItemRecommender


def genre_matrix(items: pd.DataFrame) -> np.ndarray:
    """(n_items, n_genres) 0/1 genre multi-hot of an item side table (its ``genre=`` columns, or every
    side feature column when the table has no ``genres``)."""
    x, names = encode_item_side(items)
    cols = [k for k, n in enumerate(names) if n.startswith("genre=")] or list(range(len(names)))
    return x[:, cols].astype(np.float32)


class GenrePopRecommender(ItemItemRecommender):
    """See the module docstring. ``smoothing``: pseudo-count of the global genre shares mixed into every
    user's preference (users with short histories lean on the population's taste)."""

    def __init__(self, smoothing: float = 1.0):
        if smoothing < 0:
            raise UserError(f"genrepop: smoothing must be >= 0, got {smoothing}")
        self.smoothing = float(smoothing)

    def fit(self, dataset: RatingsDataset, train: pd.DataFrame, valid=None, run_dir: Path | None = None) -> Self:
        self.dataset = dataset
        g = genre_matrix(dataset.items)
        if g.shape[1] == 0:
            raise UserError("genrepop needs item genres (or other item side features); the item table has none")
        self.genres_ = g
        per_item = g / np.maximum(g.sum(1, keepdims=True), 1.0)  # each item spreads 1 over its genres
        counts = np.bincount(train["item"].to_numpy(), minlength=dataset.n_items).astype(np.float64)
        self.global_share_ = (counts @ per_item) / max(1.0, counts.sum())
        self.popularity_ = np.log1p(counts).astype(np.float32)
        self.weights = per_item  # X @ per_item = each user's genre counts
        self.set_history(train)
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        """users (B,) -> (B, n_items) float32: ``p_u · g_i`` + 1e-6 log(1 + training count)."""
        counts = super().score(users).astype(np.float64)  # (B, n_genres) genre counts of the history
        n = counts.sum(1, keepdims=True)
        pref = (counts + self.smoothing * self.global_share_[None, :]) / (n + self.smoothing + 1e-12)
        return (pref @ self.genres_.T + 1e-6 * self.popularity_[None, :]).astype(np.float32)
