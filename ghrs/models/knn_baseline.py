"""Item-based kNN over baseline residuals (Koren 2010, sec. 2.2; Surprise's ``KNNBaseline``) (``model=knn_baseline``).

The baseline is the bias model ``b_ui = mu + b_u + b_i`` (:class:`~ghrs.models.bias.BiasRecommender`). On the
training residuals ``e_ui = r_ui - b_ui`` the similarity of items i and j is the pearson-baseline
correlation over the users who rated both, shrunk towards 0 by their number ``n_ij``::

    s_ij = (n_ij - 1) / (n_ij - 1 + shrinkage) * sum_u e_ui e_uj / sqrt(sum_u e_ui^2 * sum_u e_uj^2)

and the prediction adds the similarity-weighted residuals of the ``k`` items of the user's history most
similar to i (only positive similarities count; with fewer than ``min_k`` of them, the baseline alone)::

    r(u, i) = b_ui + sum_j s_ij e_uj / sum_j s_ij

The neighbours come from the history given at prediction (``set_history``), so a user unseen by ``fit``
is folded in: bias from the revealed ratings, neighbours among them. The similarity matrix is dense,
(n_items, n_items) float32: for catalogues of a few ten thousand items at most.

``user_based=True`` swaps the roles: similar users (over the items both rated) who rated i, (n_users,
n_users) similarities; a user unseen by ``fit`` then has no similarities and gets the baseline.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Self

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ghrs.data.dataset import RatingsDataset
from ghrs.errors import UserError
from ghrs.models.base import Recommender
from ghrs.models.bias import BiasRecommender

log = logging.getLogger(__name__)


def pearson_baseline(resid: sp.csr_matrix, shrinkage: float) -> np.ndarray:
    """resid (n_users, n_items) CSR of baseline residuals (stored entries = observed ratings) ->
    (n_items, n_items) float32 shrunk pearson-baseline similarity, 0 on the diagonal and for pairs
    without common users."""
    e = resid.tocsc().astype(np.float64)
    m = e.copy()
    m.data[:] = 1.0
    common = (m.T @ m).toarray()  # n_ij: users who rated both
    prods = (e.T @ e).toarray()  # sum over common users of e_ui e_uj
    sq = (e.multiply(e).T @ m).toarray()  # [i, j]: sum over common users of e_ui^2
    den = np.sqrt(sq * sq.T)
    sim = np.divide(prods, den, out=np.zeros_like(prods), where=den > 0)
    sim *= np.maximum(common - 1, 0) / np.maximum(common - 1 + shrinkage, 1e-12)
    np.fill_diagonal(sim, 0.0)  # an item is never its own neighbour (in-sample predictions included)
    return sim.astype(np.float32)


class KNNBaselineRecommender(Recommender):
    """Item-based kNN on the residuals of the bias baseline, pearson-baseline similarity with shrinkage.

    Args:
        k: neighbours per prediction (the user's k rated items most similar to the target).
        min_k: fewer positive-similarity neighbours than this: the baseline alone.
        shrinkage: similarity shrinkage towards 0 by the co-rating count (Surprise's default: 100).
        reg_user, reg_item, n_epochs: the bias baseline (:class:`~ghrs.models.bias.BiasRecommender`).
        user_based: neighbours are similar users who rated the item (default: similar items the user rated).
    """

    def __init__(self, k: int = 40, min_k: int = 1, shrinkage: float = 100.0, reg_user: float = 15.0,
                 reg_item: float = 10.0, n_epochs: int = 10, user_based: bool = False):
        if k < 1 or min_k < 1 or shrinkage < 0:
            raise UserError(f"knn_baseline: k >= 1, min_k >= 1 and shrinkage >= 0 required, got k={k}, "
                            f"min_k={min_k}, shrinkage={shrinkage}")
        self.k, self.min_k, self.shrinkage = int(k), int(min_k), float(shrinkage)
        self.reg_user, self.reg_item, self.n_epochs = reg_user, reg_item, n_epochs
        self.user_based = bool(user_based)

    def fit(self, dataset: RatingsDataset, train: pd.DataFrame, valid: pd.DataFrame | None = None,
            run_dir: Path | None = None) -> Self:
        self.dataset = dataset
        self.bias_ = BiasRecommender(self.reg_user, self.reg_item, self.n_epochs).fit(dataset, train)
        resid = self._residuals(train)
        self.sim_ = pearson_baseline(resid.T.tocsr() if self.user_based else resid, self.shrinkage)
        log.info("knn_baseline: %d %s, %.1f%% of pairs with a positive similarity", len(self.sim_),
                 "users" if self.user_based else "items", 100 * float((self.sim_ > 0).mean()))
        self.set_history(train)
        return self

    def _baseline(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(n,) unclipped mu + b_u + b_i."""
        b = self.bias_
        return b.mu + b.b_user[users] + b.b_item[items]

    def _residuals(self, ratings: pd.DataFrame) -> sp.csr_matrix:
        """(n_users, n_items) CSR of r - b_ui over ``ratings``."""
        u, i = ratings["user"].to_numpy(), ratings["item"].to_numpy()
        e = ratings["rating"].to_numpy(np.float64) - self._baseline(u, i)
        e[e == 0] = 1e-12  # keep exact-zero residuals as stored entries (they are observed ratings)
        return sp.csr_matrix((e, (u, i)), shape=(self.dataset.n_users, self.dataset.n_items))

    def set_history(self, history: pd.DataFrame) -> None:
        """Fold in users unseen by ``fit`` (bias) and take every user's neighbours from ``history``."""
        self.history = history
        self.bias_.set_history(history)
        resid = self._residuals(history)
        # rows: whose neighbour lists these are (users; items when user-based), columns: the neighbours
        self.hist_ = resid.T.tocsr() if self.user_based else resid
        if self.user_based:  # users unseen by fit have no similarities: never anyone's neighbour
            self.hist_ = self.hist_[:, : len(self.sim_)].tocsr()

    def _grow_users(self, n_old: int, n_new: int) -> None:
        self.bias_.dataset = self.dataset
        self.bias_._grow_users(n_old, n_new)
        self.set_history(self.history)

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
        pred = self._baseline(users, items)
        # owner: whose neighbour list is searched (the user; the item when user-based), target: the other
        owner, target = (items, users) if self.user_based else (users, items)
        order = np.argsort(owner, kind="stable")
        bounds = np.flatnonzero(np.diff(owner[order])) + 1
        h = self.hist_
        for rows in np.split(order, bounds) if len(order) else []:
            o = owner[rows[0]]
            rows = rows[target[rows] < len(self.sim_)]  # user-based: users unseen by fit keep the baseline
            nbr, e = h.indices[h.indptr[o] : h.indptr[o + 1]], h.data[h.indptr[o] : h.indptr[o + 1]]
            if len(nbr) == 0 or len(rows) == 0:
                continue
            s = self.sim_[target[rows]][:, nbr]  # (m, |neighbour list|)
            if len(nbr) > self.k:  # keep each row's k most similar history items
                top = np.argpartition(-s, self.k - 1, axis=1)[:, : self.k]
                s, e_k = np.take_along_axis(s, top, 1), e[top]
            else:
                e_k = np.broadcast_to(e, s.shape)
            s = np.maximum(s, 0.0)
            den = s.sum(1)
            ok = ((s > 0).sum(1) >= self.min_k) & (den > 0)
            pred[rows[ok]] += (s * e_k).sum(1)[ok] / den[ok]
        return self.clip(pred)
