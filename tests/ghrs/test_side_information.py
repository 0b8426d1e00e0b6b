"""Side information of users folded in at serving time: validated against, and encoded with, what the
model fitted on its training users."""

import logging
from dataclasses import replace

import numpy as np
import pytest

from ghrs.data.splits import RandomSplit
from ghrs.data.synthetic import make_synthetic
from ghrs.errors import UserError
from ghrs.models.ghrs import GHRSRecommender
from ghrs.serving import recommend

FAST = {"alpha": 0.02, "autoencoder": {"hidden": [8], "code_dim": 3, "epochs": 5}, "item_side": False,
        "k_range": (2, 4), "kmeans_n_init": 1}


@pytest.fixture(scope="module")
def model():
    ds = make_synthetic(n_users=80, n_items=50, ratings_per_user=12, seed=2)
    rng = np.random.default_rng(0)
    users = ds.users.assign(income=rng.normal(50_000, 15_000, ds.n_users).round())  # a generic numeric column
    ds = replace(ds, users=users)
    return GHRSRecommender(**FAST).fit(ds, RandomSplit(0.1, seed=0)(ds).train)


def test_folded_in_user_encodes_as_the_training_transform_of_the_same_row(model):
    ds = model.dataset
    n_graph = len(model.features.user_extractor.graph_feature_names)
    src = 7
    side = ds.users.iloc[[src]][["age", "gender", "occupation", "income"]].assign(id=[90_001])
    (new,) = model.add_users([90_001], side)
    x = model.features.user_features
    assert model.features.user_extractor.side.names[-1] == "income"
    np.testing.assert_array_equal(x[new, n_graph:], x[src, n_graph:])  # income not re-standardised to 0
    assert x[new, -1] != 0


@pytest.mark.parametrize("side, message", [
    ({"gender": "X"}, r"gender='X' was not seen in training \(known: F, M\)"),
    ({"occupation": "astronaut"}, r"occupation='astronaut' was not seen in training \(known: .*student"),
    ({"age": -500}, r"age=-500 is outside the training range"),
    ({"age": "old"}, r"age='old' is not a number"),
])
def test_unseen_side_values_are_an_error_naming_key_and_value(model, side, message):
    n_users = model.dataset.n_users
    with pytest.raises(UserError, match=message):
        recommend(model, [90_100], k=3, side=side)
    assert model.dataset.n_users == n_users  # nothing folded in


def test_side_unknown_ignore_is_logged(model, caplog):
    with caplog.at_level(logging.WARNING):
        out = recommend(model, [90_200], k=3, side={"gender": "X", "age": 30}, side_unknown="ignore")
    assert len(out) == 3 and "side_unknown=ignore" in caplog.text and "gender='X'" in caplog.text
    with pytest.raises(UserError, match="side_unknown must be one of"):
        recommend(model, [90_300], k=3, side={"age": 30}, side_unknown="skip")
