"""Evaluate a fitted recommender on a split: rating error and full-ranking top-k metrics."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from ghrs.data.dataset import RatingsDataset
from ghrs.data.splits import Split
from ghrs.metrics import mae, ranking_metrics, rmse
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
    stays bounded by ``batch_size * n_items``.
    """
    target = split.test if which == "test" else split.valid
    if len(target) == 0:
        return {}
    history = history_for(split, which)
    model.set_history(history)
    out: dict[str, float] = {"n_ratings": float(len(target))}
    if rating_metrics:
        pred = model.predict(target["user"].to_numpy(), target["item"].to_numpy())
        out["rmse"] = rmse(pred, target["rating"].to_numpy())
        out["mae"] = mae(pred, target["rating"].to_numpy())
    rel = target if split.relevant_min_rating is None else target[target["rating"] >= split.relevant_min_rating]
    users = np.unique(rel["user"].to_numpy())
    if len(users) == 0:
        return out
    seen_m = _user_item_matrix(history, dataset.n_users, dataset.n_items)
    rel_m = _user_item_matrix(rel, dataset.n_users, dataset.n_items)
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    batches = range(0, len(users), batch_size)
    for start in tqdm(batches, desc=f"rank {which}", disable=not progress or len(batches) < 5, leave=False):
        batch = users[start : start + batch_size]
        scores = torch.as_tensor(np.asarray(model.score(batch)))
        seen = torch.from_numpy(seen_m[batch].toarray())
        relevant = torch.from_numpy(rel_m[batch].toarray())
        for name, values in ranking_metrics(scores, relevant, seen, ks).items():
            ok = ~torch.isnan(values)
            sums[name] = sums.get(name, 0.0) + float(values[ok].sum())
            counts[name] = counts.get(name, 0) + int(ok.sum())
    out.update({name: sums[name] / max(1, counts[name]) for name in sums})
    out["n_rank_users"] = float(len(users))
    return out
