"""Item-based baseline kNN (pearson-baseline similarity with shrinkage) on planted data and a brute-force
reference."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from ghrs.data.splits import RandomSplit
from ghrs.data.synthetic import make_synthetic
from ghrs.errors import UserError
from ghrs.metrics import rmse
from ghrs.models.bias import BiasRecommender
from ghrs.models.knn_baseline import KNNBaselineRecommender


@pytest.fixture(scope="module")
def data():
    ds, truth = make_synthetic(n_users=200, n_items=100, ratings_per_user=30, seed=5, return_truth=True)
    return ds, RandomSplit(0.15, seed=0)(ds), truth


def test_knn_baseline_learns_the_planted_item_clusters(data):
    ds, s, truth = data
    u, i, y = s.test["user"].to_numpy(), s.test["item"].to_numpy(), s.test["rating"].to_numpy()
    knn = KNNBaselineRecommender(k=20, shrinkage=10).fit(ds, s.train)
    bias = BiasRecommender().fit(ds, s.train)
    assert rmse(knn.predict(u, i), y) < rmse(bias.predict(u, i), y) - 0.03
    sim = knn.sim_
    assert sim.shape == (ds.n_items, ds.n_items) and np.allclose(sim, sim.T) and not np.diag(sim).any()
    # residuals of items of one planted cluster correlate; across clusters far less
    same = truth.item_cluster[:, None] == truth.item_cluster[None, :]
    np.fill_diagonal(same, False)
    assert sim[same].mean() > sim[~same].mean() + 0.1


def _reference(train: pd.DataFrame, knn: KNNBaselineRecommender, u: int, i: int) -> float:
    """Brute force over dicts: the same estimator written the slow, obvious way."""
    b = knn.bias_
    base = lambda uu, ii: b.mu + b.b_user[uu] + b.b_item[ii]  # noqa: E731
    e = {(uu, ii): r - base(uu, ii) for uu, ii, r in zip(train["user"], train["item"], train["rating"])}
    by_item: dict[int, dict[int, float]] = {}
    for (uu, ii), v in e.items():
        by_item.setdefault(ii, {})[uu] = v

    def sim(a: int, c: int) -> float:
        common = set(by_item.get(a, {})) & set(by_item.get(c, {}))
        if a == c or not common:
            return 0.0
        num = sum(by_item[a][x] * by_item[c][x] for x in common)
        den = np.sqrt(sum(by_item[a][x] ** 2 for x in common) * sum(by_item[c][x] ** 2 for x in common))
        n = len(common)
        return 0.0 if den == 0 else num / den * (n - 1) / (n - 1 + knn.shrinkage)

    nbrs = sorted(((sim(i, j), e[(u, j)]) for (uu, j) in e if uu == u), reverse=True)[: knn.k]
    pos = [(s_, v) for s_, v in nbrs if s_ > 0]
    adj = sum(s_ * v for s_, v in pos) / sum(s_ for s_, _ in pos) if len(pos) >= knn.min_k else 0.0
    return float(np.clip(base(u, i) + adj, 1, 5))


def test_knn_baseline_matches_a_brute_force_reference():
    ds = make_synthetic(n_users=40, n_items=30, ratings_per_user=12, seed=1)
    s = RandomSplit(0.2, seed=0)(ds)
    knn = KNNBaselineRecommender(k=5, min_k=2, shrinkage=3).fit(ds, s.train)
    pairs = s.test.iloc[:40]
    got = knn.predict(pairs["user"].to_numpy(), pairs["item"].to_numpy())
    want = [_reference(s.train, knn, u, i) for u, i in zip(pairs["user"], pairs["item"])]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_knn_baseline_never_reads_test_ratings_and_folds_in_new_users(data):
    ds, s, truth = data
    garbage = ds.ratings.copy()
    garbage.loc[s.test.index, "rating"] = 1.0
    a = KNNBaselineRecommender().fit(ds, s.train)
    b = KNNBaselineRecommender().fit(replace(ds, ratings=garbage), s.train)
    u, i = s.test["user"].to_numpy(), s.test["item"].to_numpy()
    np.testing.assert_array_equal(a.predict(u, i), b.predict(u, i))
    # a user unseen in fit: bias and neighbours from the revealed ratings; loving one cluster's items
    # raises the prediction of another item of that cluster above what the bias alone gives
    (new,) = a.add_users([99_999])
    liked = np.flatnonzero(truth.item_cluster == 0)[:8]
    a.set_history(pd.concat([s.train, pd.DataFrame({"user": new, "item": liked, "rating": 5.0, "timestamp": 0})],
                            ignore_index=True))
    assert a.bias_.b_user[new] > 0
    same, other = np.flatnonzero(truth.item_cluster == 0)[8:], np.flatnonzero(truth.item_cluster != 0)
    lift = lambda items: a.predict(np.full(len(items), new), items) - a._baseline(np.full(len(items), new), items)  # noqa: E731
    assert lift(same).mean() > lift(other).mean() + 0.1
    with pytest.raises(UserError, match="knn_baseline"):
        KNNBaselineRecommender(k=0)
