"""GHRS step 3 (user side): graph features of the user similarity graph joined with side information.

Side information follows the paper: gender, age in six bins (<=10, 11-20, 21-30, 31-40, 41-50, >50) and
occupation, one-hot; optionally the zip code's first character as a region. ML-1M's age codes (1, 18,
25, 35, 45, 50, 56) fall into the same bins. Tables without these columns (CSV, synthetic variants) are
encoded by the generic rules of :class:`ghrs.data.side_features.SideTableEncoder`. The side encoder is
fitted on the training users only and reused, unchanged, for users folded in later.

Everything rating-derived (the graph, its features and their scaling) is fitted on the training ratings
only; users unseen by ``fit`` get their graph features from the edges their revealed ratings give
against the training users (:meth:`UserFeatureExtractor.transform_new`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import contextmanager

import numpy as np
import pandas as pd

from ghrs.data.side_features import SideTableEncoder, check_policy, report_side_problems
from ghrs.graph.graph_features import FEATURES, CentralityConfig, FeatureScaler, compute_graph_features
from ghrs.graph.similarity_graph import SimilarityGraph, extend_with_new_users, user_similarity_graph

log = logging.getLogger(__name__)

AGE_EDGES = [-np.inf, 10, 20, 30, 40, 50, np.inf]  # right-inclusive: (-inf, 10], (10, 20], ...
AGE_LABELS = ["<=10", "11-20", "21-30", "31-40", "41-50", ">50"]
PAPER_COLUMNS = ("gender", "age", "occupation")


class StageLog:
    """Wall time of named stages, shared by the GHRS steps; ``listeners`` are called as
    ``listener(stage, "start" | "end")`` around every stage (the benchmark measures memory with them)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.listeners: list[Callable[[str, str], None]] = []

    @contextmanager
    def __call__(self, name: str):
        for listener in self.listeners:
            listener(name, "start")
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
            for listener in self.listeners:
                listener(name, "end")

    def __getstate__(self) -> dict:  # listeners are process-local (not pickled with a model)
        return {"seconds": self.seconds, "listeners": []}


def age_bin(age: pd.Series) -> pd.Series:
    """The paper's six age bins as labels (missing ages -> NaN)."""
    return pd.cut(pd.to_numeric(age, errors="coerce"), AGE_EDGES, labels=AGE_LABELS, right=True)


class SideEncoder:
    """The GHRS side-information vector, fitted once on the training users and reused for new ones.

    The paper's columns become labels (gender, the six age bins, occupation, optionally the zip code's
    first character as a region), one-hot; any other column of a richer table (numbers, strings,
    ``a|b`` tags) goes through the generic rules of :class:`~ghrs.data.side_features.SideTableEncoder`.
    Tables without the paper's columns (CSV, synthetic variants) use the generic rules alone.

    Fitted attributes: ``encoder_`` (a :class:`SideTableEncoder` over the derived table), ``age_range_``
    (the training ages, checked for users folded in), ``names`` (feature names).
    """

    def __init__(self, zip_region: bool = False, numeric: str = "standard"):
        self.zip_region = zip_region
        self.numeric = numeric
        self.names: list[str] = []

    def _derived(self, table: pd.DataFrame) -> pd.DataFrame:
        """The paper's labels in place of gender/age/occupation/zip (other columns as they are)."""
        cols: dict[str, pd.Series] = {}
        if "gender" in table.columns:
            cols["gender"] = table["gender"].astype("string").str.upper().str.strip()
        if "age" in table.columns:
            cols["age"] = age_bin(table["age"]).astype("string")
        if "occupation" in table.columns:
            cols["occupation"] = table["occupation"].astype("string").str.strip().str.lower()
        if self.zip_region and "zip" in table.columns:
            cols["zip_region"] = table["zip"].astype("string").str.strip().str[:1]
        rest = table.drop(columns=[c for c in (*PAPER_COLUMNS, "zip") if c in table.columns])
        return pd.concat([pd.DataFrame(cols, index=table.index), rest], axis=1)

    def fit(self, table: pd.DataFrame) -> SideEncoder:
        self.generic = not any(c in table.columns for c in PAPER_COLUMNS)
        derived = table if self.generic else self._derived(table)
        paper = () if self.generic else tuple(c for c in ("gender", "age", "occupation", "zip_region")
                                              if c in derived.columns)
        self.encoder_ = SideTableEncoder(exclude=("zip",), numeric=self.numeric, categorical=paper).fit(derived)
        ages = pd.to_numeric(table["age"], errors="coerce") if not self.generic and "age" in table.columns else None
        self.age_range_ = (float(ages.min()), float(ages.max())) if ages is not None and ages.notna().any() else None
        self.names = list(self.encoder_.names_)
        return self

    def transform(self, table: pd.DataFrame) -> np.ndarray:
        """(n_rows, n_features) float32, with the training-time vocabularies and scalers."""
        return self.encoder_.transform(table if self.generic else self._derived(table))

    def check(self, table: pd.DataFrame, policy: str = "error") -> None:
        """Side values of users folded in that training never saw: an error, or (``ignore``) a warning."""
        check_policy(policy)
        problems = []
        if self.age_range_ is not None and "age" in table.columns:
            age = pd.to_numeric(table["age"], errors="coerce")
            lo, hi = self.age_range_
            bad = table["age"][age.isna() & table["age"].notna()].unique().tolist()
            problems += [f"age={v!r} is not a number" for v in bad]
            problems += [f"age={v:g} is outside the training range [{lo:g}, {hi:g}]"
                         for v in age[(age < lo) | (age > hi)].unique().tolist()]
        derived = table if self.generic else self._derived(table)
        problems += [p for p in self.encoder_.problems(derived) if not p.startswith("age=")]
        report_side_problems(problems, policy)


class UserFeatureExtractor:
    """The joined GHRS user vector ``[scaled graph features | side one-hots]``.

    Args:
        alpha: users linked when they agree (same item, same rating) on >= ``alpha * n_items`` items.
        centrality: :class:`CentralityConfig` (or a dict of its fields).
        scaling: graph feature scaling fitted on the training users in the graph
            (``max`` = the paper's division by the column max, ``minmax``, ``standard``, ``none``).
        graph_features: which of :data:`FEATURES` to keep (None: all six; an empty list: none, the
            vector is the side information alone and no graph is built).
        use_side: join the side information (False: graph features only).
        zip_region: add the zip code's first character as a one-hot region.
        max_degree: None, or each user keeps its ``max_degree`` strongest links (bounded edges).
        block: users per block of the co-agreement product (bounded memory).
    """

    def __init__(
        self,
        alpha: float = 0.01,
        centrality: CentralityConfig | dict | None = None,
        scaling: str = "max",
        graph_features: tuple[str, ...] | list[str] | None = None,
        use_side: bool = True,
        zip_region: bool = False,
        stages: StageLog | None = None,
        max_degree: int | None = None,
        block: int = 1024,
    ):
        self.alpha = float(alpha)
        if max_degree is not None and max_degree < 1:
            raise ValueError(f"ghrs graph_max_degree must be >= 1 or null, got {max_degree}")
        if block < 1:
            raise ValueError(f"ghrs graph_block must be >= 1, got {block}")
        self.max_degree, self.block = max_degree, int(block)
        self.centrality = CentralityConfig.from_any(centrality)
        self.scaling = scaling
        self.graph_feature_names = FEATURES if graph_features is None else tuple(graph_features)
        unknown = set(self.graph_feature_names) - set(FEATURES)
        if unknown:
            raise ValueError(f"unknown graph feature(s) {sorted(unknown)}; known: {FEATURES}")
        self.use_side = use_side
        self.side = SideEncoder(zip_region=zip_region)
        self.stages = stages or StageLog()

    @property
    def names(self) -> list[str]:
        names = [f"graph:{n}" for n in self.graph_feature_names] + (self.side.names if self.use_side else [])
        return names or ["constant"]

    def fit_transform(self, train: pd.DataFrame, users: pd.DataFrame, n_users: int, n_items: int) -> np.ndarray:
        """Build the graph on ``train`` and return the (n_users, d) joined vectors of all users."""
        self.train = train  # a reference (pickled once with the model), not a copy
        self.n_items = n_items
        self.cols = [FEATURES.index(n) for n in self.graph_feature_names]
        if self.use_side:  # fitted on the users with training ratings, reused for everyone else
            trained = np.unique(train["user"].to_numpy())
            self.side.fit(users.iloc[trained])
        if not self.cols:  # nothing is read off the graph: neither build it nor compute its features
            self.graph = None
            self.scaler = FeatureScaler(self.scaling).fit(np.zeros((0, 0)))
            return self.transform_rows(np.arange(n_users), np.zeros((n_users, len(FEATURES))),
                                       np.zeros(n_users, bool), users)
        with self.stages("graph"):
            self.graph: SimilarityGraph = user_similarity_graph(self.train, n_users, n_items, self.alpha,
                                                                block=self.block, max_degree=self.max_degree)
        log.info("user graph (alpha=%g): %s", self.alpha, self.graph.summary())
        with self.stages("graph_features"):
            self.raw = compute_graph_features(self.graph.adjacency, self.centrality)
        self.scaler = FeatureScaler(self.scaling).fit(self.raw.values[self.raw.in_graph][:, self.cols])
        return self.transform_rows(np.arange(n_users), self.raw.values, self.raw.in_graph, users)

    def transform_rows(
        self, rows: np.ndarray, raw_values: np.ndarray, in_graph: np.ndarray, users: pd.DataFrame
    ) -> np.ndarray:
        g = self.scaler.transform(raw_values[rows][:, self.cols])
        g[~in_graph[rows]] = 0.0  # users absent from the graph: zero graph features
        parts = [g.astype(np.float32)]
        if self.use_side:
            parts.append(self.side.transform(users.iloc[rows]))
        out = np.concatenate(parts, 1)
        if out.shape[1] == 0:  # no graph features and no side info: one constant column, no information
            out = np.zeros((len(rows), 1), np.float32)
        return out

    def transform_new(self, new_ratings: pd.DataFrame, new_users: np.ndarray, users: pd.DataFrame) -> np.ndarray:
        """Vectors of users unseen by fit from their revealed ratings (possibly none).

        The new users are linked to training users exactly as training users are linked among
        themselves (same threshold), never to each other; the features of the new users are then read
        off the extended graph (train users' features stay as fitted).
        """
        new_users = np.asarray(new_users, np.int64)
        n_all = len(users)
        raw = np.zeros((n_all, len(FEATURES)))
        in_graph = np.zeros(n_all, bool)
        if len(new_ratings) and self.cols:
            ext = extend_with_new_users(self.graph, self.train, new_ratings, n_all, self.n_items)
            touched = np.diff(ext.adjacency.indptr)[new_users] > 0
            if touched.any():
                feats = compute_graph_features(ext.adjacency, self.centrality)
                raw[new_users] = feats.values[new_users]
                in_graph[new_users] = feats.in_graph[new_users]
                log.info("cold users: %d of %d have edges to training users", int(touched.sum()), len(new_users))
        return self.transform_rows(new_users, raw, in_graph, users)
