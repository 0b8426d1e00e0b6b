"""Shared machinery of the implicit-feedback baselines that score with an item-item matrix.

A user's scores are ``x_u @ W`` where ``x_u`` (n_items,) is the 0/1 row of the items in the history the
model was given (``set_history``) and ``W`` (n_items, n_items) is learned from the training interactions
(ItemKNN: sparse cosine neighbours, EASE: Steck's closed form). Folding in a user unseen in training is
therefore free: its row comes from its history.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ghrs.data.dataset import RatingsDataset
from ghrs.data.splits import Split
from ghrs.models.base import Recommender


def interaction_matrix(table: pd.DataFrame, n_users: int, n_items: int) -> sp.csr_matrix:
    """(n_users, n_items) float32 CSR with a 1 for every (user, item) pair in ``table``."""
    m = sp.csr_matrix((np.ones(len(table), np.float32), (table["user"].to_numpy(), table["item"].to_numpy())),
                      shape=(n_users, n_items))
    m.data[:] = 1.0  # duplicates (user, item) would have summed
    return m


def validation_metric(model: Recommender, dataset: RatingsDataset, train: pd.DataFrame, valid: pd.DataFrame,
                      metric: str = "ndcg@10") -> float:
    """A top-k ``metric`` (e.g. ``ndcg@10``) of ``model`` on ``valid``, every validation item relevant and
    the training items masked (the model's history is set to ``train``)."""
    from ghrs.evaluation import evaluate  # evaluation imports the models' base; avoid an import cycle

    k = int(metric.split("@")[1])
    inner = Split("inner-valid", train, valid, valid.iloc[:0], valid.iloc[:0], relevant_min_rating=None)
    m = evaluate(model, dataset, inner, "valid", (k,), rating_metrics=False, progress=False)
    return float(m.get(metric, 0.0))


class ItemItemRecommender(Recommender):
    """Ranking-only base: subclasses set ``self.weights`` (n_items, n_items), dense ndarray or sparse."""

    predicts_ratings = False
    weights: np.ndarray | sp.spmatrix

    def set_history(self, history: pd.DataFrame) -> None:
        self.history = history
        self.x = interaction_matrix(history, self.dataset.n_users, self.dataset.n_items)

    def _grow_users(self, n_old: int, n_new: int) -> None:
        self.set_history(self.history)

    def score(self, users: np.ndarray) -> np.ndarray:
        """users (B,) -> (B, n_items) float32 scores ``X[users] @ W``."""
        s = self.x[np.asarray(users, dtype=np.int64)] @ self.weights
        return np.asarray(s.todense() if sp.issparse(s) else s, dtype=np.float32)

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} is a ranking model: it predicts no ratings "
                                  "(use score / top-k metrics)")
