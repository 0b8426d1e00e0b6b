"""The item-side counterpart of the GHRS user vector (for hybrid models; the paper clusters users only).

Joined item vector: ``[scaled item-graph features | popularity | genres multi-hot | decade one-hot]``.

- item graph: items linked when at least ``item_alpha * n_users`` training users rated both (the same
  way when ``same_rating``); the six graph features of :mod:`ghrs.graph.graph_features`, scaled on the
  training items in the graph; items outside the graph get zeros;
- popularity: ``log1p(#training ratings)`` and the item's shrunk mean training rating minus the global
  mean, both scaled by the training maximum (absolute value);
- side information: ``genres`` (``|``-joined) multi-hot and the release decade one-hot when the table
  has them, otherwise :func:`ghrs.data.side_features.encode_side_table`.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ghrs.data.side_features import encode_side_table
from ghrs.features.user_features import StageLog
from ghrs.graph.graph_features import FEATURES, CentralityConfig, FeatureScaler, compute_graph_features
from ghrs.graph.similarity_graph import item_similarity_graph

log = logging.getLogger(__name__)


def encode_item_side(items: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Genres multi-hot + release decade one-hot (MovieLens); the generic encoder otherwise."""
    if "genres" not in items.columns and "year" not in items.columns:
        return encode_side_table(items)
    blocks, names = [], []
    if "genres" in items.columns:
        g = items["genres"].astype("string").fillna("").str.get_dummies(sep="|")
        g = g.drop(columns=[c for c in g.columns if c in ("", "(no genres listed)", "unknown")], errors="ignore")
        blocks.append(g.to_numpy(np.float32))
        names += [f"genre={c}" for c in g.columns]
    if "year" in items.columns:
        year = pd.to_numeric(items["year"], errors="coerce")
        decade = (np.floor(year / 10) * 10).astype("Int64").astype("string")
        d = pd.get_dummies(decade.dropna()).reindex(items.index, fill_value=False)
        blocks.append(d.to_numpy(np.float32))
        names += [f"decade={c}" for c in d.columns]
    rest = items.drop(columns=[c for c in ("genres", "year", "title") if c in items.columns])
    if len(rest.columns):
        x, n = encode_side_table(rest)
        blocks.append(x)
        names += n
    return np.concatenate(blocks, 1).astype(np.float32), names


class ItemFeatureExtractor:
    """Item vectors from training ratings + item side table.

    Args:
        item_alpha: co-rating threshold as a share of the number of users.
        same_rating: require the same rating (GHRS-style agreement) rather than any co-rating.
        centrality, scaling: as for users.
        use_graph: compute the item graph features (False: popularity + side only).
        mean_shrinkage: pseudo-count pulling an item's mean rating towards the global mean.
    """

    def __init__(
        self,
        item_alpha: float = 0.05,
        same_rating: bool = False,
        centrality: CentralityConfig | dict | None = None,
        scaling: str = "max",
        use_graph: bool = True,
        mean_shrinkage: float = 10.0,
        stages: StageLog | None = None,
    ):
        self.item_alpha = float(item_alpha)
        self.same_rating = same_rating
        self.centrality = CentralityConfig.from_any(centrality)
        self.scaling = scaling
        self.use_graph = use_graph
        self.mean_shrinkage = mean_shrinkage
        self.stages = stages or StageLog()
        self.names: list[str] = []

    def fit_transform(self, train: pd.DataFrame, items: pd.DataFrame, n_users: int, n_items: int) -> np.ndarray:
        blocks, names = [], []
        if self.use_graph:
            with self.stages("item_graph"):
                self.graph = item_similarity_graph(train, n_users, n_items, self.item_alpha, self.same_rating)
            log.info("item graph (item_alpha=%g): %s", self.item_alpha, self.graph.summary())
            with self.stages("item_graph_features"):
                raw = compute_graph_features(self.graph.adjacency, self.centrality)
            scaler = FeatureScaler(self.scaling).fit(raw.values[raw.in_graph])
            g = scaler.transform(raw.values)
            g[~raw.in_graph] = 0.0
            self.graph_raw = raw
            blocks.append(g)
            names += [f"graph:{n}" for n in FEATURES]
        i = train["item"].to_numpy()
        r = train["rating"].to_numpy(np.float64)
        cnt = np.bincount(i, minlength=n_items).astype(np.float64)
        mu = r.mean() if len(r) else 0.0
        mean_off = np.bincount(i, r - mu, n_items) / (cnt + self.mean_shrinkage)
        pop = np.log1p(cnt)
        blocks.append(np.stack([pop / max(pop.max(), 1e-12), mean_off / max(np.abs(mean_off).max(), 1e-12)], 1))
        names += ["popularity:log_count", "popularity:mean_offset"]
        side, side_names = encode_item_side(items)
        blocks.append(side)
        names += side_names
        self.names = names
        return np.concatenate(blocks, 1).astype(np.float32)
