import json
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from ghrs.pipeline import run_training
from ghrs.serving import load_run

CONF = str(Path(__file__).resolve().parents[2] / "conf")


def config(*overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("train", overrides=["dataset=synthetic", "trainer.progress=false", *overrides])


def test_end_to_end_bias_on_synthetic(tmp_path, capsys):
    metrics = run_training(config("split=random", "model=bias"), tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["test"]["rmse"] == pytest.approx(metrics["test"]["rmse"])
    for key in ("rmse", "mae", "hr@10", "ndcg@10", "precision@10", "recall@10", "mrr@10"):
        assert 0 <= saved["test"][key] < 5
    assert set(saved["timings"]) >= {"load", "split", "fit", "evaluate"}
    assert (tmp_path / "config.yaml").exists()
    model, _ = load_run(tmp_path)
    assert np.isfinite(model.predict(np.array([0, 1]), np.array([0, 1]))).all()
    assert "rmse" in capsys.readouterr().out
    # planted structure: the bias model beats predicting the global mean
    assert len(model.dataset.ratings) == 0  # the artefact keeps the training interactions only
    assert saved["test"]["rmse"] < model.history["rating"].std()


def test_mf_with_validation_and_cold_users(tmp_path):
    m = run_training(config("split=cold_user", "split.reveal=3", "split.valid_ratio=0.1", "model=mf",
                            "trainer.max_epochs=3"), tmp_path)
    assert "valid" in m and np.isfinite(m["test"]["rmse"])
    assert (tmp_path / "last.ckpt").exists()


def test_bad_config_value_is_a_clear_error(tmp_path):
    with pytest.raises(Exception, match="split.holdout_ratio must be in"):
        run_training(config("split=cold_user", "split.holdout_ratio=2"), tmp_path)
