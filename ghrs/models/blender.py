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

from typing import Self

import numpy as np

from ghrs.errors import UserError


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
