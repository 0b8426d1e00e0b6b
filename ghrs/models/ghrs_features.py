"""GHRS's feature pipeline (steps 1-5 of :mod:`ghrs.models.ghrs`) as reusable arrays: :class:`GHRSFeatures`."""

from __future__ import annotations

import logging
from typing import Self

import numpy as np
import pandas as pd

from ghrs.autoencoder import AutoEncoderConfig, TrainedAutoEncoder, train_autoencoder
from ghrs.clustering import ClusterResult, fit_clusters
from ghrs.data.dataset import RatingsDataset
from ghrs.errors import UserError
from ghrs.features.item_features import ItemFeatureExtractor
from ghrs.features.user_features import StageLog, UserFeatureExtractor
from ghrs.graph.graph_features import FEATURES, CentralityConfig

log = logging.getLogger(__name__)


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

    Args: see ``conf/model/ghrs.yaml``; ``user_autoencoder=False`` (codes unused and one cluster) fits no
    user autoencoder: the codes have width 0 and every user is in cluster 0.
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
        user_autoencoder: bool = True,
        stages: StageLog | None = None,
    ):
        if not user_autoencoder and n_clusters != 1:
            raise UserError(f"ghrs: user_autoencoder=false leaves nothing to cluster on; it needs n_clusters=1, "
                            f"got {n_clusters}")
        self.user_autoencoder = bool(user_autoencoder)
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
        if ux.names == ["constant"] and self.n_clusters != 1:
            raise UserError("ghrs: the user vector is empty (graph_features=[] and use_side=false), so codes "
                            "and clusters carry nothing: keep graph features or side info, or set n_clusters=1")
        self.user_feature_names = ux.names
        self.user_ae: TrainedAutoEncoder | None = None
        if self.user_autoencoder:
            with self.stages("autoencoder"):
                self.user_ae = train_autoencoder(base[self.trained_users], self.autoencoder_cfg, self.seed)
        codes = self._encode(base)
        with self.stages("clustering"):  # without codes: one cluster, fitted on a constant column
            points = codes if codes.shape[1] else np.zeros((n_users, 1), np.float32)
            self.clusters: ClusterResult = fit_clusters(
                points[self.trained_users], self.n_clusters, self.k_range, self.seed, self.kmeans_n_init
            )
        labels = np.empty(n_users, np.int64)
        labels[self.trained_users] = self.clusters.labels
        if (~self.trained_users).any():
            labels[~self.trained_users] = self._assign(codes[~self.trained_users])
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

    def _encode(self, x: np.ndarray) -> np.ndarray:
        """(n, d) user vectors -> (n, code_dim) codes; width 0 without the user autoencoder."""
        return self.user_ae.encode(x) if self.user_ae is not None else np.zeros((len(x), 0), np.float32)

    def _assign(self, codes: np.ndarray) -> np.ndarray:
        """(n,) cluster of each code row (cluster 0 for zero-width codes)."""
        return self.clusters.predict(codes) if codes.shape[1] else np.zeros(len(codes), np.int64)

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
        c = self._encode(x)
        self.user_features[new_users] = x
        self.user_codes[new_users] = c
        self.user_clusters[new_users] = self._assign(c)
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
            c = self._encode(x)
            base = np.concatenate([base, x])
            codes = np.concatenate([codes, c])
            labels = np.concatenate([labels, self._assign(c)])
            self.trained_users = np.concatenate([self.trained_users, np.zeros(len(rows), bool)])
            self._base = (base, codes, labels)
        return base, codes, labels
