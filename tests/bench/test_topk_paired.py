"""bench/topk_paired.py: per-user re-scoring of saved runs reproduces the pipeline's test metrics, and the
paired table compares groups of runs."""

import json

import pytest
from hydra import compose, initialize_config_dir

from ghrs.pipeline import run_training
from tests.bench import ROOT, load_bench

SMALL = ["dataset=synthetic", "dataset.n_users=80", "dataset.n_items=60", "trainer.progress=false",
         "split=temporal_loo", "dataset.seed=0"]



def train(run_dir, *overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*SMALL, *overrides])
    run_training(cfg, run_dir)
    return json.loads((run_dir / "metrics.json").read_text())["test"]


def test_paired_table_matches_the_runs_metrics(tmp_path, capsys):
    bench = load_bench("topk_paired")
    pop = train(tmp_path / "pop", "model=pop")
    knn = {s: train(tmp_path / "knn" / str(s), "model=itemknn", f"seed={s}") for s in (0, 1)}
    _, users, per_user = bench.per_user(tmp_path / "pop")
    assert len(users) == 80 and per_user["hr@10"].mean() == pytest.approx(pop["hr@10"], abs=1e-6)
    assert per_user["ndcg@10"].mean() == pytest.approx(pop["ndcg@10"], abs=1e-6)
    assert bench.run_dirs(tmp_path / "knn") == [tmp_path / "knn" / "0", tmp_path / "knn" / "1"]

    bench.main([str(tmp_path / "knn"), str(tmp_path / "pop")])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"| {tmp_path / 'pop'}")]
    assert [r.split("|")[2].strip() for r in rows] == ["hr@10", "ndcg@10"]
    diff = float(rows[0].split("|")[5])
    expected = sum(m["hr@10"] for m in knn.values()) / 2 - pop["hr@10"]
    assert diff == pytest.approx(expected, abs=1e-4)


def test_groups_on_different_splits_are_refused(tmp_path):
    bench = load_bench("topk_paired")
    train(tmp_path / "a", "model=pop")
    train(tmp_path / "b", "model=pop", "dataset.seed=1")  # other data: other test pairs
    with pytest.raises(SystemExit, match="differs"):
        bench.main([str(tmp_path / "a"), str(tmp_path / "b")])
