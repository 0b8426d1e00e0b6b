"""Baseline predictor: global mean + user bias + item bias (regularised ALS, as in Koren 2010)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Self

import numpy as np
import pandas as pd

from ghrs.data.dataset import RatingsDataset
from ghrs.models.base import Recommender

log = logging.getLogger(__name__)


def fit_biases(
    users: np.ndarray,
    items: np.ndarray,
    ratings: np.ndarray,
    n_users: int,
    n_items: int,
    reg_user: float,
    reg_item: float,
    n_epochs: int,
    mu: float | None = None,
) -> tuple[float, np.ndarray, np.ndarray]:
    """Alternating closed-form updates of ``r ~ mu + b_u + b_i``.

    Shapes: ``users, items, ratings``: (n,). Returns ``(mu, b_user (n_users,), b_item (n_items,))``;
    users and items without ratings keep a zero bias.
    """
    mu = float(ratings.mean()) if mu is None else mu
    b_u = np.zeros(n_users)
    b_i = np.zeros(n_items)
    n_u = np.bincount(users, minlength=n_users)
    n_i = np.bincount(items, minlength=n_items)
    for _ in range(n_epochs):
        b_i = np.bincount(items, ratings - mu - b_u[users], n_items) / (reg_item + n_i)
        b_u = np.bincount(users, ratings - mu - b_i[items], n_users) / (reg_user + n_u)
    return mu, b_u, b_i


class BiasRecommender(Recommender):
    """``r(u, i) = mu + b_u + b_i``; a cold user's bias is folded in from the history given at prediction.

    Args:
        reg_user, reg_item: shrinkage of the biases towards 0 (Surprise's defaults: 15 and 10).
        n_epochs: ALS sweeps.
    """

    def __init__(self, reg_user: float = 15.0, reg_item: float = 10.0, n_epochs: int = 10):
        if reg_user < 0 or reg_item < 0 or n_epochs < 1:
            raise ValueError("bias model: regularisation must be >= 0 and n_epochs >= 1")
        self.reg_user, self.reg_item, self.n_epochs = reg_user, reg_item, n_epochs

    def fit(self, dataset: RatingsDataset, train: pd.DataFrame, valid=None, run_dir: Path | None = None) -> Self:
        self.dataset = dataset
        u, i = train["user"].to_numpy(), train["item"].to_numpy()
        r = train["rating"].to_numpy(np.float64)
        self.mu, self.b_user, self.b_item = fit_biases(
            u, i, r, dataset.n_users, dataset.n_items, self.reg_user, self.reg_item, self.n_epochs
        )
        self.trained_users = np.bincount(u, minlength=dataset.n_users) > 0
        self.history = train
        return self

    def set_history(self, history: pd.DataFrame) -> None:
        """Fold in users unseen by ``fit``: their bias from their history, item biases fixed."""
        self.history = history
        cold = ~self.trained_users[history["user"].to_numpy()]
        h = history[cold]
        u, i = h["user"].to_numpy(), h["item"].to_numpy()
        resid = h["rating"].to_numpy(np.float64) - self.mu - self.b_item[i]
        n = self.dataset.n_users
        b_cold = np.bincount(u, resid, n) / (self.reg_user + np.bincount(u, minlength=n))
        self.b_user = np.where(self.trained_users, self.b_user, b_cold)

    def _grow_users(self, n_old: int, n_new: int) -> None:
        self.b_user = np.concatenate([self.b_user, np.zeros(n_new - n_old)])
        self.trained_users = np.concatenate([self.trained_users, np.zeros(n_new - n_old, bool)])

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.clip(self.mu + self.b_user[users] + self.b_item[items])

    def score(self, users: np.ndarray) -> np.ndarray:
        return (self.mu + self.b_user[np.asarray(users)][:, None] + self.b_item[None, :]).astype(np.float32)
