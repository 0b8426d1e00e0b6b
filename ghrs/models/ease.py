"""EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019), ``model=ease``.

The item-item weights B solve ``min_B ||X - X B||² + λ ||B||²`` subject to ``diag(B) = 0`` over the
training interaction matrix X (n_users, n_items). Closed form: ``P = (XᵀX + λI)⁻¹``,
``B_ij = -P_ij / P_jj`` (i != j), ``B_jj = 0``. Scores of a user: ``x_u B``. λ is chosen on the
validation interactions (NDCG@10) from ``l2_grid`` when a validation part is given.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Self

import numpy as np
import pandas as pd

from ghrs.data.dataset import RatingsDataset
from ghrs.errors import UserError
from ghrs.models.item_item import ItemItemRecommender, interaction_matrix, validation_metric

log = logging.getLogger(__name__)


def ease_weights(gram: np.ndarray, l2: float) -> np.ndarray:
    """gram (n_items, n_items) = XᵀX, l2 = λ > 0 -> B (n_items, n_items) float32, zero diagonal."""
    g = gram.astype(np.float64, copy=True)
    g[np.diag_indices_from(g)] += l2
    p = np.linalg.inv(g)
    b = p / -np.diag(p)[None, :]  # column j divided by -P_jj
    b[np.diag_indices_from(b)] = 0.0
    return b.astype(np.float32)


class EASERecommender(ItemItemRecommender):
    """See the module docstring.

    Args:
        l2: λ used without validation data (and the fallback of an empty grid).
        l2_grid: λ candidates tried on the validation interactions (NDCG@10); empty: always ``l2``.
        positive_min_rating: None: every interaction is a positive.
        max_items: refuse catalogues larger than this (the Gram matrix and its inverse are dense:
            memory ~ 16 n_items² bytes).
    """

    def __init__(self, l2: float = 500.0, l2_grid: list[float] | tuple[float, ...] = (), positive_min_rating:
                 float | None = None, max_items: int = 30_000):
        grid = [float(v) for v in (l2_grid or [])]
        if l2 <= 0 or any(v <= 0 for v in grid):
            raise UserError(f"ease: l2 and every l2_grid value must be > 0, got l2={l2}, l2_grid={grid}")
        self.l2, self.l2_grid, self.positive_min_rating, self.max_items = float(l2), grid, positive_min_rating, max_items

    def fit(self, dataset: RatingsDataset, train: pd.DataFrame, valid: pd.DataFrame | None = None,
            run_dir: Path | None = None) -> Self:
        if dataset.n_items > self.max_items:
            raise UserError(f"ease: {dataset.n_items:,} items exceed model.max_items={self.max_items:,} (dense "
                            f"n_items² matrices); raise model.max_items or use model=itemknn")
        self.dataset = dataset
        pos = train if self.positive_min_rating is None else train[train["rating"] >= self.positive_min_rating]
        x = interaction_matrix(pos, dataset.n_users, dataset.n_items)
        gram = np.asarray((x.T @ x).todense(), dtype=np.float64)
        self.l2_ = self.l2
        self.validation_ = {}
        if valid is not None and len(valid) and self.l2_grid:
            self.set_history(train)
            for lam in self.l2_grid:
                self.weights = ease_weights(gram, lam)
                self.validation_[lam] = validation_metric(self, dataset, train, valid, "ndcg@10")
            self.l2_ = max(self.validation_, key=self.validation_.get)
            log.info("ease: validation NDCG@10 per l2 %s -> l2 = %g",
                     {k: round(v, 4) for k, v in self.validation_.items()}, self.l2_)
        self.weights = ease_weights(gram, self.l2_)
        self.set_history(train)
        return self
