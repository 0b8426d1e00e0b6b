import math

import numpy as np
import pandas as pd
import pytest
import torch

from ghrs.evaluation import heldout_hit_rate
from ghrs.metrics import mae, ranking_metrics, rmse


def test_rating_errors_by_hand():
    assert rmse(np.array([1.0, 3.0]), np.array([2.0, 5.0])) == pytest.approx(math.sqrt((1 + 4) / 2))
    assert mae(np.array([1.0, 3.0]), np.array([2.0, 5.0])) == pytest.approx(1.5)


def test_ranking_metrics_hand_computed():
    # 6 items. User 0: seen item 0 (masked though scored highest); relevant {2, 4}.
    # Ranking after masking: 1 (0.9), 2 (0.8), 3 (0.7), 4 (0.6), 5 (0.1) -> top-3 = [1, 2, 3]
    scores = torch.tensor([[1.0, 0.9, 0.8, 0.7, 0.6, 0.1], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    relevant = torch.tensor([[0, 0, 1, 0, 1, 0], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    seen = torch.tensor([[1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    m = ranking_metrics(scores, relevant, seen, ks=(3, 5))
    # user 0 @3: one hit at rank 2
    assert m["precision@3"][0] == pytest.approx(1 / 3)
    assert m["recall@3"][0] == pytest.approx(1 / 2)
    assert m["hr@3"][0] == 1.0
    assert m["mrr@3"][0] == pytest.approx(1 / 2)
    assert m["ndcg@3"][0] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    # user 0 @5: hits at ranks 2 and 4
    assert m["ndcg@5"][0] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3)))
    assert m["recall@5"][0] == 1.0 and m["precision@5"][0] == pytest.approx(2 / 5)
    # user 1: relevant item ranked last (6th): no hit at 3 or 5
    for name in ("precision", "recall", "hr", "ndcg", "mrr"):
        assert m[f"{name}@5"][1] == 0.0


def test_users_without_relevant_items_are_nan():
    m = ranking_metrics(torch.rand(2, 4), torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0]], dtype=torch.bool), None, (2,))
    assert torch.isnan(m["hr@2"][0]) and not torch.isnan(m["hr@2"][1])


def test_heldout_hit_rate_against_a_brute_force_loop():
    rng = np.random.default_rng(4)
    n_users, n_items = 9, 30
    scores = rng.normal(size=(n_users, n_items))
    train = pd.DataFrame({"user": rng.integers(0, n_users, 80), "item": rng.integers(0, n_items, 80)})
    held = pd.DataFrame({"user": [0, 0, 2, 5, 7, 8], "item": [3, 4, 11, 29, 0, 17]})
    hits = []
    for u in np.unique(held["user"]):
        s = scores[u].copy()
        s[train.loc[train["user"] == u, "item"].to_numpy()] = -np.inf
        top = np.argsort(-s, kind="stable")[:10]
        hits.append(bool(set(top) & set(held.loc[held["user"] == u, "item"])))
    assert heldout_hit_rate(lambda users: scores[users], train, held) == pytest.approx(np.mean(hits))
    assert heldout_hit_rate(lambda users: torch.as_tensor(scores[users]), train, held) == pytest.approx(np.mean(hits))


def test_ties_are_not_broken_by_item_index():
    """All scores equal: the top 10 is the fixed pseudo-random tie order, not items 0..9, so a model that
    cannot tell items apart is not credited with whatever the index order encodes."""
    # Relevant = the ten smallest indices; all scores tied. torch.topk alone returns those very items at
    # some sizes (e.g. 2,000 items); through the tie order the hit rate over many sizes is near chance.
    assert set(torch.topk(torch.zeros(1, 2000), 10, dim=1).indices[0].tolist()) == set(range(10))
    hits = []
    for n in range(1500, 2500, 10):
        first = torch.zeros(1, n, dtype=torch.bool)
        first[0, :10] = True
        hits.append(float(ranking_metrics(torch.zeros(1, n), first, None, (10,))["hr@10"][0]))
    assert np.mean(hits) < 0.2  # chance: about 0.05
    n = 200
    # over many users with random relevant sets, tied scores give the chance rate, whatever the items' order
    rng = np.random.default_rng(0)
    rel = torch.from_numpy(rng.random((2000, n)) < 0.01)
    hits = ranking_metrics(torch.zeros(2000, n), rel, None, (10,))["hr@10"]
    rate = 1 - (1 - 0.01) ** 10
    assert abs(float(torch.nanmean(hits)) - rate) < 0.03
    # distinct scores: the order plays no part
    s = torch.from_numpy(rng.normal(size=(50, n)))
    r = torch.from_numpy(rng.random((50, n)) < 0.05)
    top = torch.topk(s, 10, dim=1).indices
    expected = r.gather(1, top).any(1).float()
    got = ranking_metrics(s, r, None, (10,))["hr@10"]
    assert torch.equal(torch.where(r.any(1), expected, torch.full_like(expected, float("nan"))).nan_to_num(-1),
                       got.nan_to_num(-1))
