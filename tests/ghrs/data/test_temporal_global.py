"""split=temporal_global: one timestamp cut, leak-free in global time, deterministic."""

import numpy as np
import pandas as pd
import pytest

from ghrs.data.splits import TemporalGlobalSplit
from ghrs.data.synthetic import make_synthetic
from ghrs.errors import UserError
from ghrs.evaluation import history_for

DS = make_synthetic(n_users=150, n_items=90, ratings_per_user=20, seed=4)
VARIANTS = [TemporalGlobalSplit(0.8, 0.7), TemporalGlobalSplit(0.8, None, variant="rating"),
            TemporalGlobalSplit(0.75, 0.6, variant="rating", min_history=3)]


@pytest.mark.parametrize("split", VARIANTS, ids=lambda s: f"{s.variant}-{s.valid_quantile}")
def test_no_training_interaction_is_later_than_any_test_interaction(split):
    s = split(DS)
    assert len(s.test) and len(s.train)
    assert s.train["timestamp"].max() < s.test["timestamp"].min()
    if len(s.valid):
        assert s.train["timestamp"].max() <= s.valid["timestamp"].min()
        assert s.valid["timestamp"].max() < s.test["timestamp"].min()


@pytest.mark.parametrize("split", VARIANTS, ids=lambda s: f"{s.variant}-{s.valid_quantile}")
def test_evaluated_users_history_is_only_before_the_cut(split):
    s = split(DS)
    cut = s.test["timestamp"].min()
    hist = history_for(s, "test")
    assert hist["timestamp"].max() < cut
    users = np.unique(s.test["user"])
    counts = hist["user"].value_counts()
    assert (counts.reindex(users, fill_value=0) >= split.min_history).all()
    # history = everything the dataset holds before the cut (nothing dropped, nothing added)
    before = DS.ratings[DS.ratings["timestamp"] < cut]
    assert len(hist) == len(before)
    assert not set(zip(hist["user"], hist["item"])) & set(zip(s.test["user"], s.test["item"]))


def test_next_item_variant_targets_each_users_first_interaction_after_the_cut():
    s = TemporalGlobalSplit(0.8, 0.7)(DS)
    assert s.relevant_min_rating is None
    assert s.test["user"].is_unique
    r = DS.ratings
    cut = int(np.quantile(r["timestamp"], 0.8))
    after = r[r["timestamp"] >= cut]
    first = after.groupby("user").head(1).set_index("user")["item"]
    test = s.test.set_index("user")["item"]
    assert (first.loc[test.index] == test).all()


def test_rating_variant_keeps_every_post_cut_rating_of_users_with_history():
    s = TemporalGlobalSplit(0.8, None, variant="rating")(DS)
    assert s.relevant_min_rating == 4.0
    r = DS.ratings
    cut = s.test["timestamp"].min()
    warm = np.unique(r[r["timestamp"] < cut]["user"])
    expected = r[(r["timestamp"] >= cut) & r["user"].isin(warm)]
    assert len(s.test) == len(expected)


def test_deterministic_and_explicit_cut():
    a, b = TemporalGlobalSplit(0.8, 0.7)(DS), TemporalGlobalSplit(0.8, 0.7)(DS)
    for part in ("train", "valid", "test"):
        pd.testing.assert_frame_equal(getattr(a, part), getattr(b, part))
    cut = int(np.quantile(DS.ratings["timestamp"], 0.8))
    c = TemporalGlobalSplit(cut_timestamp=cut, valid_quantile=0.7)(DS)
    pd.testing.assert_frame_equal(a.test, c.test)


def test_bad_values_are_user_errors():
    with pytest.raises(UserError, match="valid_quantile"):
        TemporalGlobalSplit(0.5, 0.6)
    with pytest.raises(UserError, match="variant"):
        TemporalGlobalSplit(variant="last")
    with pytest.raises(UserError, match="no user"):
        TemporalGlobalSplit(cut_timestamp=int(DS.ratings["timestamp"].max()) + 1, valid_quantile=None)(DS)
