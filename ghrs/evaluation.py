"""Evaluate a fitted recommender on a split: rating error and full-ranking top-k metrics."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from ghrs import distributed
from ghrs.data.dataset import RatingsDataset
from ghrs.data.splits import Split
from ghrs.metrics import RANKING_METRICS, ranking_metrics
from ghrs.models.base import Recommender

log = logging.getLogger(__name__)


def history_for(split: Split, which: str) -> pd.DataFrame:
    """What the model may condition on when predicting ``which`` (``"valid"`` or ``"test"``)."""
    parts = [split.train, split.revealed]
    if which == "test":
        parts.append(split.valid)  # the validation interaction precedes the test one in time
    return pd.concat([p for p in parts if len(p)], ignore_index=True)


def _user_item_matrix(table: pd.DataFrame, n_users: int, n_items: int) -> sp.csr_matrix:
    ones = np.ones(len(table), dtype=bool)
    return sp.csr_matrix((ones, (table["user"].to_numpy(), table["item"].to_numpy())), shape=(n_users, n_items))


def heldout_hit_rate(score, train: pd.DataFrame, heldout: pd.DataFrame, k: int = 10) -> float:
    """Mean HR@k of the users in ``heldout`` over a full ranking, their ``train`` items masked.

    Args:
        score: ``users (n,) -> (n, n_items)`` scores (array or tensor), higher = better.
        train, heldout: frames with ``user`` and ``item`` columns (interactions seen / to be found).
    Used as the early-stopping metric of the top-k models (validation items only).
    """
    users = np.unique(heldout["user"].to_numpy())
    s = score(users)
    scores = s.detach().cpu() if torch.is_tensor(s) else torch.as_tensor(np.asarray(s))
    shape = (int(max(train["user"].max(), users.max())) + 1, scores.shape[1])
    seen = torch.from_numpy(_user_item_matrix(train, *shape)[users].toarray())
    relevant = torch.from_numpy(_user_item_matrix(heldout, *shape)[users].toarray())
    return float(torch.nanmean(ranking_metrics(scores, relevant, seen, (k,))[f"hr@{k}"]))


def evaluate(
    model: Recommender,
    dataset: RatingsDataset,
    split: Split,
    which: str = "test",
    ks: tuple[int, ...] = (10,),
    batch_size: int = 1024,
    rating_metrics: bool = True,
    progress: bool = True,
) -> dict[str, float]:
    """Metrics of ``model`` on ``split.test`` or ``split.valid``.

    Ranking: every user with at least one relevant held-out item ranks all items, minus the items in
    the history it was given (seen items are masked); scored ``batch_size`` users at a time so memory
    stays bounded by ``batch_size * n_items``. Scores and the top-k selection stay on the model's device
    (``Recommender.score_tensor``). Splits with cold items (``split.cold_items``) also get the cold-item
    protocol on the test part: each user's relevant cold items ranked among the cold items only (metrics
    ``cold:hr@10``, ...).
    """
    target = split.test if which == "test" else split.valid
    if len(target) == 0:
        return {}
    history = history_for(split, which)
    model.set_history(history)
    rating_metrics = rating_metrics and getattr(model, "predicts_ratings", True)  # ranking-only models
    out: dict[str, float] = {"n_ratings": float(len(target))}
    # Under DDP each rank takes a share of the ratings and users; sums are reduced over ranks below.
    rank, world = distributed.rank(), distributed.world_size()
    sums: dict[str, float] = {}
    if rating_metrics:
        mine = target.iloc[rank::world]
        pred = model.predict(mine["user"].to_numpy(), mine["item"].to_numpy()).astype(np.float64)
        err = pred - mine["rating"].to_numpy(np.float64)
        sums.update({"sse": float((err**2).sum()), "sae": float(np.abs(err).sum()), "n": float(len(mine))})
    rel = target if split.relevant_min_rating is None else target[target["rating"] >= split.relevant_min_rating]
    all_users = np.unique(rel["user"].to_numpy())
    users = all_users[rank::world]
    if len(all_users) == 0 and not rating_metrics:
        return out
    cold = torch.zeros(dataset.n_items, dtype=torch.bool)
    if which == "test" and len(split.cold_items):
        cold[torch.as_tensor(split.cold_items)] = True
    protocols = ("", "cold:") if cold.any() else ("",)
    if len(all_users):  # same keys on every rank, whatever its share, for the reduction
        sums.update({f"{p}{c}{m}@{k}": 0.0 for m in RANKING_METRICS for k in ks for p in ("", "count:")
                     for c in protocols})
    seen_m = _user_item_matrix(history, dataset.n_users, dataset.n_items)
    rel_m = _user_item_matrix(rel, dataset.n_users, dataset.n_items)
    batches = range(0, len(users), batch_size)
    for start in tqdm(batches, desc=f"rank {which}", disable=not progress or len(batches) < 5, leave=False):
        batch = users[start : start + batch_size]
        scores = model.score_tensor(batch)  # on the model's device: the ranking runs there too
        seen = torch.from_numpy(seen_m[batch].toarray()).to(scores.device)
        relevant = torch.from_numpy(rel_m[batch].toarray()).to(scores.device)
        for c in protocols:  # "cold:": only cold items are candidates (and relevant)
            args = (relevant, seen) if not c else (relevant & cold.to(scores.device), seen | ~cold.to(scores.device))
            for name, values in ranking_metrics(scores, *args, ks).items():
                ok = ~torch.isnan(values)
                sums[c + name] = sums.get(c + name, 0.0) + float(values[ok].sum())
                sums[f"count:{c}{name}"] = sums.get(f"count:{c}{name}", 0.0) + float(ok.sum())
    sums = distributed.all_reduce_sum(sums)
    if rating_metrics and sums["n"]:
        out["rmse"] = float(np.sqrt(sums["sse"] / sums["n"]))
        out["mae"] = sums["sae"] / sums["n"]
    for name in [k for k in sums if k.startswith("count:")]:
        metric = name.split(":", 1)[1]
        out[metric] = sums[metric] / max(1.0, sums[name])
    if len(all_users):
        out["n_rank_users"] = float(len(all_users))
    return out
