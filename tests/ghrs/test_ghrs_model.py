import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from ghrs.data.splits import ColdUserSplit, OfficialSplit, RandomSplit
from ghrs.data.synthetic import make_synthetic
from ghrs.errors import UserError
from ghrs.evaluate import evaluate
from ghrs.metrics import rmse
from ghrs.models.bias import BiasRecommender
from ghrs.models.ghrs import GHRSRecommender
from ghrs.models.ghrs_features import GHRSFeatures
from ghrs.pipeline import run_training

CONF = str(Path(__file__).resolve().parents[2] / "conf")
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
REAL = Path(os.environ.get("GHRS_DATA_DIR", SHARED))

# Small and fast: a 16-unit autoencoder, few epochs, a small k range.
FAST = {"alpha": 0.02, "autoencoder": {"hidden": [16], "code_dim": 4, "epochs": 30},
        "item_autoencoder": {"hidden": [16], "code_dim": 4, "epochs": 30}, "k_range": (2, 8), "kmeans_n_init": 2}


@pytest.fixture(scope="module")
def data():
    ds = make_synthetic(n_users=240, n_items=150, n_groups=4, ratings_per_user=35, seed=3)
    return ds, RandomSplit(0.15, seed=0)(ds)


@pytest.fixture(scope="module")
def fitted(data):
    ds, s = data
    return GHRSRecommender(**FAST).fit(ds, s.train)


def test_both_predictors_give_finite_clipped_predictions(data, fitted):
    ds, s = data
    u, i = s.test["user"].to_numpy(), s.test["item"].to_numpy()
    for predictor in ("agreement_knn", "paper"):
        m = fitted.refit_predictor(predictor=predictor)
        m.set_history(s.train)
        p = m.predict(u, i)
        assert p.shape == (len(u),) and np.isfinite(p).all() and p.min() >= 1.0 and p.max() <= 5.0
        scores = m.score(np.array([0, 5, 7]))
        assert scores.shape == (3, ds.n_items) and np.isfinite(scores).all()
        # score and predict agree (up to clipping)
        np.testing.assert_allclose(np.clip(scores[1], 1, 5), m.predict(np.full(ds.n_items, 5), np.arange(ds.n_items)),
                                   rtol=1e-5)
    fitted.refit_predictor(predictor="agreement_knn")
    # on planted data the default predictor beats the bias baseline and the paper rule beats the global mean
    bias = BiasRecommender().fit(ds, s.train)
    y = s.test["rating"].to_numpy()
    assert rmse(fitted.predict(u, i), y) < rmse(bias.predict(u, i), y)
    paper = fitted.refit_predictor(predictor="paper").predict(u, i)
    assert rmse(paper, y) < rmse(np.full(len(y), s.train["rating"].mean()), y)
    fitted.refit_predictor(predictor="agreement_knn")


def test_feature_arrays_for_hybrid_models(data, fitted):
    ds, _ = data
    f = fitted.features
    assert isinstance(f, GHRSFeatures)
    assert f.user_features.shape[0] == ds.n_users and f.user_graph_features.shape == (ds.n_users, 6)
    assert f.user_codes.shape == (ds.n_users, 4) and f.user_clusters.shape == (ds.n_users,)
    assert f.item_features.shape[0] == ds.n_items and f.item_codes.shape == (ds.n_items, 4)
    names = f.user_feature_names
    assert names[:6] == [f"graph:{n}" for n in ("pagerank", "degree", "closeness", "betweenness", "load",
                                                  "avg_neighbor_degree")]
    assert sum(n.startswith("age=") for n in names) <= 6 and any(n.startswith("gender=") for n in names)
    assert any(n.startswith("genre=") for n in f.item_feature_names)
    assert f.user_graph_features.min() >= 0 and f.user_graph_features.max() <= 1 + 1e-6  # max scaling


def test_no_leakage_test_ratings_change_nothing_learned(data):
    ds, s = data
    a = GHRSRecommender(**FAST).fit(ds, s.train)
    # the same training ratings, but the test ratings changed (all 1s) or removed from the dataset
    changed = ds.ratings.copy()
    changed.loc[s.test.index, "rating"] = 1.0
    removed = ds.ratings.drop(index=s.test.index)
    for ratings in (changed, removed):
        b = GHRSRecommender(**FAST).fit(replace(ds, ratings=ratings), s.train)
        np.testing.assert_array_equal(a.features.user_codes, b.features.user_codes)
        np.testing.assert_array_equal(a.features.user_clusters, b.features.user_clusters)
        np.testing.assert_array_equal(a.features.item_codes, b.features.item_codes)
        np.testing.assert_array_equal(a.paper_table, b.paper_table)
        u, i = s.test["user"].to_numpy(), s.test["item"].to_numpy()
        np.testing.assert_array_equal(a.predict(u, i), b.predict(u, i))
    # ...whereas the deliberately leaky protocol does see them
    leaky = GHRSRecommender(**FAST, leakage="features").fit(replace(ds, ratings=changed), s.train)
    assert not np.array_equal(a.features.user_features, leaky.features.user_features)


@pytest.mark.parametrize("reveal", [0, 5])
def test_cold_users_beat_the_global_mean(reveal):
    ds = make_synthetic(n_users=300, n_items=150, n_groups=4, ratings_per_user=40, seed=1)
    s = ColdUserSplit(holdout_ratio=0.2, reveal=reveal, seed=0)(ds)
    m = GHRSRecommender(**FAST).fit(ds, s.train)
    assert not m.trained_users[s.cold_users].any()
    history = pd.concat([s.train, s.revealed], ignore_index=True)
    m.set_history(history)
    u, i, y = s.test["user"].to_numpy(), s.test["item"].to_numpy(), s.test["rating"].to_numpy()
    p = m.predict(u, i)
    assert np.isfinite(p).all()
    assert rmse(p, y) < rmse(np.full(len(y), s.train["rating"].mean()), y)
    if reveal:
        # revealed ratings reach the model: the cold users' state differs from the side-only one
        side_only = m.state.b_user[s.cold_users].copy()
        m.set_history(s.train)
        assert not np.allclose(side_only, m.state.b_user[s.cold_users])
        # training users are untouched by folding in cold users
        np.testing.assert_array_equal(m.state.b_user[m.trained_users], m._fit_state.b_user[m.trained_users])


def test_cold_user_graph_features_come_from_edges_to_training_users(data):
    ds, s = data
    m = GHRSRecommender(**{**FAST, "alpha": 0.01}).fit(ds, s.train)
    f = m.features
    # a copy of a training user's ratings under a new user index gets the same graph neighbours
    src = int(np.argmax(f.user_extractor.graph.degree))
    grown = replace(ds, users=pd.concat([ds.users, ds.users.iloc[[src]]], ignore_index=True),
                    user_ids=np.append(ds.user_ids, ds.user_ids.max() + 1))
    m.dataset = grown
    new = len(grown.users) - 1
    copy = s.train[s.train["user"] == src].assign(user=new)
    f.transform_users(pd.concat([s.train, copy], ignore_index=True), grown.users)
    assert f.user_graph_features[new, 1] > 0  # degree
    np.testing.assert_allclose(f.user_features[new, 6:], f.user_features[src, 6:])  # same side info
    # without its ratings the new user is side-only again; the grown side table is remembered
    assert len(f.transform_users(s.train)) == 0 and f.user_clusters.shape == (ds.n_users + 1,)
    assert f.user_graph_features[new].sum() == 0


def test_pipeline_run_writes_plots(tmp_path):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("train", overrides=[
            "dataset=synthetic", "split=random", "split.valid_ratio=0.1", "model=ghrs", "trainer.progress=false",
            "model.autoencoder.epochs=20", "model.item_autoencoder.epochs=20", "model.k_range=[2,8]",
            "model.alpha_sweep=[0.01,0.03]"])
    metrics = run_training(cfg, tmp_path)
    assert np.isfinite(metrics["test"]["rmse"]) and metrics["test"]["rmse"] < 1.2
    for name in ("ghrs_elbow.png", "ghrs_alpha_sweep.png", "ghrs_alpha_sweep.csv", "ghrs_summary.json"):
        assert (tmp_path / name).exists(), name
    summary = json.loads((tmp_path / "ghrs_summary.json").read_text())
    assert summary["chosen_by"] == "elbow" and set(summary["seconds"]) >= {"graph", "autoencoder", "clustering"}
    sweep = pd.read_csv(tmp_path / "ghrs_alpha_sweep.csv")
    assert list(sweep["alpha"]) == [0.01, 0.03] and (sweep["graph_edges"].diff().dropna() <= 0).all()


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="predictor must be one of"):
        GHRSRecommender(predictor="knn")
    with pytest.raises(ValueError, match="leakage must be one of"):
        GHRSRecommender(leakage="some")
    with pytest.raises(ValueError, match="unknown neighbours option"):
        GHRSRecommender(neighbours={"k": 3})
    with pytest.raises(ValueError, match="centrality.engine"):
        GHRSRecommender(centrality={"engine": "igraph"}).fit(*_tiny())


def _tiny():
    ds = make_synthetic(n_users=30, n_items=20, ratings_per_user=8, seed=0)
    return ds, ds.ratings


@pytest.mark.realdata
def test_real_ml100k_u1_default_beats_the_target():
    if not (REAL / "ml-100k.zip").exists():
        pytest.skip(f"real MovieLens not found at {REAL}")
    from ghrs.data.movielens import load_movielens

    ds = load_movielens("ml-100k", root=str(REAL), download=False)
    s = OfficialSplit("u1")(ds)
    m = GHRSRecommender().fit(ds, s.train)
    out = evaluate(m, ds, s, "test", progress=False)
    assert out["rmse"] < 0.93


def test_side_information_encoding():
    from ghrs.features import SideEncoder, age_bin, encode_item_side

    users = pd.DataFrame({"age": [7, 10, 11, 35, 50, 51, 56], "gender": list("MFMFMFM"),
                          "occupation": ["student"] * 6 + ["doctor"], "zip": ["1", "2", "3", "4", "5", "6", "7"]})
    assert list(age_bin(users["age"]).astype(str)) == ["<=10", "<=10", "11-20", "31-40", "41-50", ">50", ">50"]
    enc = SideEncoder().fit(users)
    x = enc.transform(users)
    assert x.shape == (7, 2 + 5 + 2) and (x.sum(1) == 3).all()  # gender + age bin + occupation, no zip
    # an unseen category maps to zeros; the vocabulary is fixed at fit
    new = enc.transform(pd.DataFrame({"age": [35], "gender": ["X"], "occupation": ["pilot"], "zip": ["9"]}))
    assert new.sum() == 1  # only the age bin 31-40 is known
    assert SideEncoder(zip_region=True).fit(users).transform(users).shape[1] == 9 + 7
    # tables without the paper's columns use the generic encoder
    generic = pd.DataFrame({"income": [1.0, 2.0, 3.0], "city": ["a", "b", "a"]})
    g = SideEncoder().fit(generic)
    assert g.generic and g.transform(generic).shape == (3, 3)
    items = pd.DataFrame({"title": ["a", "b"], "year": [1995.0, np.nan], "genres": ["Action|Drama", "Drama"]})
    xi, names = encode_item_side(items)
    assert names == ["genre=Action", "genre=Drama", "decade=1990"] and xi.tolist() == [[1, 1, 1], [0, 1, 0]]


def test_neighbour_candidate_pool(data, fitted):
    ds, s = data
    u, i = s.test["user"].to_numpy(), s.test["item"].to_numpy()
    # a pool holding every user is the exact model
    whole = GHRSRecommender(**FAST, neighbours={"candidates": ds.n_users + 5}).fit(ds, s.train)
    np.testing.assert_array_equal(whole.predict(u, i), fitted.predict(u, i))
    # a small pool: neighbours only among the most active users, predictions still sane
    small = GHRSRecommender(**FAST, neighbours={"candidates": 30}).fit(ds, s.train)
    nb = small.nbr
    counts = np.bincount(s.train["user"], minlength=ds.n_users)
    pool = np.flatnonzero(nb.w_user.getnnz(axis=0))
    assert len(pool) <= 30 and counts[pool].min() >= np.sort(counts)[-30]
    p = small.predict(u, i)
    assert np.isfinite(p).all() and not np.array_equal(p, fitted.predict(u, i))
    assert rmse(s.test["rating"].to_numpy(), p) < rmse(s.test["rating"].to_numpy(), np.full(len(p), s.train["rating"].mean()))
    with pytest.raises(ValueError, match="candidates"):
        GHRSRecommender(neighbours={"candidates": 0})


def test_residual_is_a_deprecated_alias_of_agreement_knn(data, fitted):
    _, s = data
    u, i = s.test["user"].to_numpy(), s.test["item"].to_numpy()
    expected = fitted.refit_predictor(predictor="agreement_knn").predict(u, i)
    with pytest.warns(DeprecationWarning, match="now called 'agreement_knn'"):
        fitted.refit_predictor(predictor="residual")
    assert fitted.predictor == "agreement_knn"
    np.testing.assert_array_equal(fitted.predict(u, i), expected)
    with pytest.warns(DeprecationWarning):
        assert GHRSRecommender(predictor="residual").predictor == "agreement_knn"


def test_unused_user_parts_are_not_fitted(data):
    """No graph features: no user graph is built; no codes and one cluster (user_autoencoder=False): no
    user autoencoder. Fold-in still gives every new user a vector, a zero-width code and cluster 0."""
    ds, s = data
    lean = GHRSFeatures(**FAST, graph_features=[], n_clusters=1, user_autoencoder=False).fit(ds, s.train)
    assert lean.user_extractor.graph is None and lean.user_ae is None
    assert not {"graph", "graph_features", "autoencoder"} & set(lean.seconds)
    assert lean.user_codes.shape == (ds.n_users, 0) and (lean.user_clusters == 0).all()
    full = GHRSFeatures(**FAST, graph_features=[], n_clusters=1).fit(ds, s.train)
    np.testing.assert_array_equal(lean.user_features, full.user_features)  # same side-only vectors
    np.testing.assert_array_equal(lean.item_features, full.item_features)
    assert full.user_ae is not None and full.user_codes.shape[1] > 0
    cold = np.unique(s.test["user"].to_numpy())[:5]
    lean.trained_users[cold] = False  # treat some users as new: they are folded in from their test ratings
    assert set(lean.transform_users(s.test[s.test["user"].isin(cold)])) == set(cold)
    assert lean.user_codes.shape == (ds.n_users, 0) and (lean.user_clusters[cold] == 0).all()
    with pytest.raises(UserError, match="user_autoencoder=false .* needs n_clusters=1, got 3"):
        GHRSFeatures(user_autoencoder=False, n_clusters=3)
