"""GHRS step 5: k-means on the autoencoder codes, k by the elbow method (or fixed).

The elbow is located with the Kneedle rule on the log of the inertia: both axes are scaled to [0, 1]
and the chosen k is the one whose point lies furthest below the straight line from the first to the
last point of the curve. The log makes the rule scale-free in the depth of the drop: on planted
blobs, a linear-scale knee stops early (at 7 of 8 or 9 of 12 blobs, since the first splits remove
most of the inertia); the log-scale knee finds the planted k.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans

from ghrs.autoencoder import limited_threads
from ghrs.io import save_figure

log = logging.getLogger(__name__)


def knee_point(ks: np.ndarray, inertias: np.ndarray, log: bool = True) -> int:
    """The elbow of a decreasing curve ``inertias(ks)`` (Kneedle on min-max-scaled axes, on the log of
    the inertia when ``log``)."""
    ks = np.asarray(ks, np.float64)
    y = np.asarray(inertias, np.float64)
    if log:
        y = np.log(np.maximum(y, 1e-12 * max(y.max(), 1e-300)))
    if len(ks) < 3:
        return int(ks[0])
    xs = (ks - ks[0]) / (ks[-1] - ks[0])
    span = y.max() - y.min()
    if span <= 0:
        return int(ks[0])
    ys = (y - y.min()) / span
    chord = ys[0] + (ys[-1] - ys[0]) * xs  # line from the first to the last point
    gap = chord - ys
    return int(ks[int(np.argmax(gap))])


@dataclass
class ClusterResult:
    """Fitted k-means with the elbow curve it was chosen from (empty when k was given)."""

    kmeans: KMeans
    k: int
    ks: np.ndarray
    inertias: np.ndarray
    chosen_by: str  # "elbow" | "fixed"

    @property
    def labels(self) -> np.ndarray:
        return self.kmeans.labels_

    def predict(self, x: np.ndarray) -> np.ndarray:
        with limited_threads(1):
            return self.kmeans.predict(np.asarray(x, np.float32)).astype(np.int64)


def elbow_curve(x: np.ndarray, k_range: tuple[int, int], seed: int = 0, n_init: int = 4) -> tuple[np.ndarray, np.ndarray, list[KMeans]]:
    """k-means inertia for every k in ``[k_range[0], k_range[1]]`` (clipped to the number of rows)."""
    lo, hi = int(k_range[0]), int(k_range[1])
    hi = min(hi, len(x))
    if lo < 1 or hi < lo:
        raise ValueError(f"k_range must satisfy 1 <= lo <= hi (<= n rows {len(x)}), got {k_range}")
    ks = np.arange(lo, hi + 1)
    with limited_threads(1):
        models = [KMeans(n_clusters=int(k), n_init=n_init, random_state=seed).fit(x) for k in ks]
    return ks, np.array([m.inertia_ for m in models]), models


def fit_clusters(
    x: np.ndarray, n_clusters: int | None = None, k_range: tuple[int, int] = (2, 20), seed: int = 0, n_init: int = 4
) -> ClusterResult:
    """k-means on the rows of ``x``; ``n_clusters=None`` picks k at the elbow of ``k_range``."""
    x = np.asarray(x, np.float32)
    if n_clusters is not None:
        k = int(n_clusters)
        if not 1 <= k <= len(x):
            raise ValueError(f"n_clusters must be in [1, {len(x)}], got {n_clusters}")
        with limited_threads(1):
            km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(x)
        return ClusterResult(km, k, np.empty(0, np.int64), np.empty(0), "fixed")
    ks, inertias, models = elbow_curve(x, k_range, seed, n_init)
    k = knee_point(ks, inertias)
    log.info("elbow over k in [%d, %d]: k = %d", ks[0], ks[-1], k)
    return ClusterResult(models[int(np.flatnonzero(ks == k)[0])], k, ks, inertias, "elbow")


def plot_elbow(result: ClusterResult, path: Path, title: str = "GHRS k-means elbow") -> Path | None:
    """Save the inertia curve with the chosen k marked; nothing to plot when k was fixed."""
    if len(result.ks) == 0:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(result.ks, result.inertias, "o-", color="tab:blue")
    ax.axvline(result.k, color="tab:red", ls="--", label=f"elbow k = {result.k}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("number of clusters k")
    ax.set_ylabel("k-means inertia")
    ax.set_title(title)
    ax.legend()
    return save_figure(fig, path)
