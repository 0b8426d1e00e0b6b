"""Item-based k-nearest neighbours (``model=itemknn``): cosine item-item similarity, top-N neighbours.

``sim(i, j) = |U_i ∩ U_j| / (sqrt(|U_i| |U_j|) + shrink)`` over the training interactions (U_i: users
who interacted with i), no self-similarity; for every target item j only its ``n_neighbours`` most
similar items are kept (a sparse matrix), and a user's score for j is the sum of the similarities of
j's neighbours in the user's history.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ghrs.data.dataset import RatingsDataset
from ghrs.errors import UserError
from ghrs.models.item_item import ItemItemRecommender, interaction_matrix


def cosine_topn(x: sp.csr_matrix, n_neighbours: int, shrink: float = 0.0, block: int = 2048) -> sp.csr_matrix:
    """x (n_users, n_items) 0/1 -> (n_items, n_items) CSR S with, in every column j, the ``n_neighbours``
    largest positive cosine similarities sim(i, j), i != j. Built ``block`` columns at a time (memory
    ~ n_items x block)."""
    x = sp.csc_matrix(x, dtype=np.float32)
    n_items = x.shape[1]
    norms = np.sqrt(np.asarray(x.multiply(x).sum(0)).ravel())
    xt = x.T.tocsr()
    rows, cols, vals = [], [], []
    for start in range(0, n_items, block):
        stop = min(start + block, n_items)
        co = np.asarray((xt @ x[:, start:stop]).todense())  # (n_items, b) co-occurrence counts
        sim = co / (norms[:, None] * norms[None, start:stop] + shrink + 1e-12)
        sim[np.arange(start, stop), np.arange(stop - start)] = 0.0  # no self-similarity
        k = min(n_neighbours, n_items - 1)
        top = np.argpartition(-sim, k - 1, axis=0)[:k] if k > 0 else np.empty((0, stop - start), np.int64)
        val = np.take_along_axis(sim, top, 0)
        keep = val > 0
        rows.append(top[keep])
        cols.append(np.broadcast_to(np.arange(start, stop), top.shape)[keep])
        vals.append(val[keep])
    return sp.csr_matrix((np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(n_items, n_items))


class ItemKNNRecommender(ItemItemRecommender):
    """See the module docstring. Args: ``n_neighbours`` (N >= 1), ``shrink`` (>= 0, added to the cosine
    denominator: damps similarities resting on few users), ``positive_min_rating`` (None: every
    interaction is a positive)."""

    def __init__(self, n_neighbours: int = 100, shrink: float = 0.0, positive_min_rating: float | None = None):
        if n_neighbours < 1 or shrink < 0:
            raise UserError(f"itemknn: n_neighbours must be >= 1 and shrink >= 0, got {n_neighbours}, {shrink}")
        self.n_neighbours, self.shrink, self.positive_min_rating = int(n_neighbours), float(shrink), positive_min_rating

    def fit(self, dataset: RatingsDataset, train: pd.DataFrame, valid=None, run_dir: Path | None = None) -> Self:
        self.dataset = dataset
        pos = train if self.positive_min_rating is None else train[train["rating"] >= self.positive_min_rating]
        self.weights = cosine_topn(interaction_matrix(pos, dataset.n_users, dataset.n_items), self.n_neighbours,
                                   self.shrink)
        self.set_history(train)
        return self
