"""Pickle-free artefacts: every model type round-trips exactly, and loading never runs code from a file."""

import json
import os
import pickle
import struct
from functools import partial

import numpy as np
import pandas as pd
import pytest
import torch

from ghrs import artefacts
from ghrs.artefacts import ArtefactError
from ghrs.data.splits import ColdUserSplit, RandomSplit
from ghrs.data.synthetic import make_synthetic
from ghrs.errors import UserError
from ghrs.models.bias import BiasRecommender
from ghrs.models.ease import EASERecommender
from ghrs.models.genrepop import GenrePopRecommender
from ghrs.models.ghrs import GHRSRecommender
from ghrs.models.hybrid import HybridRecommender
from ghrs.models.itemknn import ItemKNNRecommender
from ghrs.models.knn_baseline import KNNBaselineRecommender
from ghrs.models.lightgcn import LightGCNRecommender
from ghrs.models.mf import MFRecommender
from ghrs.models.pop import PopRecommender
from ghrs.serving import LEGACY_MODEL_FILE, MODEL_FILE, load_run, predict_pairs, recommend, save_run_model
from ghrs.training import CHECKPOINT, TrainerConfig, load_checkpoint
from ssm.encoders import SequenceEncoder

GHRS = {"alpha": 0.02, "n_clusters": 3, "autoencoder": {"epochs": 5}, "item_autoencoder": {"epochs": 5}}
TRAINER = TrainerConfig(max_epochs=2, batch_size=32, lr=0.01, progress=False)


def hybrid(layer: str, **kw) -> HybridRecommender:
    options = {"d_state": 4, "expand": 1} if layer == "mamba" else {}
    enc = partial(SequenceEncoder, layer=layer, d_model=8, n_layers=1, dropout=0.0, **options)
    return HybridRecommender(encoder=enc, ghrs=GHRS, dim=8, dropout=0.0, trainer=TRAINER, base_folds=2, **kw)


MODELS = {
    "bias": BiasRecommender,
    "mf": lambda: MFRecommender(dim=4, trainer=TRAINER),
    "lightgcn": lambda: LightGCNRecommender(dim=8, n_layers=2, trainer=TRAINER),
    "ghrs": lambda: GHRSRecommender(**GHRS),
    "hybrid-gru": lambda: hybrid("gru"),
    "hybrid-mamba": lambda: hybrid("mamba"),
    # top-k variants: ranking head only (no GHRS predictor), all-prefix windows, the content tower, AutoRec blend
    "hybrid-topk": lambda: hybrid("gru", heads={"rating": 0.0, "ranking": 1.0}, train_regime="all_prefixes",
                                  item_dropout=0.3),
    "hybrid-autorec": lambda: hybrid("gru", autorec={"hidden": 8, "epochs": 2}),
    "hybrid-knn": lambda: hybrid("gru", bases={"knn": partial(KNNBaselineRecommender, k=5)}, blender="support"),
    "knn_baseline": lambda: KNNBaselineRecommender(k=5),
    "pop": PopRecommender,
    "itemknn": ItemKNNRecommender,
    "ease": EASERecommender,
    "genrepop": GenrePopRecommender,
}


@pytest.fixture(scope="module")
def data():
    ds = make_synthetic(n_users=60, n_items=40, ratings_per_user=12, seed=5)
    return ds, RandomSplit(0.15, seed=0, valid_ratio=0.1)(ds)


class Payload:
    """Unpickling this writes a marker file: proof that a loader ran code from the file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def pairs(model, users):
    n = model.dataset.n_items
    return np.repeat(users, n), np.tile(np.arange(n), len(users))


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_round_trips_exactly_and_still_folds_in(tmp_path, data, name):
    ds, s = data
    model = MODELS[name]().fit(ds, s.train, s.valid)
    save_run_model(tmp_path / MODEL_FILE, model, {"model": {"name": name}})
    loaded, config = load_run(tmp_path)
    assert config == {"model": {"name": name}} and type(loaded) is type(model)
    users = np.arange(ds.n_users)
    np.testing.assert_array_equal(model.score(users), loaded.score(users))
    if model.predicts_ratings:
        np.testing.assert_array_equal(model.predict(*pairs(model, users[:10])), loaded.predict(*pairs(loaded, users[:10])))
    # The artefact keeps the training interactions, never the valid/test ratings or the predefined folds.
    assert len(loaded.dataset.ratings) == 0 and loaded.dataset.folds == {}
    pd.testing.assert_frame_equal(loaded.history.reset_index(drop=True), s.train.reset_index(drop=True))
    held_out = set(zip(s.test["user"], s.test["item"])) | set(zip(s.valid["user"], s.valid["item"]))
    assert not held_out & set(zip(loaded.history["user"], loaded.history["item"]))
    # Side information of users with training ratings is not kept (their vectors are fitted already).
    assert ds.users.notna().all().all() and loaded.dataset.users.isna().all().all()
    # Serving after load: a new user folded in from history and side info, then a known user's new
    # interaction (one streaming step for recurrent encoders), give what the original model gives.
    items = ds.item_ids
    new = {"history": [[items[0], 5], [items[3], 1], [items[7], 4]], "side": {"age": 30, "gender": "F"}}
    for m in (model, loaded):
        m.out_new = recommend(m, [99_999], k=5, **new)
        m.out_known = recommend(m, [ds.user_ids[2]], k=5, history=[[items[11], 5]])
        if m.predicts_ratings:
            m.out_pairs = predict_pairs(m, pd.DataFrame({"user": [99_999, ds.user_ids[2]], "item": items[:2]}))
    pd.testing.assert_frame_equal(model.out_new, loaded.out_new)
    pd.testing.assert_frame_equal(model.out_known, loaded.out_known)
    if model.predicts_ratings:
        pd.testing.assert_frame_equal(model.out_pairs, loaded.out_pairs)


def test_cold_users_keep_their_side_information_and_fold_in_identically(tmp_path):
    ds = make_synthetic(n_users=80, n_items=40, ratings_per_user=12, seed=2)
    s = ColdUserSplit(0.25, reveal=3, seed=0)(ds)
    model = GHRSRecommender(**GHRS).fit(ds, s.train)
    save_run_model(tmp_path / MODEL_FILE, model, {})
    loaded, _ = load_run(tmp_path)
    trained = np.bincount(s.train["user"], minlength=ds.n_users) > 0
    assert (~trained).any() and loaded.dataset.users[trained].isna().all().all()
    pd.testing.assert_frame_equal(loaded.dataset.users[~trained], ds.users[~trained], check_dtype=False)
    history = pd.concat([s.train, s.revealed], ignore_index=True)
    for m in (model, loaded):
        m.set_history(history)
    np.testing.assert_array_equal(model.predict(s.test["user"], s.test["item"]),
                                  loaded.predict(s.test["user"], s.test["item"]))


def test_a_saved_fold_in_round_trips(tmp_path, data):
    """A model saved after serving-time changes (new users, streamed interactions) loads as it was."""
    ds, s = data
    model = hybrid("gru").fit(ds, s.train, s.valid)
    recommend(model, [99_999], k=3, history=[[ds.item_ids[0], 5]], side={"age": 30})
    recommend(model, [ds.user_ids[1]], k=3, history=[[ds.item_ids[5], 4]])
    save_run_model(tmp_path / MODEL_FILE, model, {})
    loaded, _ = load_run(tmp_path)
    users = np.arange(loaded.dataset.n_users)
    assert loaded.dataset.n_users == ds.n_users + 1
    np.testing.assert_array_equal(model.score(users), loaded.score(users))
    pd.testing.assert_frame_equal(recommend(model, [ds.user_ids[1]], k=5, history=[[ds.item_ids[9], 2]]),
                                  recommend(loaded, [ds.user_ids[1]], k=5, history=[[ds.item_ids[9], 2]]))


def test_codec_keeps_values_types_and_shared_references(tmp_path):
    shared = pd.DataFrame({"user": np.arange(3), "title": ["a", "b", None], "cat": pd.Categorical(["x", "y", "x"])})
    obj = {"frame": shared, "again": shared, "ints": (1, 2.5, None, "s"), 3: np.float32(1.5),
           "arr": np.arange(6, dtype=np.int32).reshape(2, 3), "strs": np.array(["ab", "c"]),
           "t": torch.randn(2, 2), "nan": float("nan"), "set": {1, 2}, "dtype": np.dtype("int64")}
    path = artefacts.save(tmp_path / "x.safetensors", obj, {"note": "hi"})
    back, meta = artefacts.load(path)
    assert meta == {"note": "hi"} and back["again"] is back["frame"]
    pd.testing.assert_frame_equal(back["frame"], shared)
    assert back["ints"] == (1, 2.5, None, "s") and isinstance(back[3], np.float32) and back[3] == 1.5
    assert back["arr"].dtype == np.int32 and (back["arr"] == obj["arr"]).all() and list(back["strs"]) == ["ab", "c"]
    assert torch.equal(back["t"], obj["t"]) and np.isnan(back["nan"]) and back["set"] == {1, 2}


def test_classes_outside_the_allowlist_are_never_saved():
    with pytest.raises(TypeError, match="ALLOWED_NAMES"):
        artefacts.dumps({"f": Payload("x")})
    with pytest.raises(TypeError, match="ALLOWED_NAMES"):
        artefacts.dumps(lambda: None)


def _forge(path, manifest: dict, tensors: dict | None = None) -> None:
    """A well-formed safetensors file with a hand-written manifest (what an attacker could write)."""
    from safetensors.torch import save

    path.write_bytes(save(tensors or {"t0": torch.zeros(1)}, metadata={"ghrs": json.dumps(manifest)}))


@pytest.mark.parametrize("root", [
    {"__t": "global", "v": "os.system"},
    {"__t": "obj", "cls": "subprocess.Popen", "s": {"args": "touch MARKER"}},
    {"__t": "partial", "f": {"__t": "global", "v": "builtins.eval"}, "a": ["open('MARKER','w')"], "k": {}},
    {"__t": "new", "cls": "builtins.open", "kw": {}, "sd": {}},
    {"__t": "ntuple", "cls": "posix.system", "v": ["touch MARKER"]},
    {"__t": "dict", "k": ["a"], "v": [{"__t": "ref", "@": 7}]},
])
def test_a_forged_manifest_is_refused_without_running_anything(tmp_path, root, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _forge(tmp_path / MODEL_FILE, {"format": "ghrs-artefact", "version": 1, "meta": {"config": {}}, "root": root})
    with pytest.raises(ArtefactError, match=MODEL_FILE) as err:
        load_run(tmp_path)
    assert "\n" not in str(err.value) and "retrain" in str(err.value)
    assert not (tmp_path / "MARKER").exists()


def test_a_pickle_payload_in_the_model_file_never_runs(tmp_path):
    marker = tmp_path / "MARKER"
    for name in (MODEL_FILE, LEGACY_MODEL_FILE):
        run = tmp_path / name.replace(".", "_")
        run.mkdir()
        torch.save({"model": Payload(marker), "config": {}}, run / name)
        with pytest.raises(UserError, match=name) as err:
            load_run(run)
        assert "\n" not in str(err.value)
        (run / MODEL_FILE).write_bytes(pickle.dumps(Payload(marker)))  # a raw pickle under the new name
        with pytest.raises(ArtefactError, match=MODEL_FILE):
            load_run(run)
    assert not marker.exists()


def test_a_pickle_payload_in_a_checkpoint_never_runs(tmp_path):
    marker = tmp_path / "MARKER"
    torch.save({"model": {}, "optimizer": {}, "state": {}, "rng": Payload(marker)}, tmp_path / CHECKPOINT)
    with pytest.raises(UserError, match=f"{CHECKPOINT}.*never loaded") as err:
        load_checkpoint(tmp_path / CHECKPOINT)
    assert "\n" not in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "header"])
def test_corrupt_model_files_are_one_line_errors(tmp_path, data, damage):
    ds, s = data
    path = save_run_model(tmp_path / MODEL_FILE, BiasRecommender().fit(ds, s.train), {})
    good = path.read_bytes()
    bad = {"garbage": os.urandom(2000), "truncated": good[: len(good) // 2], "empty": b"",
           "header": struct.pack("<Q", 10**12) + good[8:]}[damage]
    path.write_bytes(bad)
    with pytest.raises(ArtefactError, match=f"{MODEL_FILE}.*retrain") as err:
        load_run(tmp_path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_checkpoints_are_one_line_errors(tmp_path, damage):
    torch.save({"model": {"w": torch.zeros(100)}, "optimizer": {}, "state": {}, "rng": {}}, tmp_path / CHECKPOINT)
    good = (tmp_path / CHECKPOINT).read_bytes()
    (tmp_path / CHECKPOINT).write_bytes(os.urandom(500) if damage == "garbage" else good[: len(good) // 2])
    with pytest.raises(UserError, match=f"{CHECKPOINT}.*(corrupt|not a ghrs)") as err:
        load_checkpoint(tmp_path / CHECKPOINT)
    assert "\n" not in str(err.value)


def test_a_missing_run_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no run at"):
        load_run(tmp_path / "nope")
    with pytest.raises(UserError, match=MODEL_FILE):
        load_run(tmp_path)  # a directory without a model


def test_the_entry_points_never_run_a_planted_payload(tmp_path):
    """``ghrs.recommend`` / ``ghrs.predict`` on a run dir whose model.pt carries a payload: refused."""
    import subprocess
    import sys
    from pathlib import Path

    marker = tmp_path / "MARKER"
    torch.save({"model": Payload(marker), "config": {}}, tmp_path / LEGACY_MODEL_FILE)
    root = str(Path(__file__).resolve().parents[2])
    out = subprocess.run([sys.executable, "-m", "ghrs.recommend", f"run={tmp_path}", "users=[1]"], check=False,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": root}, cwd=tmp_path)
    assert out.returncode != 0 and LEGACY_MODEL_FILE in out.stderr and "retrain" in out.stderr
    assert not marker.exists()


def test_runs_saved_before_the_module_split_still_load(tmp_path, data):
    """Artefacts name classes by module; those written before ghrs.py / hybrid.py were split name the old
    modules (e.g. ghrs.models.ghrs.GHRSFeatures), which the allowlist still accepts and resolves."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save

    ds, s = data
    model = hybrid("gru").fit(ds, s.train, s.valid)
    path = tmp_path / MODEL_FILE
    save_run_model(path, model, {})
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    renamed = {"ghrs.models.ghrs_features.GHRSFeatures": "ghrs.models.ghrs.GHRSFeatures",
               "ghrs.models.agreement_neighbourhood.NeighbourConfig": "ghrs.models.ghrs.NeighbourConfig",
               "ghrs.models.hybrid_net.HybridNet": "ghrs.models.hybrid.HybridNet",
               "ghrs.models.sequences.Sequences": "ghrs.models.hybrid.Sequences"}
    manifest = metadata["ghrs"]
    for new, old in renamed.items():
        assert new in manifest, f"{new} is not in the saved manifest"
        manifest = manifest.replace(f'"{new}"', f'"{old}"')
    path.write_bytes(save(load_file(str(path)), metadata={**metadata, "ghrs": manifest}))
    loaded, _ = load_run(tmp_path)
    users = np.arange(ds.n_users)
    np.testing.assert_array_equal(model.score(users), loaded.score(users))
