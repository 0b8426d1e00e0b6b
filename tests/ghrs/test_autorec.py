from dataclasses import replace

import numpy as np
import pytest

from ghrs.data.splits import RandomSplit
from ghrs.data.synthetic import make_synthetic
from ghrs.errors import UserError
from ghrs.metrics import rmse
from ghrs.models.autorec import AutoRecRecommender
from ghrs.models.bias import BiasRecommender

FAST = {"hidden": 64, "epochs": 100, "reg": 10.0, "lr": 0.01}


@pytest.fixture(scope="module")
def data():
    ds = make_synthetic(n_users=200, n_items=100, ratings_per_user=30, seed=2)
    return ds, RandomSplit(0.15, seed=0)(ds)


@pytest.fixture(scope="module")
def fitted(data):
    ds, s = data
    return AutoRecRecommender(**FAST).fit(ds, s.train)


def test_autorec_learns_the_planted_tastes(data, fitted):
    ds, s = data
    u, i, y = s.test["user"].to_numpy(), s.test["item"].to_numpy(), s.test["rating"].to_numpy()
    bias = BiasRecommender().fit(ds, s.train)
    assert rmse(fitted.predict(u, i), y) < rmse(bias.predict(u, i), y) - 0.02
    assert fitted.item_codes_.shape == (ds.n_items, FAST["hidden"])
    assert fitted.losses_[-1] < fitted.losses_[0]


def test_autorec_is_deterministic_and_never_reads_test_ratings(data, fitted):
    ds, s = data
    garbage = ds.ratings.copy()
    garbage.loc[s.test.index, "rating"] = 1.0
    other = AutoRecRecommender(**FAST).fit(replace(ds, ratings=garbage), s.train)
    u, i = s.test["user"].to_numpy(), s.test["item"].to_numpy()
    np.testing.assert_array_equal(fitted.predict(u, i), other.predict(u, i))


def test_autorec_unrated_items_and_unknown_users_fall_back(data):
    ds, s = data
    train = s.train[s.train["item"] != 0]
    m = AutoRecRecommender(**{**FAST, "epochs": 2}).fit(ds, train)
    p = m.predict(np.array([0, 1]), np.array([0, 0]))
    np.testing.assert_allclose(p, train["rating"].mean(), rtol=1e-6)  # no training rating: global mean
    with pytest.raises(UserError, match="autorec"):
        AutoRecRecommender(hidden=0)
