"""GHRS (Darban & Valipour, ESWA 2022) as a :class:`~ghrs.models.base.Recommender` (``model=ghrs``).

Pipeline, all of it fitted on the training ratings only:

1. user similarity graph: users linked when they gave the same rating to the same item at least
   ``alpha * n_items`` times (:mod:`ghrs.graph.similarity_graph`);
2. six graph features per user (:mod:`ghrs.graph.graph_features`), scaled on the training users;
3. joined with one-hot side information (gender, six age bins, occupation);
4. an autoencoder compresses the joined vector; its code is the user's feature vector;
5. k-means on the codes, k at the elbow (or fixed);
6. rating prediction from the ratings the user's cluster gave the item:

   - ``predictor="paper"``: the cluster's mean rating of the item (the paper's rule), falling back to
     the item's mean rating, then the cluster's mean rating, then the global mean;
   - ``predictor="residual"`` (default): global + user + item biases (:func:`fit_biases`) plus the
     cluster's shrunk mean residual on the item (backfitted with the biases), plus a neighbourhood
     residual over GHRS's own similarity -- the rate at which two users (items) gave the same rating
     -- from the user side and the item side (:class:`NeighbourConfig`). The clusters also give a cold
     user's bias prior (the shrunk mean bias of the training users in its cluster).

     The cluster term alone barely moves the bias baseline (the codes of graph centralities and
     demographics say little about taste: ML-100K u1 validation RMSE 0.9435 -> 0.9428); the
     agreement neighbourhood is what brings it below 0.93 (see NOTES.md, ``## GHRS``).

:class:`GHRSFeatures` holds steps 1-5 (and the item-side counterpart: item graph, popularity, genres,
decade, item autoencoder codes) as arrays that other models reuse; ``transform_users`` folds in users
unseen at fit time without retraining anything.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ghrs.autoencoder import AutoEncoderConfig, TrainedAutoEncoder, train_autoencoder
from ghrs.clustering import ClusterResult, fit_clusters, plot_elbow
from ghrs.data.dataset import RatingsDataset
from ghrs.features.item_features import ItemFeatureExtractor
from ghrs.features.user_features import StageLog, UserFeatureExtractor
from ghrs.graph.graph_features import FEATURES, CentralityConfig
from ghrs.graph.similarity_graph import agreement_neighbours, rating_indicators
from ghrs.io import save_figure
from ghrs.models.base import Recommender
from ghrs.models.bias import fit_biases

log = logging.getLogger(__name__)

PREDICTORS = ("residual", "paper")
PREDICTOR_PARAMS = ("predictor", "reg_user", "reg_item", "bias_epochs", "shrink_cluster_item", "shrink_cluster_bias",
                    "backfit_rounds", "neighbours")
LEAKAGE = ("none", "features", "all")


class GHRSFeatures:
    """GHRS steps 1-5 as reusable feature extractors (users and items).

    After :meth:`fit` (arrays indexed by user / item index):

    - ``user_features`` (n_users, d_u): the joined vector ``[scaled graph features | side one-hots]``;
    - ``user_graph_features`` (n_users, 6): its scaled graph part (:data:`FEATURES` order; zero for
      users outside the graph);
    - ``user_codes`` (n_users, code_dim): autoencoder codes; ``user_clusters`` (n_users,): k-means label;
    - ``item_features`` (n_items, d_i), ``item_codes`` (n_items, item_code_dim) when ``item_side``;
    - ``trained_users`` (n_users,) bool: users with training ratings (the autoencoder and k-means are
      fitted on their vectors; other users get side-only vectors until :meth:`transform_users`).

    Args: see ``conf/model/ghrs.yaml``.
    """

    def __init__(
        self,
        alpha: float = 0.01,
        scaling: str = "max",
        graph_features: list[str] | None = None,
        use_side: bool = True,
        zip_region: bool = False,
        centrality: CentralityConfig | dict | None = None,
        autoencoder: AutoEncoderConfig | dict | None = None,
        n_clusters: int | None = None,
        k_range: tuple[int, int] = (2, 20),
        kmeans_n_init: int = 4,
        item_side: bool = True,
        item_alpha: float = 0.05,
        item_same_rating: bool = False,
        item_centrality: CentralityConfig | dict | None = None,
        item_autoencoder: AutoEncoderConfig | dict | None = None,
        graph_max_degree: int | None = None,
        graph_block: int = 1024,
        seed: int = 0,
        stages: StageLog | None = None,
    ):
        self.stages = stages or StageLog()
        self.user_extractor = UserFeatureExtractor(alpha, centrality, scaling, graph_features, use_side, zip_region,
                                                   self.stages, graph_max_degree, graph_block)
        self.autoencoder_cfg = AutoEncoderConfig.from_any(autoencoder)
        self.n_clusters = n_clusters
        self.k_range = tuple(int(k) for k in k_range)
        self.kmeans_n_init = int(kmeans_n_init)
        self.item_side = item_side
        self.item_extractor = (
            ItemFeatureExtractor(item_alpha, item_same_rating, item_centrality if item_centrality is not None else centrality,
                                 scaling, stages=self.stages)
            if item_side else None
        )
        self.item_autoencoder_cfg = AutoEncoderConfig.from_any(item_autoencoder)
        self.seed = int(seed)

    @property
    def seconds(self) -> dict[str, float]:
        return self.stages.seconds

    # -- fit ---------------------------------------------------------------------------------------

    def fit(self, dataset: RatingsDataset, train: pd.DataFrame) -> Self:
        n_users, n_items = dataset.n_users, dataset.n_items
        self.trained_users = np.bincount(train["user"].to_numpy(), minlength=n_users) > 0
        if not self.trained_users.any():
            raise ValueError("GHRS: the training split has no ratings")
        ux = self.user_extractor
        self.users_table = dataset.users
        base = ux.fit_transform(train, dataset.users, n_users, n_items)
        self.user_feature_names = ux.names
        with self.stages("autoencoder"):
            self.user_ae: TrainedAutoEncoder = train_autoencoder(base[self.trained_users], self.autoencoder_cfg,
                                                                 self.seed)
            codes = self.user_ae.encode(base)
        with self.stages("clustering"):
            self.clusters: ClusterResult = fit_clusters(
                codes[self.trained_users], self.n_clusters, self.k_range, self.seed, self.kmeans_n_init
            )
        labels = np.empty(n_users, np.int64)
        labels[self.trained_users] = self.clusters.labels
        if (~self.trained_users).any():
            labels[~self.trained_users] = self.clusters.predict(codes[~self.trained_users])
        # Fit-time state (cold users side-only); transform_users starts from these every time.
        self._base = (base, codes, labels)
        self.user_features, self.user_codes, self.user_clusters = base.copy(), codes.copy(), labels.copy()
        if self.item_side:
            ix = self.item_extractor.fit_transform(train, dataset.items, n_users, n_items)
            self.item_feature_names = self.item_extractor.names
            self.item_features = ix
            with self.stages("item_autoencoder"):
                self.item_ae = train_autoencoder(ix, self.item_autoencoder_cfg, self.seed + 1)
                self.item_codes = self.item_ae.encode(ix)
        return self

    @property
    def user_graph_features(self) -> np.ndarray:
        return self.user_features[:, : len(self.user_extractor.graph_feature_names)]

    @property
    def n_clusters_(self) -> int:
        return self.clusters.k

    # -- fold-in -----------------------------------------------------------------------------------

    def transform_users(self, history: pd.DataFrame, users_table: pd.DataFrame | None = None) -> np.ndarray:
        """Fold in users without training ratings from their ratings in ``history`` (none = side only).

        Graph features come from the edges their ratings give against the training users; the trained
        autoencoder and k-means assign code and cluster. Trained users are unchanged. ``users_table``:
        the side table when it has grown since fit (users added at serving time; default: the fit-time
        one). Returns the indices of the users (re)computed.
        """
        if users_table is None:
            users_table = self.users_table
        self.users_table = users_table
        base, codes, labels = self._grow(len(users_table), users_table)
        self.user_features, self.user_codes, self.user_clusters = base.copy(), codes.copy(), labels.copy()
        hu = history["user"].to_numpy()
        new_mask = ~self.trained_users[hu]
        new_users = np.unique(hu[new_mask])
        if len(new_users) == 0:
            return new_users
        x = self.user_extractor.transform_new(history[new_mask], new_users, users_table)
        c = self.user_ae.encode(x)
        self.user_features[new_users] = x
        self.user_codes[new_users] = c
        self.user_clusters[new_users] = self.clusters.predict(c)
        return new_users

    def _grow(self, n_users: int, users_table: pd.DataFrame):
        """Extend the fit-time arrays to users added after fit (side-only vectors)."""
        base, codes, labels = self._base
        n_old = len(base)
        if n_users > n_old:
            rows = np.arange(n_old, n_users)
            zeros = np.zeros((len(rows), len(FEATURES)))
            x = self.user_extractor.transform_rows(
                np.arange(len(rows)), zeros, np.zeros(len(rows), bool), users_table.iloc[rows].reset_index(drop=True)
            )
            c = self.user_ae.encode(x)
            base = np.concatenate([base, x])
            codes = np.concatenate([codes, c])
            labels = np.concatenate([labels, self.clusters.predict(c)])
            self.trained_users = np.concatenate([self.trained_users, np.zeros(len(rows), bool)])
            self._base = (base, codes, labels)
        return base, codes, labels


@dataclass
class NeighbourConfig:
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

    @classmethod
    def from_any(cls, cfg) -> NeighbourConfig:
        if isinstance(cfg, cls):
            return cfg
        cfg = dict(cfg or {})
        unknown = set(cfg) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown neighbours option(s) {sorted(unknown)}")
        return cls(**cfg)

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


@dataclass
class _ResidualState:
    mu: float
    b_user: np.ndarray
    b_item: np.ndarray
    resid: np.ndarray  # (k, n_items) shrunk cluster-item residual
    cluster_bias: np.ndarray  # (k,) shrunk mean bias of the cluster's training users


class GHRSRecommender(Recommender):
    """GHRS rating prediction from cluster ratings (see the module docstring and
    ``conf/model/ghrs.yaml`` for every knob). ``features`` (:class:`GHRSFeatures`) holds steps 1-5;
    ``seconds`` the wall time of every stage.

    Args (predictor):
        predictor: ``residual`` (default) or ``paper``.
        reg_user, reg_item, bias_epochs: :func:`fit_biases` regularisation and sweeps.
        shrink_cluster_item: pseudo-count shrinking a cluster's mean residual on an item towards 0.
        shrink_cluster_bias: pseudo-count (users) shrinking a cluster's mean user bias towards 0.
        backfit_rounds: alternate biases and cluster residuals this many times.
        neighbours: :class:`NeighbourConfig` (or a dict of its fields): the agreement-neighbourhood
            residual of the residual predictor.
        leakage: ``none`` (default). ``features``/``all`` deliberately reproduce the leaky protocol
            (graph, features, autoencoder and clusters from *all* ratings of the dataset, test included;
            ``all`` also the predictor's statistics) to measure what leakage does. Never for results.
        alpha_sweep: alphas to evaluate on the validation ratings (or an inner 10% split of train)
            after fit; plotted by :meth:`save_artifacts`.
        graph_max_degree: None (the paper's graph), or each user keeps only its strongest
            ``graph_max_degree`` links: edges <= n_users * graph_max_degree on dense data (large sets).
        graph_block: users per block of the co-agreement product; bounds its memory at about
            ``graph_block * n_users`` counts.
    """

    def __init__(
        self,
        alpha: float = 0.01,
        scaling: str = "max",
        graph_features: list[str] | None = None,
        use_side: bool = True,
        zip_region: bool = False,
        centrality: dict | None = None,
        autoencoder: dict | None = None,
        n_clusters: int | None = None,
        k_range: tuple[int, int] | list[int] = (2, 20),
        kmeans_n_init: int = 4,
        item_side: bool = True,
        item_alpha: float = 0.05,
        item_same_rating: bool = False,
        item_centrality: dict | None = None,
        item_autoencoder: dict | None = None,
        predictor: str = "residual",
        reg_user: float = 15.0,
        reg_item: float = 10.0,
        bias_epochs: int = 10,
        shrink_cluster_item: float = 200.0,
        shrink_cluster_bias: float = 5.0,
        backfit_rounds: int = 2,
        neighbours: dict | NeighbourConfig | None = None,
        leakage: str = "none",
        alpha_sweep: list[float] | None = None,
        graph_max_degree: int | None = None,
        graph_block: int = 1024,
        seed: int = 0,
    ):
        if leakage not in LEAKAGE:
            raise ValueError(f"ghrs leakage must be one of {LEAKAGE}, got {leakage!r}")
        self.feature_kwargs = {
            "alpha": alpha, "scaling": scaling, "graph_features": graph_features, "use_side": use_side,
            "zip_region": zip_region, "centrality": centrality, "autoencoder": autoencoder, "n_clusters": n_clusters,
            "k_range": tuple(k_range), "kmeans_n_init": kmeans_n_init, "item_side": item_side,
            "item_alpha": item_alpha, "item_same_rating": item_same_rating, "item_centrality": item_centrality,
            "item_autoencoder": item_autoencoder, "graph_max_degree": graph_max_degree, "graph_block": graph_block,
            "seed": seed,
        }
        self._set_predictor_params(
            predictor=predictor, reg_user=reg_user, reg_item=reg_item, bias_epochs=bias_epochs,
            shrink_cluster_item=shrink_cluster_item, shrink_cluster_bias=shrink_cluster_bias,
            backfit_rounds=backfit_rounds, neighbours=neighbours,
        )
        self.leakage = leakage
        self.alpha_sweep = list(alpha_sweep) if alpha_sweep else []
        self.seed = int(seed)
        self.stages = StageLog()

    @property
    def seconds(self) -> dict[str, float]:
        """Wall time of every fit stage (graph, graph_features, autoencoder, clustering, item_graph,
        item_graph_features, item_autoencoder, predictor_fit)."""
        return self.stages.seconds

    def _set_predictor_params(self, **p) -> None:
        if p["predictor"] not in PREDICTORS:
            raise ValueError(f"ghrs predictor must be one of {PREDICTORS}, got {p['predictor']!r}")
        if (min(p["reg_user"], p["reg_item"], p["shrink_cluster_item"], p["shrink_cluster_bias"]) < 0
                or p["bias_epochs"] < 1 or p["backfit_rounds"] < 1):
            raise ValueError("ghrs: shrinkage/regularisation >= 0, bias_epochs >= 1, backfit_rounds >= 1 required")
        self.predictor = p["predictor"]
        self.reg_user, self.reg_item, self.bias_epochs = float(p["reg_user"]), float(p["reg_item"]), int(p["bias_epochs"])
        self.shrink_cluster_item = float(p["shrink_cluster_item"])
        self.shrink_cluster_bias = float(p["shrink_cluster_bias"])
        self.backfit_rounds = int(p["backfit_rounds"])
        self.neighbours = NeighbourConfig.from_any(p["neighbours"])

    # -- fit ---------------------------------------------------------------------------------------

    def fit(self, dataset: RatingsDataset, train: pd.DataFrame, valid=None, run_dir: Path | None = None) -> Self:
        self.dataset = dataset
        feature_ratings, predictor_ratings = train, train
        if self.leakage != "none":
            log.warning("GHRS LEAKY PROTOCOL (leakage=%s): features built from all %d ratings of %s, test included."
                        " For measuring leakage only.", self.leakage, len(dataset.ratings), dataset.name)
            feature_ratings = dataset.ratings
            if self.leakage == "all":
                predictor_ratings = dataset.ratings
        self.stages.seconds.clear()
        self.features = GHRSFeatures(**self.feature_kwargs, stages=self.stages).fit(dataset, feature_ratings)
        self._predictor_ratings = predictor_ratings
        with self.stages("predictor_fit"):
            self._fit_predictor(predictor_ratings, self.features.user_clusters)
        self.trained_users = np.bincount(train["user"].to_numpy(), minlength=dataset.n_users) > 0
        self.history = train
        log.info("GHRS: k=%d clusters (%s), stage seconds %s", self.features.n_clusters_,
                 self.features.clusters.chosen_by, {k: round(v, 2) for k, v in self.seconds.items()})
        self.sweep_table = None
        if self.alpha_sweep:
            self.sweep_table = alpha_sweep(dataset, train, valid, self.alpha_sweep, self.get_params(), self.seed)
        return self

    def refit_predictor(self, **params) -> Self:
        """Re-fit step 6 only, with some predictor knobs changed (``predictor``, ``reg_user``,
        ``reg_item``, ``bias_epochs``, ``shrink_cluster_item``, ``shrink_cluster_bias``,
        ``backfit_rounds``, ``neighbours``), reusing the fitted graph, features, autoencoder and
        clusters. For tuning; the current history is folded in again."""
        current = {k: getattr(self, k) for k in PREDICTOR_PARAMS}
        unknown = set(params) - set(PREDICTOR_PARAMS)
        if unknown:
            raise ValueError(f"refit_predictor: not predictor knobs: {sorted(unknown)}")
        if isinstance(params.get("neighbours"), dict):
            params["neighbours"] = {**vars(self.neighbours), **params["neighbours"]}
        self._set_predictor_params(**{**current, **params})
        self._fit_predictor(self._predictor_ratings, self.features._base[2])
        self.set_history(self.history)
        return self

    def get_params(self) -> dict:
        return dict(
            **{k: v for k, v in self.feature_kwargs.items()}, predictor=self.predictor, reg_user=self.reg_user,
            reg_item=self.reg_item, bias_epochs=self.bias_epochs, shrink_cluster_item=self.shrink_cluster_item,
            shrink_cluster_bias=self.shrink_cluster_bias, backfit_rounds=self.backfit_rounds,
            neighbours=self.neighbours,
        )

    def _fit_predictor(self, ratings: pd.DataFrame, clusters: np.ndarray) -> None:
        ds = self.dataset
        u = ratings["user"].to_numpy()
        i = ratings["item"].to_numpy()
        r = ratings["rating"].to_numpy(np.float64)
        k = int(clusters.max()) + 1
        c = clusters[u]
        n_items = ds.n_items
        cell = c * n_items + i
        cnt_ci = np.bincount(cell, minlength=k * n_items).astype(np.float64)
        # Paper predictor table with its fallback chain: cluster-item mean -> item mean -> cluster mean
        # -> global mean.
        mu = float(r.mean())
        sum_ci = np.bincount(cell, r, k * n_items)
        cnt_i = np.bincount(i, minlength=n_items).astype(np.float64)
        item_mean = np.where(cnt_i > 0, np.bincount(i, r, n_items) / np.maximum(cnt_i, 1), np.nan)
        cnt_c = np.bincount(c, minlength=k).astype(np.float64)
        clus_mean = np.where(cnt_c > 0, np.bincount(c, r, k) / np.maximum(cnt_c, 1), mu)
        table = np.where(cnt_ci > 0, sum_ci / np.maximum(cnt_ci, 1), np.nan).reshape(k, n_items)
        table = np.where(np.isnan(table), item_mean[None, :], table)
        table = np.where(np.isnan(table), clus_mean[:, None], table)
        self.paper_table = table
        self.cluster_item_count = cnt_ci.reshape(k, n_items)
        # Residual predictor: biases (fit_biases) and shrunk cluster-item residuals, backfitted.
        resid_ci = np.zeros(k * n_items)
        for _ in range(self.backfit_rounds):
            mu, b_u, b_i = fit_biases(u, i, r - resid_ci[cell], ds.n_users, n_items, self.reg_user, self.reg_item,
                                      self.bias_epochs, mu=mu)
            e = r - mu - b_u[u] - b_i[i]
            resid_ci = np.bincount(cell, e, k * n_items) / (cnt_ci + self.shrink_cluster_item)
        trained = np.bincount(u, minlength=ds.n_users) > 0
        tc = clusters[: ds.n_users][trained]
        cluster_bias = np.bincount(tc, b_u[trained], k) / (np.bincount(tc, minlength=k) + self.shrink_cluster_bias)
        self._fit_state = _ResidualState(mu, b_u, b_i, resid_ci.reshape(k, n_items), cluster_bias)
        self.state = _ResidualState(mu, b_u.copy(), b_i, resid_ci.reshape(k, n_items), cluster_bias)
        self.nbr = None
        if self.predictor == "residual" and self.neighbours.active:
            e = r - mu - b_u[u] - b_i[i] - resid_ci[cell]
            self.nbr = _Neighbourhood(self.neighbours).fit(ratings, e, ds.n_users, n_items)

    # -- prediction time ---------------------------------------------------------------------------

    def set_history(self, history: pd.DataFrame) -> None:
        """Fold in users unseen by fit: features/codes/cluster from their history (trained encoder and
        k-means), then their bias from the history with the cluster's mean bias as the prior."""
        self.history = history
        f = self.features
        new_users = f.transform_users(history, self.dataset.users)
        st = self._fit_state
        n = self.dataset.n_users
        b_u = np.zeros(n)
        b_u[: len(st.b_user)] = st.b_user
        trained = np.zeros(n, bool)
        trained[: len(self.trained_users)] = self.trained_users
        cold = ~trained
        prior = st.cluster_bias[f.user_clusters]
        b_u[cold] = prior[cold]  # k = 0 users: their cluster's mean bias
        h = history.iloc[:0]
        if len(new_users):
            h = history[np.isin(history["user"].to_numpy(), new_users)]
            u, i = h["user"].to_numpy(), h["item"].to_numpy()
            e = h["rating"].to_numpy(np.float64) - st.mu - st.b_item[i] - st.resid[f.user_clusters[u], i]
            cnt = np.bincount(u, minlength=n)
            fold = (np.bincount(u, e, n) + self.reg_user * prior) / (cnt + self.reg_user)
            b_u[new_users] = fold[new_users]
        self.state = _ResidualState(st.mu, b_u, st.b_item, st.resid, st.cluster_bias)
        if self.nbr is not None:
            u, i = h["user"].to_numpy(), h["item"].to_numpy()
            e = h["rating"].to_numpy(np.float64) - st.mu - b_u[u] - st.b_item[i] - st.resid[f.user_clusters[u], i]
            self.nbr.add_users(h, e, n)

    def _grow_users(self, n_old: int, n_new: int) -> None:
        self.set_history(self.history)

    def side_encoder(self):
        ux = self.features.user_extractor
        return ux.side if ux.use_side else None

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        users = np.asarray(users, np.int64)
        items = np.asarray(items, np.int64)
        c = self.features.user_clusters[users]
        if self.predictor == "paper":
            return self.clip(self.paper_table[c, items])
        st = self.state
        pred = st.mu + st.b_user[users] + st.b_item[items] + st.resid[c, items]
        if self.nbr is not None:
            pred = pred + self._nbr_pairs(users, items)
        return self.clip(pred)

    def _nbr_pairs(self, users: np.ndarray, items: np.ndarray, chunk: int = 1024) -> np.ndarray:
        out = np.zeros(len(users))
        uniq, inv = np.unique(users, return_inverse=True)
        for start in range(0, len(uniq), chunk):
            block = uniq[start : start + chunk]
            rows = self.nbr.rows(block)
            sel = (inv >= start) & (inv < start + len(block))
            out[sel] = rows[inv[sel] - start, items[sel]]
        return out

    def score(self, users: np.ndarray) -> np.ndarray:
        users = np.asarray(users, np.int64)
        c = self.features.user_clusters[users]
        if self.predictor == "paper":
            return self.paper_table[c].astype(np.float32)
        st = self.state
        s = st.mu + st.b_user[users][:, None] + st.b_item[None, :] + st.resid[c]
        if self.nbr is not None:
            s = s + self.nbr.rows(users)
        return s.astype(np.float32)

    # -- artifacts ---------------------------------------------------------------------------------

    def save_artifacts(self, run_dir: Path) -> None:
        run_dir = Path(run_dir)
        plot_elbow(self.features.clusters, run_dir / "ghrs_elbow.png")
        stats = {"k": self.features.n_clusters_, "chosen_by": self.features.clusters.chosen_by,
                 "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
                 "user_graph": self.features.user_extractor.graph.summary(),
                 "graph_feature_modes": self.features.user_extractor.raw.modes,
                 "autoencoder_loss": [self.features.user_ae.losses[0], self.features.user_ae.losses[-1]]}
        import json

        (run_dir / "ghrs_summary.json").write_text(json.dumps(stats, indent=2))
        if self.sweep_table is not None:
            self.sweep_table.to_csv(run_dir / "ghrs_alpha_sweep.csv", index=False)
            plot_alpha_sweep(self.sweep_table, run_dir / "ghrs_alpha_sweep.png")


# --------------------------------------------------------------------------------------------------
# alpha sweep


def alpha_sweep(
    dataset: RatingsDataset,
    train: pd.DataFrame,
    valid: pd.DataFrame | None,
    alphas: list[float],
    params: dict,
    seed: int = 0,
) -> pd.DataFrame:
    """Refit GHRS for each alpha on ``train`` and measure RMSE/MAE on ``valid`` (an inner 10% split of
    ``train`` when ``valid`` is empty). Returns one row per alpha with the graph size and timings."""
    from ghrs.metrics import mae, rmse

    if valid is None or len(valid) == 0:
        rng = np.random.default_rng(seed)
        hold = rng.random(len(train)) < 0.1
        train, valid = train[~hold], train[hold]
    rows = []
    for a in alphas:
        p = dict(params, alpha=float(a), alpha_sweep=None, item_side=False)
        t0 = time.perf_counter()
        m = GHRSRecommender(**p).fit(dataset, train)
        m.set_history(train)
        pred = m.predict(valid["user"].to_numpy(), valid["item"].to_numpy())
        g = m.features.user_extractor.graph
        rows.append({
            "alpha": float(a), "threshold": g.threshold, "graph_nodes": len(g.nodes), "graph_edges": g.n_edges,
            "k": m.features.n_clusters_, "rmse": rmse(pred, valid["rating"].to_numpy()),
            "mae": mae(pred, valid["rating"].to_numpy()), "seconds": time.perf_counter() - t0,
        })
        log.info("alpha sweep: %s", rows[-1])
    return pd.DataFrame(rows)


def plot_alpha_sweep(table: pd.DataFrame, path: Path, title: str = "GHRS alpha sweep") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for col, style in (("rmse", "o-"), ("mae", "s--")):
        if col in table:
            ax.plot(table["alpha"], table[col], style, label=col.upper())
    ax.set_xlabel("alpha (edge threshold = alpha * n_items)")
    ax.set_ylabel("validation error")
    ax2 = ax.twinx()
    ax2.plot(table["alpha"], table["graph_edges"], ":", color="gray", label="edges")
    ax2.set_ylabel("graph edges", color="gray")
    ax.legend(loc="upper left")
    ax.set_title(title)
    return save_figure(fig, path)
