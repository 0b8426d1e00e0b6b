"""The HTTP service (``ghrs.serve``) against a real run: a tiny hybrid with a GRU trained through the pipeline."""

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from hydra import compose, initialize_config_dir

from ghrs.pipeline import run_training
from ghrs.serve import create_app
from ghrs.serving import MODEL_FILE, load_run

CONF = str(Path(__file__).resolve().parents[2] / "conf")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("serve_run")
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("train", overrides=[
            "dataset=synthetic", "dataset.n_users=80", "dataset.n_items=60", "dataset.ratings_per_user=15",
            "split=random", "model=hybrid", "encoder=gru", "encoder.d_model=16", "encoder.n_layers=1",
            "model.dim=16", "model.base_folds=1", "model.ghrs.n_clusters=3", "trainer.max_epochs=1",
            "trainer.progress=false"])
    run_training(cfg, run)
    return run


@pytest.fixture
def client(run_dir, tmp_path):
    """A fresh service per test (events and new users change its state)."""
    with TestClient(create_app(run_dir, snapshot_dir=tmp_path / "snapshots")) as c:
        yield c


def model_state(c: TestClient) -> dict:
    stats = c.get("/stats").json()
    return {k: v for k, v in stats.items() if k not in ("counts", "service_time", "uptime_s")}


def top(c: TestClient, user, k=10, exclude_seen=True) -> list[tuple]:
    r = c.get("/recommend", params={"user": user, "k": k, "exclude_seen": exclude_seen})
    assert r.status_code == 200, r.text
    return [(x["item"], x["score"]) for x in r.json()["items"]]


def seen_items(model, raw_user) -> set:
    u = model.dataset.user_index([raw_user])[0]
    return set(model.dataset.item_ids[model.history[model.history.user == u]["item"]].tolist())


def test_recommend_get_and_batch(client, run_dir):
    model, _ = load_run(run_dir)
    ds = model.dataset
    user = int(ds.user_ids[3])
    r = client.get("/recommend", params={"user": user, "k": 5})
    assert r.status_code == 200
    body = r.json()
    assert body["user"] == user and [x["rank"] for x in body["items"]] == [1, 2, 3, 4, 5]
    scores = [x["score"] for x in body["items"]]
    assert scores == sorted(scores, reverse=True)
    assert not {x["item"] for x in body["items"]} & seen_items(model, user)
    # the same items as the model's own scores, best first
    want = np.argsort(-np.where(np.isin(np.arange(ds.n_items), ds.item_index(list(seen_items(model, user)))),
                                -np.inf, model.score(ds.user_index([user]))[0]), kind="stable")[:5]
    assert [x["item"] for x in body["items"]] == ds.item_ids[want].tolist()
    assert all(isinstance(x["title"], str) and x["title"] for x in body["items"])
    # exclude_seen=false may return seen items; a batch answers per user in order
    all_items = client.get("/recommend", params={"user": user, "k": ds.n_items, "exclude_seen": False}).json()
    assert len(all_items["items"]) == ds.n_items
    users = [int(u) for u in ds.user_ids[:4]]
    batch = client.post("/recommend", json={"users": users, "k": 3}).json()["results"]
    assert [b["user"] for b in batch] == users and all(len(b["items"]) == 3 for b in batch)


def test_event_changes_the_next_recommendation(client, run_dir):
    model, _ = load_run(run_dir)
    user = int(model.dataset.user_ids[0])
    before_all = dict(top(client, user, k=model.dataset.n_items, exclude_seen=False))
    first = top(client, user, k=5)
    r = client.post("/events", json={"user": user, "item": first[0][0], "rating": 5})
    assert r.status_code == 200, r.text
    event = r.json()
    assert event["position"] == len(seen_items(model, user)) + 1 and event["rating"] == 5
    after = top(client, user, k=5)
    assert first[0][0] not in [i for i, _ in after]  # now seen
    after_all = dict(top(client, user, k=model.dataset.n_items, exclude_seen=False))
    assert max(abs(after_all[i] - before_all[i]) for i in before_all) > 1e-4  # the state moved
    # the stream state is the model's own observe of the same event
    model.observe(pd.DataFrame({"user": model.dataset.user_index([user]), "item": model.dataset.item_index(
        [first[0][0]]), "rating": np.float32([5]), "timestamp": [event["ts"]]}))
    expected = model.score(model.dataset.user_index([user]))[0]
    got = np.array([after_all[i] for i in model.dataset.item_ids])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # an implicit event (no rating, no ts) continues the clock and takes the middle of the scale
    implicit = client.post("/events", json={"user": user, "item": after[0][0]}).json()
    assert implicit["rating"] == 3.0 and implicit["ts"] > event["ts"] and implicit["position"] == event["position"] + 1


def test_fold_in_new_user_servable_at_once(client, run_dir):
    model, _ = load_run(run_dir)
    ds = model.dataset
    items = [int(i) for i in ds.item_ids[:3]]
    n_users = client.get("/stats").json()["users"]
    r = client.post("/users", json={"history": [[items[0], 5], [items[1], 4, 1_000]], "side": {"age": 30, "gender": "F"}})
    assert r.status_code == 201, r.text
    new = r.json()
    assert new["interactions"] == 2 and new["user"] not in ds.user_ids.tolist()
    assert client.get("/stats").json()["users"] == n_users + 1
    recs = top(client, new["user"], k=5)
    assert len(recs) == 5 and not {items[0], items[1]} & {i for i, _ in recs}
    pred = client.post("/predict", json={"pairs": [{"user": new["user"], "item": items[2]}]}).json()
    assert np.isfinite(pred["predictions"][0]["rating"])
    # side only, then an event for the folded-in user (re-encoded on a copy of the model)
    side_only = client.post("/users", json={"side": {"occupation": "student"}}).json()
    assert side_only["interactions"] == 0 and len(top(client, side_only["user"], k=3)) == 3
    ev = client.post("/events", json={"user": side_only["user"], "item": items[2], "rating": 2})
    assert ev.status_code == 200 and ev.json()["position"] == 1
    assert items[2] not in [i for i, _ in top(client, side_only["user"], k=ds.n_items - 1)]


def test_predict_healthz_stats(client, run_dir):
    model, _ = load_run(run_dir)
    ds = model.dataset
    pairs = [{"user": int(ds.user_ids[u]), "item": int(ds.item_ids[i])} for u, i in [(0, 1), (5, 7), (0, 2)]]
    r = client.post("/predict", json={"pairs": pairs})
    assert r.status_code == 200
    preds = r.json()["predictions"]
    assert [(p["user"], p["item"]) for p in preds] == [(p["user"], p["item"]) for p in pairs]
    np.testing.assert_allclose([p["rating"] for p in preds],
                               model.predict(np.array([0, 5, 0]), np.array([1, 7, 2])), atol=1e-5)
    assert client.get("/healthz").json() == {"status": "ok"}
    stats = client.get("/stats").json()
    assert stats["model"] == "HybridRecommender" and stats["encoder"] == "gru"
    assert stats["users"] == ds.n_users and stats["items"] == ds.n_items
    assert stats["counts"]["POST /predict"] == {"200": 1} and stats["counts"]["GET /healthz"] == {"200": 1}
    assert stats["service_time"]["POST /predict"]["n"] == 1 and stats["service_time"]["POST /predict"]["p99_ms"] > 0
    assert client.get("/docs").status_code == 200
    assert "/events" in client.get("/openapi.json").json()["paths"]


def test_concurrent_events_for_one_user_applied_once_in_order(client, run_dir):
    """Threads post events for one user while others read: every event lands exactly once, the state equals
    replaying them in the order the service reports, and every read saw a whole state (some prefix)."""
    model, _ = load_run(run_dir)
    ds = model.dataset
    user = int(ds.user_ids[1])
    u = ds.user_index([user])[0]
    n_before = int((model.history.user == u).sum())
    items = [int(i) for i in ds.item_ids[:24]]
    reads, stop = [], threading.Event()

    def reader():
        while not stop.is_set():
            reads.append(top(client, user, k=5, exclude_seen=False))

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in readers:
        t.start()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: client.post("/events", json={"user": user, "item": i, "rating": 4}), items))
    stop.set()
    for t in readers:
        t.join()
    assert all(r.status_code == 200 for r in results)
    events = sorted((r.json() for r in results), key=lambda e: e["position"])
    assert [e["position"] for e in events] == list(range(n_before + 1, n_before + 25))  # each once
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    assert client.get("/stats").json()["events_applied"] == 24
    # replay in the reported order on a fresh copy: the same state, and every read matches some prefix
    prefixes = [model.score(np.array([u]))[0]]
    for e in events:
        model.observe(pd.DataFrame({"user": [u], "item": ds.item_index([e["item"]]), "rating": np.float32([4]),
                                    "timestamp": [e["ts"]]}))
        prefixes.append(model.score(np.array([u]))[0])
    final = dict(top(client, user, k=ds.n_items, exclude_seen=False))
    np.testing.assert_allclose([final[i] for i in ds.item_ids], prefixes[-1], atol=1e-5)
    assert reads
    for read in reads:
        items_read = ds.item_index([i for i, _ in read])
        scores = np.array([s for _, s in read])
        assert any(np.allclose(p[items_read], scores, atol=1e-5) for p in prefixes), read


def test_snapshot_round_trip(client, run_dir, tmp_path):
    model, _ = load_run(run_dir)
    ds = model.dataset
    user = int(ds.user_ids[2])
    client.post("/events", json={"user": user, "item": int(ds.item_ids[0]), "rating": 5})
    new_user = client.post("/users", json={"history": [[int(ds.item_ids[1]), 4]]}).json()["user"]
    client.post("/events", json={"user": user, "item": int(ds.item_ids[5]), "rating": 1})
    r = client.post("/snapshot", json={"name": "snap1"})
    assert r.status_code == 201, r.text
    snap = Path(r.json()["run"])
    assert snap == tmp_path / "snapshots" / "snap1" and (snap / MODEL_FILE).is_file()
    assert (snap / "config.yaml").is_file() and json.loads((snap / "snapshot.json").read_text())["events_applied"] == 2
    assert not [p for p in snap.parent.iterdir() if p.name.startswith(".")]  # no temporary left behind
    assert client.post("/snapshot", json={"name": "snap1"}).status_code == 409  # never overwritten
    probes = {u: top(client, u, k=8) for u in (user, new_user, int(ds.user_ids[7]))}
    pairs = {"pairs": [{"user": user, "item": int(ds.item_ids[9])}, {"user": new_user, "item": int(ds.item_ids[3])}]}
    preds = client.post("/predict", json=pairs).json()
    state = model_state(client)
    with TestClient(create_app(snap)) as restarted:
        assert {u: top(restarted, u, k=8) for u in probes} == probes
        assert restarted.post("/predict", json=pairs).json() == preds
        again = model_state(restarted)
        assert {k: again[k] for k in ("users", "items", "interactions")} == {
            k: state[k] for k in ("users", "items", "interactions")}
        # the restarted service continues the same user's stream in time order
        nxt = restarted.post("/events", json={"user": user, "item": int(ds.item_ids[6])}).json()
        assert nxt["position"] == client.post("/events", json={"user": user, "item": int(ds.item_ids[6])}).json()["position"]


BAD_REQUESTS = [
    # (method, path, request kwargs, status, a field the error must name)
    ("get", "/recommend", {"params": {"user": 10**9}}, 404, "user"),
    ("get", "/recommend", {"params": {"user": "abc"}}, 422, "user"),
    ("get", "/recommend", {"params": {"user": "U0", "k": 0}}, 422, "k"),
    ("get", "/recommend", {"params": {"user": "U0", "k": -3}}, 422, "k"),
    ("get", "/recommend", {"params": {"user": "U0", "k": 61}}, 422, "k"),  # > n_items
    ("get", "/recommend", {"params": {"user": "U0", "k": "ten"}}, 422, "k"),
    ("get", "/recommend", {"params": {}}, 422, "user"),
    ("post", "/recommend", {"json": {"users": [], "k": 3}}, 422, "users"),
    ("post", "/recommend", {"json": {"users": ["U0", 10**9]}}, 404, "users"),
    ("post", "/recommend", {"json": {"users": ["U0"], "k": 0}}, 422, "k"),
    ("post", "/recommend", {"json": {"users": ["U0"], "kk": 3}}, 422, "kk"),
    ("post", "/events", {"json": {"user": 10**9, "item": "I0"}}, 404, "user"),
    ("post", "/events", {"json": {"user": "U0", "item": 10**9}}, 404, "item"),
    ("post", "/events", {"json": {"user": "U0", "item": "I0", "rating": 6}}, 422, "rating"),
    ("post", "/events", {"json": {"user": "U0", "item": "I0", "rating": 0.5}}, 422, "rating"),
    ("post", "/events", {"json": {"user": "U0", "item": "I0", "rating": "five"}}, 422, "rating"),
    ("post", "/events", {"json": {"user": "U0", "item": "I0", "ts": 5}}, 409, "ts"),  # older than the history
    ("post", "/events", {"json": {"user": "U0", "item": "I0", "ts": -1}}, 422, "ts"),
    ("post", "/events", {"json": {"user": "U0"}}, 422, "item"),
    ("post", "/events", {"json": {"user": "U0", "item": "I0", "colour": "red"}}, 422, "colour"),
    ("post", "/events", {"content": b'{"user": 1, "item":', "headers": {"content-type": "application/json"}}, 422,
     "body"),
    ("post", "/users", {"json": {}}, 422, "body"),
    ("post", "/users", {"json": {"side": {"shoe_size": 44}}}, 422, "shoe_size"),
    ("post", "/users", {"json": {"side": {"age": "old"}}}, 422, "age"),
    ("post", "/users", {"json": {"side": {"gender": 3}}}, 422, "gender"),
    ("post", "/users", {"json": {"history": [["I0", 9]]}}, 422, "history"),
    ("post", "/users", {"json": {"history": [[10**9, 4]]}}, 404, "history"),
    ("post", "/users", {"json": {"history": [["I0"]]}}, 422, "history"),
    ("post", "/users", {"content": b"not json", "headers": {"content-type": "application/json"}}, 422, "body"),
    ("post", "/predict", {"json": {"pairs": [{"user": 10**9, "item": "I0"}]}}, 404, "user"),
    ("post", "/predict", {"json": {"pairs": [{"user": "U0", "item": 10**9}]}}, 404, "item"),
    ("post", "/predict", {"json": {"pairs": []}}, 422, "pairs"),
    ("post", "/predict", {"json": {"pairs": [{"user": "U0"}]}}, 422, "item"),
    ("post", "/snapshot", {"json": {"name": "../escape"}}, 422, "name"),
    ("post", "/snapshot", {"json": {"name": 3}}, 422, "name"),
]


def _fill(value, ds):
    """Placeholders "U0" / "I0" -> the first known raw user / item id."""
    if value == "U0":
        return int(ds.user_ids[0])
    if value == "I0":
        return int(ds.item_ids[0])
    if isinstance(value, dict):
        return {k: _fill(v, ds) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, ds) for v in value]
    return value


@pytest.mark.parametrize("method,path,kwargs,status,field", BAD_REQUESTS,
                         ids=[f"{m} {p} {f} {s}" for m, p, _, s, f in BAD_REQUESTS])
def test_bad_request_is_4xx_naming_the_field_and_changes_nothing(client, run_dir, method, path, kwargs, status,
                                                                 field):
    ds = load_run(run_dir)[0].dataset
    probe = int(ds.user_ids[0])
    before = (model_state(client), top(client, probe, k=5), top(client, probe, k=5, exclude_seen=False))
    r = getattr(client, method)(path, **_fill(kwargs, ds))
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert any(field in [str(x) for x in d["loc"]] for d in detail), detail
    assert all(d["msg"] for d in detail)
    assert (model_state(client), top(client, probe, k=5), top(client, probe, k=5, exclude_seen=False)) == before
    assert not (Path(client.app.state.service.snapshot_dir)).exists()  # no snapshot written either


def test_model_layer_user_error_is_422(client, monkeypatch):
    """A UserError raised inside the model (e.g. a side value its encoder refuses) is a 422, state unchanged."""
    from ghrs.errors import UserError
    from ghrs.models.hybrid import HybridRecommender

    def refuse(self, raw_ids, side=None):
        raise UserError("side value 'x' is not a known gender")

    monkeypatch.setattr(HybridRecommender, "add_users", refuse)
    before = model_state(client)
    r = client.post("/users", json={"side": {"gender": "x"}})
    assert r.status_code == 422 and "gender" in r.json()["detail"][0]["msg"]
    assert model_state(client) == before


def test_snapshot_without_a_name_and_unknown_route(client, tmp_path):
    r = client.post("/snapshot")
    assert r.status_code == 201, r.text
    assert Path(r.json()["run"]).parent == tmp_path / "snapshots" and (Path(r.json()["run"]) / MODEL_FILE).is_file()
    assert client.get("/nope").status_code == 404
    assert client.get("/stats").json()["counts"]["GET other"] == {"404": 1}


def test_entry_point_without_a_run_is_a_one_line_error(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for args in ([], [f"run={tmp_path / 'none'}"]):
        out = subprocess.run([sys.executable, "-m", "ghrs.serve", *args], capture_output=True, text=True, env=env,
                             cwd=tmp_path, timeout=120, check=False)
        assert out.returncode == 2 and out.stderr.startswith("error: ") and "Traceback" not in out.stderr, out.stderr
