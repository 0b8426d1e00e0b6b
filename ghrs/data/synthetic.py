"""Synthetic MovieLens-shaped data with planted structure, for fast tests and scaling benchmarks.

Planted structure (what a good model can find):
- ``n_groups`` user groups, each with its own demographics (age, gender, occupation) and its own taste
  over ``n_groups`` item clusters (each cluster has its own genres and era);
- ratings = global mean + user bias + item bias + group-cluster affinity + noise, rounded to 1..5;
- which items a user rates follows the taste, and in time order a user tends to move to the next item
  of the same cluster ("series" structure a sequence encoder can learn);
- drift: over a user's history the taste slides from the group's first to its second profile.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ghrs.data.build import build_dataset, validate_ratings
from ghrs.data.dataset import RatingsDataset

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Thriller", "Documentary"]
OCCUPATIONS = ["student", "engineer", "artist", "doctor", "writer", "retired", "other"]


@dataclass
class SyntheticTruth:
    user_group: np.ndarray  # (n_users,) planted group of each user index
    item_cluster: np.ndarray  # (n_items,) planted cluster of each item index


def make_synthetic(
    n_users: int = 300,
    n_items: int = 200,
    n_groups: int = 4,
    ratings_per_user: int = 40,
    noise: float = 0.4,
    sequential: float = 0.6,
    drift: float = 0.3,
    activity_sigma: float = 0.0,
    seed: int = 0,
    return_truth: bool = False,
) -> RatingsDataset | tuple[RatingsDataset, SyntheticTruth]:
    """Generate a dataset; see the module docstring for the planted structure.

    Args:
        ratings_per_user: mean number of ratings per user (each user gets at least 5).
        sequential: probability that a user's next item is the successor of the previous one in its
            cluster (0 = no sequential structure).
        drift: weight of the group's second taste profile at the end of each history.
        activity_sigma: 0: history lengths are Poisson around ``ratings_per_user``; > 0: log-normal with
            that sigma and mean ``ratings_per_user`` (long-tailed like MovieLens; ML-1M is close to 1.0).
    """
    if n_items < n_groups or n_users < n_groups:
        raise ValueError("need at least one user and one item per group")
    rng = np.random.default_rng(seed)
    group = rng.integers(0, n_groups, n_users)
    cluster = np.sort(rng.integers(0, n_groups, n_items))  # items of a cluster are contiguous
    # Two taste profiles per group; the first strongly prefers its own cluster.
    taste0 = rng.normal(-0.6, 0.3, (n_groups, n_groups))
    taste0[np.arange(n_groups), np.arange(n_groups)] = 1.2
    taste1 = np.roll(taste0, 1, axis=1)
    user_bias = rng.normal(0, 0.3, n_users)
    item_bias = rng.normal(0, 0.3, n_items)
    popularity = rng.zipf(1.6, n_items).clip(1, 200).astype(float)

    if activity_sigma > 0:
        mean_log = np.log(ratings_per_user) - activity_sigma**2 / 2
        lengths = np.maximum(5, np.rint(rng.lognormal(mean_log, activity_sigma, n_users))).astype(int).clip(max=n_items)
    else:
        lengths = np.maximum(5, rng.poisson(ratings_per_user, n_users)).clip(max=n_items)
    log_pop = np.log(popularity)
    mid_taste = taste0 + 0.5 * drift * (taste1 - taste0)
    parts_u, parts_i, parts_r, parts_t = [], [], [], []
    for u in range(n_users):
        g, n = group[u], int(lengths[u])
        # Gumbel top-n = sampling n items without replacement, prob ~ popularity * exp(2 * taste).
        keys = log_pop + 2.0 * mid_taste[g][cluster] + rng.gumbel(size=n_items)
        chosen = np.argpartition(-keys, n - 1)[:n]
        # Time order: a `sequential` share of the history walks items in id order (series within a
        # cluster), the rest is shuffled in between.
        order_key = np.where(rng.random(n) < sequential, np.argsort(np.argsort(chosen)) / n, rng.random(n))
        chosen = chosen[np.argsort(order_key, kind="stable")]
        w = drift * np.arange(n) / max(1, n - 1)
        aff = (1 - w) * taste0[g][cluster[chosen]] + w * taste1[g][cluster[chosen]]
        r = 3.5 + user_bias[u] + item_bias[chosen] + aff + rng.normal(0, noise, n)
        parts_u.append(np.full(n, u + 1))
        parts_i.append(chosen + 1)
        parts_r.append(np.clip(np.rint(r), 1, 5))
        parts_t.append(880_000_000 + int(rng.integers(0, 10_000_000)) + np.cumsum(rng.integers(60, 86_400 * 3, n)))
    rows_u, rows_i = np.concatenate(parts_u), np.concatenate(parts_i)
    rows_r, rows_t = np.concatenate(parts_r), np.concatenate(parts_t)

    ratings = pd.DataFrame({"user": rows_u, "item": rows_i, "rating": rows_r, "timestamp": rows_t})
    ages = np.clip(rng.normal(18 + 8 * group, 4), 7, 75).astype(int)
    gender = np.where(rng.random(n_users) < 0.2 + 0.6 * (group % 2), "F", "M")
    occ = np.array(OCCUPATIONS)[(group + (rng.random(n_users) < 0.3) * rng.integers(0, 7, n_users)) % len(OCCUPATIONS)]
    users = pd.DataFrame(
        {"id": np.arange(1, n_users + 1), "age": ages, "gender": gender, "occupation": occ,
         "zip": [f"{(g * 2 + 1) % 10}{rng.integers(1000, 9999)}" for g in group]}
    )
    genres = [
        "|".join(sorted({GENRES[c % len(GENRES)], GENRES[(c * 3 + 1 + (i % 2)) % len(GENRES)]}))
        for i, c in enumerate(cluster)
    ]
    items = pd.DataFrame(
        {"id": np.arange(1, n_items + 1), "title": [f"Item {i + 1} (cluster {c})" for i, c in enumerate(cluster)],
         "year": (1950 + 10 * cluster + rng.integers(0, 10, n_items)).astype(float), "genres": genres}
    )
    ds = build_dataset(
        f"synthetic-{n_users}x{n_items}-s{seed}",
        validate_ratings(ratings, "<synthetic>", (1.0, 5.0)),
        users, items, (1.0, 5.0), "error", "<synthetic>",
    )
    if return_truth:
        return ds, SyntheticTruth(group[ds.user_ids - 1], cluster[ds.item_ids - 1])
    return ds
