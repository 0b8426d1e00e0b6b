"""Ranking baselines: most popular, ItemKNN (cosine, top-N) and EASE (closed form, l2 on validation)."""

import numpy as np
import pandas as pd
import pytest

from ghrs.data.splits import TemporalLOOSplit
from ghrs.data.synthetic import make_synthetic
from ghrs.errors import UserError
from ghrs.evaluation import evaluate
from ghrs.models.ease import EASERecommender, ease_weights
from ghrs.models.item_item import interaction_matrix
from ghrs.models.itemknn import ItemKNNRecommender, cosine_topn
from ghrs.models.pop import PopRecommender


@pytest.fixture(scope="module")
def data():
    ds = make_synthetic(n_users=200, n_items=200, ratings_per_user=30, sequential=0.0, seed=5)
    return ds, TemporalLOOSplit()(ds)


def tiny_x(seed=0, n_users=12, n_items=7):
    rng = np.random.default_rng(seed)
    x = (rng.random((n_users, n_items)) < 0.4).astype(np.float64)
    u, i = np.nonzero(x)
    return x, pd.DataFrame({"user": u, "item": i})


def test_ease_equals_the_constrained_least_squares_solution_column_by_column():
    """Independent check of Steck's closed form: each column j solves a ridge regression of X_j on the
    other columns (diag(B) = 0 is the exclusion of column j itself)."""
    x, _ = tiny_x()
    lam = 3.0
    b = ease_weights(x.T @ x, lam)
    n = x.shape[1]
    for j in range(n):
        others = [i for i in range(n) if i != j]
        a = x[:, others]
        coef = np.linalg.solve(a.T @ a + lam * np.eye(n - 1), a.T @ x[:, j])
        np.testing.assert_allclose(b[others, j], coef, rtol=1e-4, atol=1e-5)
        assert b[j, j] == 0.0


def test_itemknn_equals_dense_cosine_pruned_to_top_n():
    x, table = tiny_x(1, 15, 9)
    s = cosine_topn(interaction_matrix(table, 15, 9), n_neighbours=3, shrink=1.0, block=4).toarray()
    n = np.sqrt(x.sum(0))
    dense = (x.T @ x) / (n[:, None] * n[None, :] + 1.0 + 1e-12)
    np.fill_diagonal(dense, 0.0)
    for j in range(9):
        kept = np.flatnonzero(s[:, j])
        assert len(kept) <= 3
        np.testing.assert_allclose(s[kept, j], dense[kept, j], rtol=1e-5)
        # every kept similarity is at least as large as every dropped one
        dropped = np.setdiff1d(np.arange(9), np.append(kept, j))
        if len(kept) and len(dropped):
            assert s[kept, j].min() >= dense[dropped, j].max() - 1e-6


def test_pop_ranks_by_training_count(data):
    ds, s = data
    m = PopRecommender().fit(ds, s.train)
    counts = np.bincount(s.train["item"], minlength=ds.n_items)
    scores = m.score(np.array([0, 3]))
    assert scores.shape == (2, ds.n_items)
    assert np.array_equal(np.argsort(-scores[0], kind="stable"), np.argsort(-counts, kind="stable"))
    with pytest.raises(NotImplementedError):
        m.predict(np.array([0]), np.array([0]))


def test_baselines_run_through_evaluation_and_beat_chance(data):
    ds, s = data
    chance = 10 / ds.n_items
    results = {}
    for name, model in {"pop": PopRecommender(), "itemknn": ItemKNNRecommender(n_neighbours=20),
                        "ease": EASERecommender(l2_grid=[1.0, 10.0, 100.0])}.items():
        model.fit(ds, s.train, s.valid)
        results[name] = evaluate(model, ds, s, "test", rating_metrics=False, progress=False)["hr@10"]
    assert min(results.values()) > chance, results
    # the personalised models find the planted group tastes that popularity cannot
    assert max(results["itemknn"], results["ease"]) > results["pop"], results


def test_ease_chooses_l2_on_validation(data):
    ds, s = data
    m = EASERecommender(l2=7.0, l2_grid=[1.0, 30.0, 300.0]).fit(ds, s.train, s.valid)
    assert set(m.validation_) == {1.0, 30.0, 300.0}
    assert m.l2_ == max(m.validation_, key=m.validation_.get)
    assert EASERecommender(l2=7.0, l2_grid=[1.0]).fit(ds, s.train).l2_ == 7.0  # no validation: l2


def test_history_folds_in_new_interactions(data):
    """Item-item models read the user's row from the history they are given (no refit)."""
    ds, s = data
    m = ItemKNNRecommender(n_neighbours=20).fit(ds, s.train)
    before = m.score(np.array([0]))
    m.set_history(pd.concat([s.train, s.valid]))
    assert not np.allclose(before, m.score(np.array([0])))


def test_bad_values_are_user_errors():
    with pytest.raises(UserError, match="l2"):
        EASERecommender(l2=0.0)
    with pytest.raises(UserError, match="n_neighbours"):
        ItemKNNRecommender(n_neighbours=0)
