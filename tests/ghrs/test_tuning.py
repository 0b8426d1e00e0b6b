"""Tuning and ablation plumbing: the sweeper's objective is a validation metric, the test part stays
unevaluated during a search, and the committed search / ablation configs compose."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from ghrs.errors import UserError
from ghrs.pipeline import run_training
from ghrs.train import objective_value

ROOT = Path(__file__).resolve().parents[2]
CONF = str(ROOT / "conf")


def config(*overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("train", overrides=["dataset=synthetic", "trainer.progress=false", *overrides])


def test_objective_is_the_named_metric_and_missing_parts_are_user_errors():
    metrics = {"valid": {"rmse": 0.9, "hr@10": 0.2}, "test": {"rmse": 0.8}}
    assert objective_value(metrics, "valid.rmse") == 0.9
    assert objective_value(metrics, "valid.hr@10") == 0.2
    assert objective_value(metrics, None) is None  # plain runs return nothing to a sweeper
    with pytest.raises(UserError, match="valid_ratio"):
        objective_value({"test": {"rmse": 0.8}}, "valid.rmse")


def test_eval_parts_valid_only_never_scores_the_test_part(tmp_path):
    m = run_training(config("split=random", "split.valid_ratio=0.1", "model=bias", "+eval.parts=[valid]"),
                     tmp_path)
    assert "valid" in m and "test" not in m


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "conf" / "ablation").glob("*.yaml")))
def test_every_ablation_composes_with_all_switches_explicit(name):
    cfg = config("+experiment=ablation_rating", f"ablation={name}")
    use = cfg.model.use
    off = {k for k, v in use.items() if not v}
    expected = {"full": set(), "no_codes_clusters": {"codes", "clusters"}, "no_encoder": set()}.get(
        name, {name.removeprefix("no_")})
    assert off == expected
    assert cfg.encoder.layer == ("none" if name == "no_encoder" else "gru")
    assert cfg.split.valid_ratio == 0.1


@pytest.mark.slow
def test_optuna_search_runs_on_validation_only(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the [tune] extra is not installed")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "ghrs.train", "-m", "+hparams_search=ghrs_agreement_knn", "dataset=synthetic",
           "split=random", "split.valid_ratio=0.1",
           "model.item_side=false", "model.autoencoder.epochs=5", "model.n_clusters=3", "hydra.sweeper.n_trials=2",
           "hydra.sweeper.sampler.n_startup_trials=2", "trainer.progress=false", f"hydra.sweep.dir={tmp_path}"]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert 0 < best["best_value"] < 2 and "model.neighbours.power" in best["best_params"]
    for metrics in tmp_path.glob("*/metrics.json"):
        assert '"test"' not in metrics.read_text()


SEARCH_BASE = {"ghrs_agreement_knn": ["model=ghrs", "split.valid_ratio=0.1"],
               "hybrid_rating": ["+experiment=rating", "encoder=gru"],
               "hybrid_topk": ["+experiment=topk", "encoder=gru"],
               "lightgcn_topk": ["+experiment=topk_lightgcn"]}


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "conf" / "hparams_search").glob("*.yaml")))
def test_every_search_optimises_a_validation_metric_over_existing_keys(name):
    """Read as YAML (composing the sweeper needs the optional [tune] extra): the objective is a validation
    metric, the test part is not evaluated, and every swept key exists in the configuration it tunes."""
    from omegaconf import OmegaConf

    search = yaml.safe_load((ROOT / "conf" / "hparams_search" / f"{name}.yaml").read_text())
    assert search["objective"].startswith("valid.") and search["eval"]["parts"] == ["valid"]
    assert name in SEARCH_BASE, f"add the configuration that {name}.yaml tunes to SEARCH_BASE"
    cfg = config(*SEARCH_BASE[name])
    for key in search["hydra"]["sweeper"]["params"]:
        assert OmegaConf.select(cfg, key, default="__missing__") != "__missing__", key


@pytest.mark.parametrize("experiment", ["rating", "rating_autorec", "rating_blend"])
def test_rating_protocols_keep_only_what_paid_on_rating(experiment):
    """The rating ablation (u1 and the ML-1M half): only the neighbourhood residual paid, so the rating
    protocols run without the other GHRS parts, the LightGCN embedding and the sequence encoder."""
    cfg = config(f"+experiment={experiment}")
    assert {k for k, v in cfg.model.use.items() if v} == {"neighbourhood"}
    assert cfg.encoder.layer == "none"
    full = config(f"+experiment={experiment}", "+ablation=full", "encoder=gru")  # the README's hybrid rows
    assert all(full.model.use.values()) and full.encoder.layer == "gru"


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "conf" / "ablation").glob("*.yaml")))
@pytest.mark.parametrize("base", [[], ["+experiment=topk"], ["+experiment=rating"]], ids=["main", "topk", "rating"])
def test_every_ablation_builds_on_the_main_job_and_the_experiments(name, base):
    """`+ablation=<name>` over the main job (no encoder) and the experiments: the encoder configuration is
    valid (no_encoder used to keep S4D's options under layer none, which the encoder rejects); only the
    top-k protocol has an encoder (GRU) unless the ablation removes it."""
    from ghrs.pipeline import check_encoder

    cfg = config(*base, f"+ablation={name}")
    check_encoder(cfg)
    assert (cfg.encoder.layer == "none") == (name == "no_encoder" or "+experiment=topk" not in base)
