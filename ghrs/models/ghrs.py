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
   - ``predictor="agreement_knn"`` (default; not part of the paper): global + user + item biases
     (:func:`fit_biases`) plus the
     cluster's shrunk mean residual on the item (backfitted with the biases), plus a neighbourhood
     residual over GHRS's own similarity -- the rate at which two users (items) gave the same rating
     -- from the user side and the item side (:class:`NeighbourConfig`). The clusters also give a cold
     user's bias prior (the shrunk mean bias of the training users in its cluster).

     The cluster term alone barely moves the bias baseline (the codes of graph centralities and
     demographics say little about taste: ML-100K u1 validation RMSE 0.9435 -> 0.9428); the
     agreement neighbourhood is what brings it below 0.93 (see NOTES.md, ``## GHRS``). ``"residual"``
     is its former name, still accepted with a deprecation warning.

:class:`GHRSFeatures` holds steps 1-5 (and the item-side counterpart: item graph, popularity, genres,
decade, item autoencoder codes) as arrays that other models reuse; ``transform_users`` folds in users
unseen at fit time without retraining anything.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np
import pandas as pd

from ghrs.clustering import plot_elbow
from ghrs.data.dataset import RatingsDataset
from ghrs.features.user_features import StageLog
from ghrs.io import save_figure
from ghrs.models.agreement_neighbourhood import NeighbourConfig, _Neighbourhood
from ghrs.models.base import Recommender
from ghrs.models.bias import fit_biases
from ghrs.models.ghrs_features import GHRSFeatures

log = logging.getLogger(__name__)

PREDICTORS = ("agreement_knn", "paper")
# Former predictor names -> current ones (accepted with a DeprecationWarning).
PREDICTOR_ALIASES = {"residual": "agreement_knn"}
PREDICTOR_PARAMS = ("predictor", "reg_user", "reg_item", "bias_epochs", "shrink_cluster_item", "shrink_cluster_bias",
                    "backfit_rounds", "neighbours")
LEAKAGE = ("none", "features", "all")


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
        predictor: ``agreement_knn`` (default) or ``paper`` (``residual``: agreement_knn's deprecated alias).
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
        user_autoencoder: False fits no user autoencoder (codes of width 0; needs ``n_clusters=1``): set
            by the hybrid when it uses neither codes nor clusters.
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
        predictor: str = "agreement_knn",
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
        user_autoencoder: bool = True,
    ):
        if leakage not in LEAKAGE:
            raise ValueError(f"ghrs leakage must be one of {LEAKAGE}, got {leakage!r}")
        self.feature_kwargs = {
            "alpha": alpha, "scaling": scaling, "graph_features": graph_features, "use_side": use_side,
            "zip_region": zip_region, "centrality": centrality, "autoencoder": autoencoder, "n_clusters": n_clusters,
            "k_range": tuple(k_range), "kmeans_n_init": kmeans_n_init, "item_side": item_side,
            "item_alpha": item_alpha, "item_same_rating": item_same_rating, "item_centrality": item_centrality,
            "item_autoencoder": item_autoencoder, "graph_max_degree": graph_max_degree, "graph_block": graph_block,
            "seed": seed, "user_autoencoder": user_autoencoder,
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
        if p["predictor"] in PREDICTOR_ALIASES:
            new = PREDICTOR_ALIASES[p["predictor"]]
            warnings.warn(f"ghrs predictor={p['predictor']!r} is deprecated: it is now called {new!r}",
                          DeprecationWarning, stacklevel=3)
            p["predictor"] = new
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
        if self.predictor == "agreement_knn" and self.neighbours.active:
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
                 "autoencoder_loss": [ae.losses[0], ae.losses[-1]] if (ae := self.features.user_ae) else None}
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
