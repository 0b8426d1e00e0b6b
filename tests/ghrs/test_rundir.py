"""One writer per run dir (lock, serialised save=true updates), stale temp files, run ids, 0644 artefacts."""

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from ghrs.data.splits import RandomSplit
from ghrs.data.synthetic import make_synthetic
from ghrs.io import write_bytes_atomic
from ghrs.models.bias import BiasRecommender
from ghrs.pipeline import run_training
from ghrs.rundir import LOCK_FILE, RunDirBusy, run_lock
from ghrs.serving import MODEL_FILE, load_run, recommend, save_run_model, update_run

CONF = str(Path(__file__).resolve().parents[2] / "conf")
ROOT = str(Path(__file__).resolve().parents[2])


def config(*overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("train", overrides=["dataset=synthetic", "trainer.progress=false", "split=random", *overrides])


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_a_second_trainer_on_the_same_run_dir_is_refused(tmp_path):
    busy = r"in use by training \(pid \d+, run id abcd1234\)"
    with run_lock(tmp_path, "training", run_id="abcd1234"), pytest.raises(RunDirBusy, match=busy) as err:
        run_training(config("model=bias"), tmp_path)
    assert "\n" not in str(err.value)
    assert not (tmp_path / MODEL_FILE).exists()
    run_training(config("model=bias"), tmp_path)  # released: the next trainer runs
    assert (tmp_path / MODEL_FILE).exists()


def test_a_lock_left_by_a_killed_process_is_not_stale(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", ("import sys, time; from ghrs.rundir import run_lock\n"
         f"with run_lock({str(tmp_path)!r}, 'training'):\n    print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": ROOT})
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunDirBusy, match=f"pid {holder.pid}"), run_lock(tmp_path, "training"):
        pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (tmp_path / LOCK_FILE).exists()  # the file stays; the kernel dropped the lock with the process
    with run_lock(tmp_path, "training"):
        pass


def test_stale_temp_files_are_removed_when_a_run_starts(tmp_path):
    stale = [tmp_path / ".last.ckpt.k2j3h4.tmp", tmp_path / ".model.safetensors.abc.tmp"]
    for p in stale:
        p.write_bytes(b"half a write")
    keep = tmp_path / "notes.tmp"  # not ours: never touched
    keep.write_text("mine")
    run_training(config("model=bias"), tmp_path)
    assert not any(p.exists() for p in stale) and keep.read_text() == "mine"


def test_run_id_tags_logs_config_metrics_and_checkpoints(tmp_path, caplog):
    import torch

    with caplog.at_level(logging.INFO):
        run_training(config("model=mf", "trainer.max_epochs=1"), tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    run_id = metrics["run_id"]
    assert len(run_id) == 8
    assert (tmp_path / "config.yaml").read_text().startswith(f"# run_id: {run_id}\n")
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["meta"]["run_id"] == run_id
    assert {r.run_id for r in caplog.records if r.name.startswith("ghrs.")} == {run_id}
    # the log format of ghrs.train shows it
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("train", return_hydra_config=True)
    assert "%(run_id)s" in cfg.hydra.job_logging.formatters.simple.format
    run_training(config("model=bias"), tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text())["run_id"] != run_id  # a new id per run


def test_artefacts_are_written_0644(tmp_path, umask_022):
    path = write_bytes_atomic(tmp_path / "x.json", b"{}")
    assert path.stat().st_mode & 0o777 == 0o644
    run_training(config("model=mf", "trainer.max_epochs=1"), tmp_path / "run")
    for name in (MODEL_FILE, "last.ckpt", "metrics.json", "config.yaml", LOCK_FILE):
        assert (tmp_path / "run" / name).stat().st_mode & 0o777 == 0o644, name


def test_concurrent_save_true_updates_keep_every_added_user(tmp_path):
    ds = make_synthetic(n_users=40, n_items=30, ratings_per_user=10, seed=1)
    model = BiasRecommender().fit(ds, RandomSplit(0.1, seed=0)(ds).train)
    save_run_model(tmp_path / MODEL_FILE, model, {})
    item = ds.item_ids[0]
    both_loaded = threading.Barrier(2, timeout=1)
    errors = []

    def add(user):
        def apply(m):
            try:  # both updates have read the model before either writes: the race that lost a user
                both_loaded.wait()
            except threading.BrokenBarrierError:
                pass  # serialised by the lock: the other update waits outside
            time.sleep(0.2)
            return recommend(m, [user], k=3, history=[[item, 5]])

        try:
            update_run(tmp_path, apply)
        except Exception as exc:  # noqa: BLE001 -- reported below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(u,)) for u in (90_001, 90_002)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    saved, _ = load_run(tmp_path)
    assert {90_001, 90_002} <= set(saved.dataset.user_ids.tolist())


def test_a_save_waits_for_another_save_but_not_for_a_trainer(tmp_path, monkeypatch):
    ds = make_synthetic(n_users=40, n_items=30, ratings_per_user=10, seed=1)
    save_run_model(tmp_path / MODEL_FILE, BiasRecommender().fit(ds, ds.ratings), {})
    with run_lock(tmp_path, "training"), pytest.raises(RunDirBusy, match="in use by training"):
        update_run(tmp_path, lambda m: None)
    monkeypatch.setattr("ghrs.serving.SAVE_WAIT_S", 0.2)
    with run_lock(tmp_path, "recommend save"):
        t0 = time.monotonic()
        with pytest.raises(RunDirBusy, match="recommend save"):
            update_run(tmp_path, lambda m: None)
        assert time.monotonic() - t0 >= 0.2
