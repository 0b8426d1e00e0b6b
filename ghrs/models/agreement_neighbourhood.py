"""The agreement neighbourhood of the default GHRS predictor (``predictor="agreement_knn"``): users (items)
weighted by how often they gave the same rating, and the neighbourhood residual over them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ghrs.graph.similarity_graph import agreement_neighbours, rating_indicators
from ghrs.options import FromConfig

log = logging.getLogger(__name__)


@dataclass
class NeighbourConfig(FromConfig):
    """``model.neighbours``: the graph-neighbourhood residual of the default predictor.

    Users (items) are weighted by their shrunk agreement rate ``same-rating count / (co-rated count +
    agree_shrink)`` -- GHRS's edge criterion as a weight -- raised to ``power`` (which sharpens the
    weights towards the closest neighbours), keeping each one's ``k_user`` (``k_item``) strongest
    neighbours. A user's residual on an item is the neighbours' weighted mean residual with ``shrink *
    mean weight`` added to the denominator; the user-based and item-based terms are added with weights
    ``weight_user`` and ``weight_item`` (0 disables a term). ``candidates``: neighbours are drawn only
    from the ``candidates`` users (items) with the most training ratings -- an approximation that makes
    the cost linear in the users on large sets, where nearly every pair of users co-rates something;
    null = every user (exact). Defaults tuned on a validation split of ML-100K u1.base.
    """

    OPTION_GROUP: ClassVar[str] = "neighbours"

    k_user: int = 300
    k_item: int = 200
    agree_shrink: float = 25.0
    power: float = 6.0
    shrink: float = 40.0
    weight_user: float = 0.7
    weight_item: float = 1.0
    candidates: int | None = None

    def __post_init__(self) -> None:
        if self.k_user < 1 or self.k_item < 1 or min(self.agree_shrink, self.shrink) < 0:
            raise ValueError(f"ghrs neighbours: k >= 1 and shrinkage >= 0 required, got {self}")
        if self.candidates is not None and self.candidates < 1:
            raise ValueError(f"ghrs neighbours.candidates must be >= 1 or null, got {self.candidates}")

    @property
    def active(self) -> bool:
        return self.weight_user != 0 or self.weight_item != 0


def _most_active(ids: np.ndarray, n: int, k: int | None) -> np.ndarray | None:
    """The ``k`` ids with the most occurrences in ``ids`` (ties: lower id), or None when ``k`` is None."""
    if k is None or k >= n:
        return None
    counts = np.bincount(ids, minlength=n)
    return np.sort(np.lexsort((np.arange(n), -counts))[:k])


class _Neighbourhood:
    """User- and item-based neighbourhood residuals over agreement-rate weights (see NeighbourConfig)."""

    def __init__(self, cfg: NeighbourConfig):
        self.cfg = cfg

    def fit(self, train: pd.DataFrame, resid: np.ndarray, n_users: int, n_items: int) -> _Neighbourhood:
        cfg = self.cfg
        self.values = np.unique(train["rating"].to_numpy())
        self.n_users, self.n_items = n_users, n_items
        self.train = train  # a reference (the model's training frame), not a copy
        user_mats = rating_indicators(self.train, self.values, n_users, n_items)
        u, i = train["user"].to_numpy(), train["item"].to_numpy()
        self.w_user = sp.csr_matrix((n_users, n_users))
        self.w_item = sp.csr_matrix((n_items, n_items))
        self.user_pool = _most_active(u, n_users, cfg.candidates)
        if cfg.weight_user:
            self.w_user = agreement_neighbours(user_mats, user_mats, cfg.k_user, cfg.agree_shrink, np.unique(u),
                                               right_rows=self.user_pool)
        if cfg.weight_item:
            item_mats = [m.T.tocsr() for m in user_mats]
            self.w_item = agreement_neighbours(item_mats, item_mats, cfg.k_item, cfg.agree_shrink, np.unique(i),
                                               right_rows=_most_active(i, n_items, cfg.candidates))
        if cfg.power != 1:
            self.w_user.data **= cfg.power
            self.w_item.data **= cfg.power
        self.lam_user = cfg.shrink * (self.w_user.data.mean() if self.w_user.nnz else 1.0)
        self.lam_item = cfg.shrink * (self.w_item.data.mean() if self.w_item.nnz else 1.0)
        self.e_fit = sp.csr_matrix((resid, (u, i)), shape=(n_users, n_items))
        self.m_fit = sp.csr_matrix((np.ones(len(u)), (u, i)), shape=(n_users, n_items))
        self.w_item_t = self.w_item.T.tocsr()
        self.reset(n_users)
        return self

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("w_item_t", None)  # derived: rebuilt on load
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.w_item_t = self.w_item.T.tocsr()

    def reset(self, n_users: int) -> None:
        """Forget folded-in users; ``n_users`` may have grown since fit."""
        self.w_user_cur = _pad_rows(self.w_user, n_users, self.w_user.shape[1])
        self.e = _pad_rows(self.e_fit, n_users, self.n_items)
        self.m = _pad_rows(self.m_fit, n_users, self.n_items)

    def add_users(self, new: pd.DataFrame, resid: np.ndarray, n_users: int) -> None:
        """Fold in users without training ratings: their rows of residuals and their neighbours among
        the training users (from the agreement of their ``new`` ratings with the training ratings)."""
        self.reset(n_users)
        u, i = new["user"].to_numpy(), new["item"].to_numpy()
        self.e = self.e + sp.csr_matrix((resid, (u, i)), shape=(n_users, self.n_items))
        self.m = self.m + sp.csr_matrix((np.ones(len(u)), (u, i)), shape=(n_users, self.n_items))
        if self.cfg.weight_user and len(new):
            values = np.union1d(self.values, np.unique(new["rating"].to_numpy()))
            left = rating_indicators(new, values, n_users, self.n_items)
            right = rating_indicators(self.train, values, self.n_users, self.n_items)
            w_new = agreement_neighbours(left, right, self.cfg.k_user, self.cfg.agree_shrink, np.unique(u),
                                         exclude_self=False, right_rows=getattr(self, "user_pool", None))
            w_new.data **= self.cfg.power
            self.w_user_cur = self.w_user_cur + w_new

    def rows(self, users: np.ndarray) -> np.ndarray:
        """(len(users), n_items) neighbourhood residuals."""
        cfg = self.cfg
        out = np.zeros((len(users), self.n_items))
        if cfg.weight_user:
            w = self.w_user_cur[users]
            e_u = self.e[: self.n_users]  # neighbours are training users
            num = (w @ e_u).toarray()
            den = (w @ self.m[: self.n_users]).toarray()
            out += cfg.weight_user * num / (den + self.lam_user)
        if cfg.weight_item:
            e, m = self.e[users], self.m[users]
            num = (e @ self.w_item_t).toarray()
            den = (m @ self.w_item_t).toarray()
            out += cfg.weight_item * num / (den + self.lam_item)
        return out


def _pad_rows(m: sp.csr_matrix, n_rows: int, n_cols: int) -> sp.csr_matrix:
    """``m`` itself when it has ``n_rows`` rows (no copy: pickled once with the model), else padded."""
    if m.shape[0] < n_rows:
        return sp.vstack([m, sp.csr_matrix((n_rows - m.shape[0], n_cols))], format="csr")
    return m
