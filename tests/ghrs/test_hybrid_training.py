"""Hybrid training regimes, GHRS-part switches, no wasted GHRS fits, DropoutNet cold items, cold-item
protocol and the genre-preference baseline (synthetic data with planted structure)."""

from functools import partial

import numpy as np
import pandas as pd
import pytest
import torch

from ghrs.data.splits import ColdItemSplit, RandomSplit, TemporalLOOSplit
from ghrs.data.synthetic import make_synthetic
from ghrs.errors import UserError
from ghrs.evaluation import evaluate
from ghrs.models import ghrs as ghrs_module
from ghrs.models.genrepop import GenrePopRecommender
from ghrs.models.hybrid import HybridRecommender
from ghrs.models.sequences import Sequences
from ghrs.training import TrainerConfig
from ssm.encoders import SequenceEncoder

GHRS = {"alpha": 0.02, "n_clusters": 4, "autoencoder": {"epochs": 5}, "item_autoencoder": {"epochs": 5}}


def hybrid(epochs=2, layer="gru", **kw):
    enc = partial(SequenceEncoder, layer=layer, d_model=16, n_layers=1, dropout=0.0)
    trainer = TrainerConfig(max_epochs=epochs, lr=0.01, batch_size=kw.pop("batch_size", 32), progress=False)
    return HybridRecommender(encoder=enc, ghrs=GHRS, dim=16, dropout=0.0, trainer=trainer,
                             heads=kw.pop("heads", {"rating": 0.0, "ranking": 1.0}), **kw)


def history(lengths, seed=0):
    rng = np.random.default_rng(seed)
    rows = [(u, int(rng.integers(0, 50)), float(rng.integers(1, 6)), 1000 * t + u)
            for u, n in enumerate(lengths) for t in range(n)]
    return pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])


@pytest.mark.parametrize("max_len,stride", [(5, None), (5, 2), (4, 1), (50, None)])
def test_all_prefixes_trains_every_next_item_target_once_with_its_true_context(max_len, stride):
    lengths = [0, 1, 2, 5, 6, 13, 31]
    h = history(lengths)
    seqs = Sequences.training(h, len(lengths), max_len, 3.0, "all_prefixes", stride)
    stride = stride or max_len - 1
    seen = {}
    for w in range(len(seqs.users)):
        u, off, n = int(seqs.users[w]), int(seqs.offset[w]), int(seqs.lengths[w])
        full = h[h.user == u]["item"].to_numpy() + 1
        assert n <= max_len
        assert np.array_equal(seqs.items[w, :n].numpy(), full[off : off + n])  # a contiguous slice
        assert (seqs.items[w, n:] == 0).all()
        for j in range(int(seqs.loss_from[w]), n):
            t = off + j  # absolute target position, predicted from the window's items before it
            seen[(u, t)] = seen.get((u, t), 0) + 1
            assert j >= min(t, max_len - stride)  # context: all earlier items, or >= max_len - stride
    expected = {(u, t) for u, n in enumerate(lengths) for t in range(1, n)}
    assert set(seen) == expected and set(seen.values()) == {1}


def test_last_window_regime_is_the_last_max_len_items_of_each_user():
    lengths = [0, 1, 3, 9]
    h = history(lengths)
    train = Sequences.training(h, 4, 4, 3.0, "last_window")
    last = Sequences.last(h, 4, 4, 3.0)
    assert train.users.tolist() == [2, 3]
    assert torch.equal(train.items, last.items[[2, 3]])
    assert last.lengths.tolist() == [0, 1, 3, 4]
    full = h[h.user == 3]["item"].to_numpy() + 1
    assert last.items[3].tolist() == full[-4:].tolist()
    assert (last.features[:, 0, 1] == 0).all()  # no time gap before a window's first step


@pytest.fixture(scope="module")
def loo():
    ds = make_synthetic(n_users=120, n_items=80, ratings_per_user=25, seed=2)
    return ds, TemporalLOOSplit()(ds)


def test_all_prefixes_takes_many_steps_per_epoch_and_learns(loo):
    ds, s = loo
    m = hybrid(epochs=3, train_regime="all_prefixes", max_len=8, batch_size=64).fit(ds, s.train, s.valid)
    n_windows = sum(-(-(n - 1) // 7) for n in np.bincount(s.train["user"]) if n >= 2)
    assert n_windows > 3 * 64  # several optimiser steps per epoch
    hr = evaluate(m, ds, s, "test", progress=False)["hr@10"]
    assert hr > 2 * 10 / ds.n_items, hr  # well above chance


def test_no_rating_head_fits_ghrs_features_once_and_no_predictor(loo, monkeypatch):
    ds, s = loo
    calls = {"features": 0, "predictor": 0}
    real_fit, real_pred = ghrs_module.GHRSFeatures.fit, ghrs_module.GHRSRecommender._fit_predictor

    def count_features(self, *a, **k):
        calls["features"] += 1
        return real_fit(self, *a, **k)

    def count_predictor(self, *a, **k):
        calls["predictor"] += 1
        return real_pred(self, *a, **k)

    monkeypatch.setattr(ghrs_module.GHRSFeatures, "fit", count_features)
    monkeypatch.setattr(ghrs_module.GHRSRecommender, "_fit_predictor", count_predictor)
    m = hybrid(epochs=1).fit(ds, s.train, s.valid)
    assert calls == {"features": 1, "predictor": 0}
    assert not m.predicts_ratings and "rmse" not in evaluate(m, ds, s, progress=False)
    with pytest.raises(NotImplementedError, match="rating head"):
        m.predict(np.array([0]), np.array([0]))
    calls.update(features=0, predictor=0)
    hybrid(epochs=1, heads={"rating": 1.0, "ranking": 1.0}, base_folds=2).fit(ds, s.train, s.valid)
    assert calls == {"features": 3, "predictor": 3}  # the model + 2 out-of-fold bases
    calls.update(features=0, predictor=0)
    plain = hybrid(epochs=1, layer="sasrec", use_ghrs_features=False, use={"graph_embedding": False}).fit(ds, s.train)
    assert calls == {"features": 0, "predictor": 0}
    assert plain.net.user_static.shape[1] == 0 and len(plain.net.graph_layers) == 0 and plain.net.item_side is None


def test_unused_ghrs_user_parts_are_skipped(loo):
    """The top-k default (graph features, codes, clusters off) fits no user graph and no user autoencoder;
    with codes on the autoencoder is fitted and its codes feed the user vector."""
    ds, s = loo
    off = {"graph_features": False, "codes": False, "clusters": False}
    lean = hybrid(epochs=1, use=off).fit(ds, s.train, s.valid)
    assert lean.features.user_extractor.graph is None and lean.features.user_ae is None
    codes = hybrid(epochs=1, use={**off, "codes": True}).fit(ds, s.train, s.valid)
    assert codes.features.user_ae is not None
    assert codes.net.user_static.shape[1] == lean.net.user_static.shape[1] + codes.features.user_codes.shape[1]


def test_switch_values_are_user_errors():
    with pytest.raises(UserError, match="use_ghrs_features"):
        HybridRecommender(use_ghrs_features=False)  # the rating head is on by default
    with pytest.raises(UserError, match="train_regime"):
        HybridRecommender(train_regime="windows")
    with pytest.raises(UserError, match="window_stride"):
        HybridRecommender(window_stride=50, max_len=50)
    with pytest.raises(UserError, match="item_dropout"):
        HybridRecommender(item_dropout=1.0)


@pytest.fixture(scope="module")
def cold():
    ds = make_synthetic(n_users=200, n_items=150, ratings_per_user=30, seed=6)
    return ds, ColdItemSplit(0.15, valid_ratio=0.1, seed=1)(ds)


def test_cold_item_protocol_ranks_cold_items_among_cold_items_only(cold):
    ds, s = cold
    m = GenrePopRecommender().fit(ds, s.train)
    out = evaluate(m, ds, s, "test", progress=False)
    assert {"cold:hr@10", "cold:ndcg@10", "hr@10"} <= set(out)
    # among ~22 cold items the same model's hit rate can only be at least its all-items one
    assert out["cold:hr@10"] >= out["hr@10"]
    chance = 1 - np.prod(1 - 10 / np.arange(len(s.cold_items), len(s.cold_items) - 1, -1))
    assert out["cold:hr@10"] > chance  # genres carry the planted cluster tastes


def test_dropoutnet_content_tower_scores_cold_items(cold):
    ds, s = cold
    m = hybrid(epochs=4, item_dropout=0.5).fit(ds, s.train, s.valid)
    cold_items = torch.as_tensor(s.cold_items)
    with torch.no_grad():
        content = m.net.content_vectors(cold_items)
    torch.testing.assert_close(m.item_vectors[cold_items], content)  # cold items: content tower alone
    out = evaluate(m, ds, s, "test", progress=False)
    assert 0.0 <= out["cold:ndcg@10"] <= 1.0 and out["cold:hr@10"] >= out["hr@10"]
    # Whether the tower beats the plain item vectors on cold items is a measurement, not a test: on this
    # synthetic set it wins on some seeds and loses on others (NOTES.md "Top-k", cold items).


def test_early_stopping_on_ranking_picks_the_epoch_by_hit_rate_and_scales_the_residual():
    """Both heads, ``early_stopping=ranking``: the epoch is chosen on validation HR@10, and the rating
    residual's scale, fitted on validation, never leaves validation RMSE above the base prediction's."""
    ds = make_synthetic(n_users=120, n_items=80, ratings_per_user=25, seed=2)
    s = RandomSplit(0.1, valid_ratio=0.1, seed=0)(ds)
    both = {"rating": 1.0, "ranking": 1.0}
    m = hybrid(epochs=3, heads=both, base_folds=2, early_stopping="ranking").fit(ds, s.train, s.valid)
    assert all("valid_hr@10" in h and "valid_rmse" not in h for h in m.state.history)
    assert 0.0 <= m.residual_scale_ <= 1.0
    u, i, y = s.valid["user"].to_numpy(), s.valid["item"].to_numpy(), s.valid["rating"].to_numpy()
    rmse = lambda p: float(np.sqrt(np.mean((p - y) ** 2)))
    assert rmse(m.predict(u, i)) <= rmse(m.clip(m._base_predict(u, i))) + 1e-6
    rating = hybrid(epochs=3, heads=both, base_folds=2).fit(ds, s.train, s.valid)
    assert "valid_rmse" in rating.state.history[0] and rating.residual_scale_ == 1.0
    alone = hybrid(epochs=1, heads={"rating": 1.0, "ranking": 0.0}, base_folds=2, early_stopping="ranking")
    assert "valid_rmse" in alone.fit(ds, s.train, s.valid).state.history[0]  # one head: its own metric
    with pytest.raises(UserError, match="early_stopping must be one of"):
        HybridRecommender(early_stopping="rmse")
