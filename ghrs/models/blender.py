"""Stacking: a linear blender of base rating predictions, fitted on their out-of-fold predictions.

The hybrid's rating base combines K base predictors (GHRS's agreement-kNN, AutoRec, the baseline kNN, ...).
Each training rating gets every base's prediction from models fitted without it (out of fold), and the
blender learns ``y ~ f(predictions)`` on those: in-sample predictions would favour whichever base
overfits the training ratings most.

``support=True`` lets the weights depend on how much the bases knew: the design adds ``log1p(n_u)`` and
``log1p(n_i)`` (the user's and the item's rating counts in the history the bases predicted from) and
their products with every prediction, so e.g. a neighbourhood model can weigh more for users with long
histories. Coefficients are ridge-regularised least squares on standardised support columns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Self

import numpy as np
import pandas as pd

from ghrs.errors import UserError

if TYPE_CHECKING:
    from ghrs.data.dataset import RatingsDataset
    from ghrs.models.base import Recommender


def out_of_fold(factories: Mapping[str, Callable[[], Recommender]], dataset: RatingsDataset, train: pd.DataFrame,
                n_folds: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every base's prediction of every training rating by a model fitted on the other folds.

    Returns ``(preds (n, K) in factories' order, n_user (n,), n_item (n,))``: the counts are the user's and
    the item's ratings in the history the fold's models predicted from (the blender's support columns).
    Folds are drawn per rating from ``seed``.
    """
    fold = np.random.default_rng(seed).integers(0, n_folds, len(train))
    users, items = train["user"].to_numpy(), train["item"].to_numpy()
    preds = np.empty((len(train), len(factories)))
    n_user, n_item = np.empty(len(train)), np.empty(len(train))
    for f in range(n_folds):
        held = fold == f
        rest = train[~held]
        for k, make in enumerate(factories.values()):
            model = make().fit(dataset, rest)
            model.set_history(rest)
            preds[held, k] = model.predict(users[held], items[held])
        n_user[held] = np.bincount(users[~held], minlength=dataset.n_users)[users[held]]
        n_item[held] = np.bincount(items[~held], minlength=dataset.n_items)[items[held]]
    return preds, n_user, n_item


class LinearBlender:
    """Least-squares blend ``w . design(preds, n_user, n_item)``.

    Args:
        support: add the count-dependent columns (see the module docstring).
        ridge: L2 penalty on every coefficient but the intercept, in units of rows (0: plain least squares).
    """

    def __init__(self, support: bool = False, ridge: float = 0.0):
        if ridge < 0:
            raise UserError(f"blender ridge must be >= 0, got {ridge}")
        self.support, self.ridge = bool(support), float(ridge)

    def _design(self, preds: np.ndarray, n_user: np.ndarray, n_item: np.ndarray) -> np.ndarray:
        """preds (n, K), n_user (n,), n_item (n,) -> (n, d) design; d = 1 + K, or 3 + 3K with support."""
        cols = [np.ones(len(preds)), *preds.T]
        if self.support:
            s = (np.column_stack([np.log1p(n_user), np.log1p(n_item)]) - self.support_mean_) / self.support_std_
            cols += [*s.T, *(preds * s[:, :1]).T, *(preds * s[:, 1:]).T]
        return np.column_stack(cols)

    def fit(self, preds: np.ndarray, n_user: np.ndarray, n_item: np.ndarray, y: np.ndarray) -> Self:
        """preds (n, K) out-of-fold base predictions, n_user / n_item (n,) counts, y (n,) ratings."""
        s = np.column_stack([np.log1p(n_user), np.log1p(n_item)])
        self.support_mean_, self.support_std_ = s.mean(0), np.maximum(s.std(0), 1e-12)
        x = self._design(np.asarray(preds, np.float64), n_user, n_item)
        penalty = self.ridge * np.eye(x.shape[1])
        penalty[0, 0] = 0.0  # the intercept is not shrunk
        self.coef_ = np.linalg.solve(x.T @ x + penalty + 1e-9 * np.eye(x.shape[1]), x.T @ np.asarray(y, np.float64))
        return self

    def predict(self, preds: np.ndarray, n_user: np.ndarray, n_item: np.ndarray) -> np.ndarray:
        """(n, K), (n,), (n,) -> (n,) blended rating (not clipped)."""
        return self._design(np.asarray(preds, np.float64), n_user, n_item) @ self.coef_
