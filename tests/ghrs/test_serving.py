import numpy as np
import pandas as pd
import pytest

from ghrs.data.splits import RandomSplit
from ghrs.data.synthetic import make_synthetic
from ghrs.models.bias import BiasRecommender
from ghrs.models.mf import MFRecommender
from ghrs.serving import predict_pairs, recommend
from ghrs.training import TrainerConfig


@pytest.fixture(params=["bias", "mf"])
def model(request):
    ds = make_synthetic(n_users=60, n_items=40, ratings_per_user=12, seed=5)
    s = RandomSplit(0.1, seed=0)(ds)
    m = BiasRecommender() if request.param == "bias" else MFRecommender(
        dim=4, trainer=TrainerConfig(max_epochs=2, progress=False))
    return m.fit(ds, s.train)


def test_recommend_never_returns_seen_items(model):
    ds = model.dataset
    out = recommend(model, list(ds.user_ids[:5]), k=10)
    assert len(out) == 50 and list(out["rank"][:10]) == list(range(1, 11))
    for raw, group in out.groupby("user"):
        u = ds.user_index([raw])[0]
        seen = set(ds.item_ids[model.history[model.history.user == u]["item"]])
        assert not seen & set(group["item"])
        assert group["score"].is_monotonic_decreasing


def test_unknown_user_needs_information(model):
    with pytest.raises(KeyError, match="unknown user id"):
        recommend(model, [10_000], k=5)
    items = model.dataset.item_ids
    out = recommend(model, [10_000], k=5, history=[[items[0], 5], [items[1], 5]], side={"age": 30, "gender": "F"})
    assert len(out) == 5 and not {items[0], items[1]} & set(out["item"])  # its own ratings count as seen


def test_predict_pairs_keeps_input_order_and_folds_in_new_users(model):
    ds = model.dataset
    pairs = pd.DataFrame({"user": [ds.user_ids[3], 777, ds.user_ids[0]], "item": [ds.item_ids[2], ds.item_ids[5], ds.item_ids[1]]})
    history = pd.DataFrame({"user": [777, 777], "item": [ds.item_ids[0], ds.item_ids[1]], "rating": [1, 1]})
    out = predict_pairs(model, pairs, history=history)
    assert list(out["user"]) == list(pairs["user"]) and list(out["item"]) == list(pairs["item"])
    assert np.isfinite(out["prediction"]).all()
    # the folded-in user who rated low is predicted below the global mean
    assert out["prediction"].iloc[1] < model.dataset.ratings["rating"].mean()
    with pytest.raises(KeyError, match="unknown item"):
        predict_pairs(model, pd.DataFrame({"user": [ds.user_ids[0]], "item": [-5]}))
