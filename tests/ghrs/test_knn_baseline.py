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
    base = lambda uu, ii: b.mu + b.b_user[uu] + b.b_item[ii]
    e = {(uu, ii): r - base(uu, ii) for uu, ii, r in zip(train["user"], train["item"], train["rating"])}
    owner, target = (i, u) if knn.user_based else (u, i)
    if knn.user_based:  # the same computation with the roles of users and items swapped
        e = {(ii, uu): v for (uu, ii), v in e.items()}
    by_target: dict[int, dict[int, float]] = {}
    for (a, c), v in e.items():
        by_target.setdefault(c, {})[a] = v

    def sim(x: int, z: int) -> float:
        common = set(by_target.get(x, {})) & set(by_target.get(z, {}))
        if x == z or not common:
            return 0.0
        num = sum(by_target[x][w] * by_target[z][w] for w in common)
        den = np.sqrt(sum(by_target[x][w] ** 2 for w in common) * sum(by_target[z][w] ** 2 for w in common))
        n = len(common)
        return 0.0 if den == 0 else num / den * (n - 1) / (n - 1 + knn.shrinkage)

    nbrs = sorted(((sim(target, c), e[(a, c)]) for (a, c) in e if a == owner), reverse=True)[: knn.k]
    pos = [(s_, v) for s_, v in nbrs if s_ > 0]
    adj = sum(s_ * v for s_, v in pos) / sum(s_ for s_, _ in pos) if len(pos) >= knn.min_k else 0.0
    return float(np.clip(base(u, i) + adj, 1, 5))


@pytest.mark.parametrize("user_based", [False, True])
def test_knn_baseline_matches_a_brute_force_reference(user_based):
    ds = make_synthetic(n_users=40, n_items=30, ratings_per_user=12, seed=1)
    s = RandomSplit(0.2, seed=0)(ds)
    knn = KNNBaselineRecommender(k=5, min_k=2, shrinkage=3, user_based=user_based).fit(ds, s.train)
    pairs = s.test.iloc[:40]
    got = knn.predict(pairs["user"].to_numpy(), pairs["item"].to_numpy())
    want = [_reference(s.train, knn, u, i) for u, i in zip(pairs["user"], pairs["item"])]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.abs(got - knn.bias_.predict(pairs["user"].to_numpy(), pairs["item"].to_numpy())).max() > 0.05


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
    lift = lambda items: a.predict(np.full(len(items), new), items) - a._baseline(np.full(len(items), new), items)
    assert lift(same).mean() > lift(other).mean() + 0.1
    with pytest.raises(UserError, match="knn_baseline"):
        KNNBaselineRecommender(k=0)


def test_user_based_knn_baseline_gives_users_unseen_by_fit_the_baseline(data):
    ds, s, _ = data
    m = KNNBaselineRecommender(user_based=True).fit(ds, s.train)
    (new,) = m.add_users([99_998])
    m.set_history(pd.concat([s.train, pd.DataFrame({"user": new, "item": [0, 1], "rating": 5.0, "timestamp": 0})],
                            ignore_index=True))
    items = np.arange(2, 12)
    np.testing.assert_allclose(m.predict(np.full(10, new), items), m.bias_.predict(np.full(10, new), items))
    old = s.test["user"].to_numpy()[:50], s.test["item"].to_numpy()[:50]  # the new user is nobody's neighbour
    assert np.isfinite(m.predict(*old)).all() and m.hist_.shape[1] == len(m.sim_)
