"""HybridRecommender on synthetic data with planted structure (groups, demographics, series, drift)."""

import copy
from functools import partial

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils._pytree import tree_leaves

from ghrs.data.splits import ColdUserSplit, RandomSplit
from ghrs.data.synthetic import make_synthetic
from ghrs.errors import UserError
from ghrs.evaluation import evaluate
from ghrs.metrics import rmse
from ghrs.models.bias import BiasRecommender
from ghrs.models.hybrid import HybridRecommender
from ghrs.models.knn_baseline import KNNBaselineRecommender
from ghrs.serving import predict_pairs, recommend
from ghrs.training import TrainerConfig
from ssm.encoders import SequenceEncoder

GHRS = {"alpha": 0.02, "n_clusters": 4, "autoencoder": {"epochs": 20}, "item_autoencoder": {"epochs": 20}}


def hybrid(layer="gru", epochs=6, **kw):
    options = {"d_state": 8, "expand": 1} if layer in ("mamba", "mamba2") else {}
    if layer == "mamba2":
        options = {"d_state": 8, "headdim": 8, "chunk_size": 8}
    enc = partial(SequenceEncoder, layer=layer, d_model=16, n_layers=1, dropout=0.0, **options)
    trainer = TrainerConfig(max_epochs=epochs, lr=0.01, batch_size=32, progress=False)
    return HybridRecommender(encoder=enc, ghrs=GHRS, dim=16, dropout=0.0, trainer=trainer, **kw)


@pytest.fixture(scope="module")
def data():
    ds = make_synthetic(n_users=200, n_items=120, ratings_per_user=30, seed=3)
    return ds, RandomSplit(0.15, seed=0, valid_ratio=0.1)(ds)


@pytest.fixture(scope="module")
def fitted(data):
    ds, s = data
    return hybrid().fit(ds, s.train, s.valid)


def test_hybrid_beats_bias_on_planted_structure(data, fitted):
    ds, s = data
    bias = BiasRecommender().fit(ds, s.train)
    m_h = evaluate(fitted, ds, s, progress=False)
    m_b = evaluate(bias, ds, s, progress=False)
    assert m_h["rmse"] < m_b["rmse"] - 0.02, (m_h["rmse"], m_b["rmse"])
    # ranking: the next-item head finds the planted group-cluster tastes that a popularity ranking cannot
    assert m_h["ndcg@10"] > m_b["ndcg@10"], (m_h["ndcg@10"], m_b["ndcg@10"])


def test_recommend_never_returns_seen_items(fitted):
    ds = fitted.dataset
    out = recommend(fitted, list(ds.user_ids[:6]), k=15)
    for raw, group in out.groupby("user"):
        u = ds.user_index([raw])[0]
        seen = set(ds.item_ids[fitted.history[fitted.history.user == u]["item"]])
        assert seen and not seen & set(group["item"])
        assert group["score"].is_monotonic_decreasing


def test_predict_for_unseen_users_uses_side_info(data, fitted):
    """Two never-seen users with no ratings, only side info: the demographics of two different planted
    groups must give different predictions, and each user's prediction must follow its group's taste."""
    ds, _ = data
    _, truth = make_synthetic(n_users=200, n_items=120, ratings_per_user=30, seed=3, return_truth=True)
    users = ds.users
    # the typical side info of groups 0 and 3 (they differ in age, gender mix and occupation)
    def typical(g):
        members = users[truth.user_group == g]
        return {"age": int(members["age"].median()), "gender": members["gender"].mode()[0],
                "occupation": members["occupation"].mode()[0]}

    g0, g3 = typical(0), typical(3)
    m = copy.deepcopy(fitted)
    items = ds.item_ids
    pairs = pd.DataFrame({"user": [90_001] * len(items) + [90_002] * len(items), "item": list(items) * 2})
    side = pd.DataFrame([{"id": 90_001, "age": g0["age"], "gender": g0["gender"], "occupation": g0["occupation"]},
                         {"id": 90_002, "age": g3["age"], "gender": g3["gender"], "occupation": g3["occupation"]}])
    out = predict_pairs(m, pairs, side=side)
    p0 = out["prediction"].to_numpy()[: len(items)]
    p3 = out["prediction"].to_numpy()[len(items):]
    assert np.isfinite(out["prediction"]).all()
    assert np.abs(p0 - p3).max() > 0.05  # side info changes the prediction
    # the difference between the two users' predictions follows the difference between what the two
    # groups actually rated (per-item mean rating of each group, items both groups rated)
    r = ds.ratings
    grp = truth.user_group[r["user"].to_numpy()]
    diff = (r[grp == 0].groupby("item")["rating"].mean() - r[grp == 3].groupby("item")["rating"].mean()).dropna()
    idx = diff.index.to_numpy()
    rho = np.corrcoef((p0 - p3)[idx], diff.to_numpy())[0, 1]
    assert rho > 0.5
    with pytest.raises(KeyError, match="unknown user id"):
        predict_pairs(copy.deepcopy(fitted), pd.DataFrame({"user": [90_003], "item": [items[0]]}))


@pytest.mark.parametrize("layer", ["gru", "mamba", "s4d", "mamba2"])
def test_streamed_state_equals_reencoding_beyond_max_len(data, layer):
    """New interactions of a known user update its stored state with one encoder step each. Streaming
    keeps the whole history, so once a history exceeds ``max_len`` the streamed state must equal
    re-encoding the whole history (what a reloaded model computes from the same interactions), not the
    last ``max_len`` of it."""
    ds, s = data
    m = hybrid(layer, epochs=1, max_len=6).fit(ds, s.train)
    u = int(s.train["user"].iloc[0])
    assert int(m.n_history[u]) > 3 * m.max_len  # ~25 training interactions per user
    t_last = int(m.history["timestamp"].max())
    seen = set(m.history[m.history.user == u]["item"])
    new_items = [i for i in range(ds.n_items) if i not in seen][:3]
    new = pd.DataFrame({"user": [u] * 3, "item": new_items, "rating": [4.0, 2.0, 5.0],
                        "timestamp": [t_last + k * 86_400 for k in (1, 2, 5)]})
    streamed = copy.deepcopy(m)
    streamed.observe(new)  # three recurrent steps
    reencoded = copy.deepcopy(m)
    reencoded.set_history(pd.concat([m.history, new], ignore_index=True))  # a fresh encoding
    np.testing.assert_allclose(streamed.final_states[u].numpy(), reencoded.final_states[u].numpy(), atol=2e-4)
    for a, b in zip(tree_leaves(streamed.stream_state), tree_leaves(reencoded.stream_state)):
        if isinstance(a, torch.Tensor) and a.dim():
            np.testing.assert_allclose(a[u].numpy(), b[u].numpy(), atol=2e-4)
    np.testing.assert_allclose(streamed.score(np.array([u])), reencoded.score(np.array([u])), atol=2e-3)
    np.testing.assert_array_equal(streamed.final_states[u + 1].numpy(), m.final_states[u + 1].numpy())  # untouched
    assert m._recurrent() and m.stream_state is not None
    # the re-encoding read the whole history, not the last max_len (so the comparison is not vacuous)
    assert int(reencoded.seqs.lengths[u]) == int(reencoded.n_history[u]) > 3 * m.max_len
    windowed = copy.deepcopy(m)
    windowed.streaming = False  # streaming off: every encoding reads the last max_len interactions
    windowed.set_history(pd.concat([m.history, new], ignore_index=True))
    assert int(windowed.seqs.lengths[u]) == m.max_len


def test_cold_users_get_finite_predictions_respecting_reveal(data):
    ds, _ = data
    s = ColdUserSplit(0.2, reveal=3, seed=1)(ds)
    # reveal counts: exactly 3 revealed ratings per cold user (every user has >= 5)
    assert (s.revealed.groupby("user").size() == 3).all()
    m = hybrid(epochs=2).fit(ds, s.train)
    m.set_history(pd.concat([s.train, s.revealed]))
    metrics = evaluate(m, ds, s, progress=False)
    assert np.isfinite(metrics["rmse"]) and metrics["rmse"] < ds.ratings["rating"].std()
    # items a cold user revealed are never recommended back to it
    u = int(s.revealed["user"].iloc[0])
    ranked = recommend(m, [ds.user_ids[u]], k=10)
    assert not set(ranked["item"]) & set(ds.item_ids[s.revealed[s.revealed.user == u]["item"]])


def test_bad_hybrid_config_values():
    with pytest.raises(ValueError, match="heads"):
        HybridRecommender(heads={"rating": 0, "ranking": 0})
    with pytest.raises(ValueError, match="residual_shrinkage"):
        HybridRecommender(residual_shrinkage=-1)
    with pytest.raises(ValueError, match="graph_fanout"):
        HybridRecommender(graph_fanout=5)  # the full-softmax ranking head scores every item
    with pytest.raises(ValueError, match="graph_fanout"):
        HybridRecommender(graph_fanout=0, n_negatives=8)


def test_sampled_softmax_learns_the_planted_tastes(data):
    ds, s = data
    m = hybrid(epochs=6, n_negatives=16, heads={"rating": 0.0, "ranking": 1.0}).fit(ds, s.train, s.valid)
    bias = BiasRecommender().fit(ds, s.train)
    m_h, m_b = evaluate(m, ds, s, progress=False), evaluate(bias, ds, s, progress=False)
    assert m_h["ndcg@10"] > m_b["ndcg@10"], (m_h["ndcg@10"], m_b["ndcg@10"])


def test_neighbour_sampled_propagation_learns_the_planted_tastes(data):
    ds, s = data
    m = hybrid(epochs=6, n_negatives=16, graph_fanout=4, heads={"rating": 0.0, "ranking": 1.0}).fit(ds, s.train, s.valid)
    bias = BiasRecommender().fit(ds, s.train)
    m_h, m_b = evaluate(m, ds, s, progress=False), evaluate(bias, ds, s, progress=False)
    assert m_h["ndcg@10"] > m_b["ndcg@10"], (m_h["ndcg@10"], m_b["ndcg@10"])


def test_sampled_graph_embeddings_equal_the_full_ones_with_a_large_fanout(data):
    ds, s = data
    m = hybrid(epochs=1, n_negatives=16, heads={"rating": 0.0, "ranking": 1.0}).fit(ds, s.train)
    users, items = torch.tensor([0, 3, 17]), torch.tensor([2, 5, 40, 41])
    with torch.no_grad():
        full_u, full_i = m.net.graph_embeddings()
        su, si = m.net.sampled_graph_embeddings(users, items, fanout=ds.n_users + ds.n_items)
    torch.testing.assert_close(su, full_u[users], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(si, full_i[items], atol=1e-5, rtol=1e-4)


def test_residual_weight_counts_the_whole_history_at_training_and_prediction(monkeypatch):
    """With histories longer than max_len the learned residual's weight n/(n+c) must use the same n --
    the interactions before the rated item over the whole history -- at training and at prediction."""
    ds = make_synthetic(n_users=40, n_items=50, ratings_per_user=20, seed=5)
    s = RandomSplit(0.1, seed=0)(ds)
    max_len = 6
    seen: list[torch.Tensor] = []
    original = HybridRecommender._residual_weight

    def spy(self, n_seen):
        seen.append(n_seen.detach().clone())
        return original(self, n_seen)

    monkeypatch.setattr(HybridRecommender, "_residual_weight", spy)
    m = hybrid(epochs=1, max_len=max_len, heads={"rating": 1.0, "ranking": 0.0}, base_folds=1)
    m.fit(ds, s.train)  # no validation part: every recorded call is a training position
    counts = np.bincount(s.train["user"].to_numpy(), minlength=ds.n_users)
    assert counts.max() > max_len
    # a user with H training ratings contributes the targets at whole-history positions H-L+1 .. H-1
    expected = np.concatenate([np.arange(max(h - max_len, 0) + 1, h) for h in counts if h >= 2])
    got = torch.cat(seen).numpy()
    np.testing.assert_array_equal(np.sort(got), np.sort(expected).astype(got.dtype))
    assert got.max() == counts.max() - 1 > max_len  # not capped by the window
    # prediction for a user's next item: n = its H known interactions
    seen.clear()
    u = int(np.argmax(counts))
    m.predict(np.array([u]), np.array([0]))
    assert seen[0].tolist() == [float(counts[u])]


ABLATIONS = [{}, {"graph_features": False}, {"codes": False}, {"clusters": False}, {"side": False},
             {"graph_embedding": False}, {"neighbourhood": False}, {"encoder": "none"}]


@pytest.mark.slow
@pytest.mark.parametrize("ablation", ABLATIONS, ids=lambda a: "-".join(f"{k}={v}" for k, v in a.items()) or "full")
def test_no_ablation_switch_reads_test_ratings(ablation):
    """Every ablation fits the same state whatever the test ratings are (garbage or removed)."""
    from dataclasses import replace

    ds = make_synthetic(n_users=60, n_items=50, ratings_per_user=20, seed=7)
    s = RandomSplit(0.2, seed=0, valid_ratio=0.1)(ds)
    use = {k: v for k, v in ablation.items() if k != "encoder"}
    layer = ablation.get("encoder", "gru")

    def fit(dataset):
        torch.manual_seed(0)
        return hybrid(layer=layer, epochs=2, use=use, base_folds=2).fit(dataset, s.train, s.valid)

    a = fit(ds)
    garbage = ds.ratings.copy()
    rng = np.random.default_rng(0)
    garbage.loc[s.test.index, "rating"] = rng.permutation(garbage.loc[s.test.index, "rating"].to_numpy())[::-1]
    garbage.loc[s.test.index[::2], "rating"] = 1.0
    vu, vi = s.valid["user"].to_numpy(), s.valid["item"].to_numpy()
    for ratings in (garbage, ds.ratings.drop(index=s.test.index)):
        b = fit(replace(ds, ratings=ratings))
        for (name, x), (_, y) in zip(a.net.state_dict().items(), b.net.state_dict().items()):
            torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)
        np.testing.assert_array_equal(a.predict(vu, vi), b.predict(vu, vi))
        np.testing.assert_array_equal(a.score(np.unique(vu)), b.score(np.unique(vu)))


def test_ablation_switches_remove_their_component(data):
    ds, s = data
    full = hybrid(epochs=1, base_folds=1).fit(ds, s.train)
    n_graph = len(full.ghrs.features.user_extractor.graph_feature_names)
    code_dim = full.ghrs.features.user_codes.shape[1]
    assert full.user_static.shape[1] == full.ghrs.features.user_features.shape[1] + code_dim
    no_codes = hybrid(epochs=1, base_folds=1, use={"codes": False}).fit(ds, s.train)
    assert no_codes.user_static.shape[1] == full.user_static.shape[1] - code_dim
    no_graph = hybrid(epochs=1, base_folds=1, use={"graph_features": False}).fit(ds, s.train)
    assert no_graph.ghrs.features.user_features.shape[1] == full.ghrs.features.user_features.shape[1] - n_graph
    no_side = hybrid(epochs=1, base_folds=1, use={"side": False}).fit(ds, s.train)
    assert no_side.ghrs.features.user_features.shape[1] == n_graph
    no_clusters = hybrid(epochs=1, base_folds=1, use={"clusters": False}).fit(ds, s.train)
    assert no_clusters.ghrs.features.n_clusters_ == 1
    no_lgcn = hybrid(epochs=1, base_folds=1, use={"graph_embedding": False}).fit(ds, s.train)
    assert len(no_lgcn.net.graph_layers) == 0 and no_lgcn.graph_users is None
    no_knn = hybrid(epochs=1, base_folds=1, use={"neighbourhood": False}).fit(ds, s.train)
    assert no_knn.ghrs.nbr is None and full.ghrs.nbr is not None
    with pytest.raises(UserError, match="unknown model.use"):
        HybridRecommender(use={"graph": False})
    with pytest.raises(UserError, match="pre-fitted"):
        HybridRecommender(ghrs=full.ghrs, base_folds=1, use={"clusters": False})
    with pytest.raises(UserError, match="user vector is empty"):
        hybrid(epochs=1, base_folds=1, use={"graph_features": False, "side": False}).fit(ds, s.train)
    # the rating protocol's default: no graph features, side info, codes or clusters -> a constant user vector
    bare = hybrid(epochs=1, base_folds=1, use={"graph_features": False, "side": False, "codes": False,
                                               "clusters": False}).fit(ds, s.train)
    assert bare.ghrs.features.user_feature_names == ["constant"] and not bare.user_static.any()
    assert np.isfinite(bare.predict(s.test["user"].to_numpy(), s.test["item"].to_numpy())).all()


def test_autorec_base_is_a_stacked_blend(data):
    """With model.autorec the base is a least-squares blend of GHRS and AutoRec fitted out of fold; the
    rating head starts from it (epoch 0 = the blend) and both components see the same history."""
    ds, s = data
    m = hybrid(epochs=1, heads={"rating": 1.0, "ranking": 0.0}, base_folds=2,
               autorec={"hidden": 16, "epochs": 5, "reg": 1.0}).fit(ds, s.train)
    w = m.blender_.coef_
    assert w.shape == (3,) and np.isfinite(w).all()
    u, i = s.test["user"].to_numpy(), s.test["item"].to_numpy()
    blend = np.clip(w[0] + w[1] * m.ghrs.predict(u, i) + w[2] * m.bases_["autorec"].predict(u, i), 1, 5)
    np.testing.assert_allclose(m._base_predict(u, i), blend, rtol=1e-6)
    with pytest.raises(UserError, match="base_folds"):
        HybridRecommender(autorec={}, base_folds=1)
    with pytest.raises(UserError, match="blender"):
        HybridRecommender(autorec={}, blender="gbm")


def test_baseline_knn_base_joins_the_blend_and_folds_in_users(data):
    """model.bases adds any Recommender factory to the stacked base: the blend uses the kNN, its
    support-dependent weights are finite, and a user added after fit gets a base prediction."""
    ds, s = data
    m = hybrid(epochs=1, heads={"rating": 1.0, "ranking": 0.0}, base_folds=2, blender="support",
               bases={"knn": partial(KNNBaselineRecommender, k=10)}).fit(ds, s.train)
    assert set(m.bases_) == {"knn"} and m.blender_.coef_.shape == (9,) and np.isfinite(m.blender_.coef_).all()
    assert abs(m.blender_.coef_[2]) > 0.05  # the kNN's prediction carries weight
    u, i, y = s.test["user"].to_numpy(), s.test["item"].to_numpy(), s.test["rating"].to_numpy()
    assert rmse(m._base_predict(u, i), y) < rmse(m.ghrs.predict(u, i), y) + 0.01
    (new,) = m.add_users([10_001])
    m.set_history(pd.concat([s.train, pd.DataFrame({"user": new, "item": [0, 1, 2], "rating": [5.0, 1.0, 4.0],
                                                   "timestamp": [1, 2, 3]})], ignore_index=True))
    assert m.support_counts_[0][new] == 3 and np.isfinite(m.predict(np.full(5, new), np.arange(3, 8))).all()


def test_fold_in_encodes_only_the_new_user_and_equals_full_reencoding(data):
    """Folding in an unseen user runs the encoder on that user alone (not on everyone), and every user's
    state, vector and stream state equals what encoding everybody from scratch gives."""
    ds, s = data
    m = hybrid("gru", epochs=1, base_folds=1).fit(ds, s.train)
    items = ds.item_ids
    encoded: list[int] = []
    hook = m.net.encoder.register_forward_pre_hook(lambda mod, args: encoded.append(len(args[0])))
    out = recommend(m, [90_001], k=5, history=[[items[0], 5], [items[3], 4], [items[7], 2]])
    hook.remove()
    assert len(out) == 5 and encoded and max(encoded) == 1, encoded  # one user per encoder call
    u = ds.n_users  # the new user's index
    assert m.seqs.lengths[u] == 3
    full = copy.deepcopy(m)
    full._encoded_token = None  # forces encoding every user
    full._encode_history(full.history)
    np.testing.assert_allclose(m.final_states.numpy(), full.final_states.numpy(), atol=1e-5)
    np.testing.assert_allclose(m.user_vectors.numpy(), full.user_vectors.numpy(), atol=1e-5)
    leaves = [torch.utils._pytree.tree_leaves(x.stream_state) for x in (m, full)]
    tensors = [(a, b) for a, b in zip(*leaves) if isinstance(a, torch.Tensor)]
    assert tensors
    for a, b in tensors:
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)
