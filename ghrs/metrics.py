"""Rating and ranking metrics (lower-case names, RecBole's convention: ``rmse``, ``ndcg@10``)."""

from __future__ import annotations

import numpy as np
import torch

RANKING_METRICS = ("precision", "recall", "hr", "ndcg", "mrr")


def rmse(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred, np.float64) - np.asarray(true, np.float64)) ** 2)))


def mae(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(pred, np.float64) - np.asarray(true, np.float64))))


_TIE_ORDERS: dict[tuple[int, str], torch.Tensor] = {}


def tie_break_order(n_items: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(n_items,) the fixed pseudo-random permutation that decides between equal scores (seed 0, so every
    model and run breaks ties the same way)."""
    key = (n_items, str(device))
    if key not in _TIE_ORDERS:
        _TIE_ORDERS[key] = torch.randperm(n_items, generator=torch.Generator().manual_seed(0)).to(device)
    return _TIE_ORDERS[key]


def ranking_metrics(
    scores: torch.Tensor, relevant: torch.Tensor, seen: torch.Tensor | None, ks: tuple[int, ...] = (10,)
) -> dict[str, torch.Tensor]:
    """Per-user top-k metrics over a full ranking of all items.

    Args:
        scores: (batch, n_items) higher = better.
        relevant: (batch, n_items) bool, the held-out relevant items of each user.
        seen: (batch, n_items) bool, items excluded from the ranking (already consumed); or None.
        ks: cut-offs.

    Returns ``{"precision@k": (batch,), "recall@k", "hr@k", "ndcg@k", "mrr@k"}`` per-user values; rows
    with no relevant item give NaN (callers average with ``nanmean``).
    """
    scores = scores.float()
    if seen is not None:
        scores = scores.masked_fill(seen, float("-inf"))
    kmax = min(max(ks), scores.shape[1])
    # Equal scores are ranked in a fixed pseudo-random item order, not by item index: index order carries
    # information (MovieLens ids follow popularity / release), which a model with tied scores (popularity
    # counts, cold items with no signal) would otherwise be credited with.
    order = tie_break_order(scores.shape[1], scores.device)
    top = order[torch.topk(scores[:, order], kmax, dim=1).indices]  # (batch, kmax) item indices
    hits = relevant.gather(1, top).float()  # (batch, kmax) 1 where the ranked item is relevant
    n_rel = relevant.sum(1).float()
    valid = n_rel > 0
    nan = torch.full_like(n_rel, float("nan"))
    discount = 1.0 / torch.log2(torch.arange(2, kmax + 2, dtype=torch.float32, device=scores.device))
    out: dict[str, torch.Tensor] = {}
    for k in ks:
        kk = min(k, kmax)
        h = hits[:, :kk]
        n_hit = h.sum(1)
        idcg = torch.cumsum(discount, 0)[(n_rel.clamp(min=1, max=kk) - 1).long()]
        first = torch.where(h.any(1), h.argmax(1).float() + 1, torch.full_like(n_rel, float("inf")))
        vals = {
            "precision": n_hit / k,
            "recall": n_hit / n_rel.clamp(min=1),
            "hr": (n_hit > 0).float(),
            "ndcg": (h * discount[:kk]).sum(1) / idcg,
            "mrr": 1.0 / first,
        }
        for name in RANKING_METRICS:
            out[f"{name}@{k}"] = torch.where(valid, vals[name], nan)
    return out

