"""Most-popular baseline (``model=pop``): every user gets the items with the most training interactions."""

from __future__ import annotations

from pathlib import Path
from typing import Self

import numpy as np
import pandas as pd

from ghrs.data.dataset import RatingsDataset
from ghrs.models.base import Recommender


class PopRecommender(Recommender):
    """Scores every item by its number of training interactions (seen items are masked by the evaluation).

    Args:
        positive_min_rating: count only ratings >= this (None: every interaction counts).
    """

    predicts_ratings = False

    def __init__(self, positive_min_rating: float | None = None):
        self.positive_min_rating = positive_min_rating

    def fit(self, dataset: RatingsDataset, train: pd.DataFrame, valid=None, run_dir: Path | None = None) -> Self:
        self.dataset = dataset
        pos = train if self.positive_min_rating is None else train[train["rating"] >= self.positive_min_rating]
        self.counts_ = np.bincount(pos["item"].to_numpy(), minlength=dataset.n_items).astype(np.float32)
        self.history = train
        return self

    def _grow_users(self, n_old: int, n_new: int) -> None:
        pass  # no per-user state

    def score(self, users: np.ndarray) -> np.ndarray:
        """users (B,) -> (B, n_items): the same popularity row for everyone."""
        return np.broadcast_to(self.counts_, (len(np.asarray(users)), len(self.counts_))).copy()

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        raise NotImplementedError("pop is a ranking model: it predicts no ratings (use score / top-k metrics)")
