"""The top-k baselines and experiments are one config away and run through the pipeline."""

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from ghrs.pipeline import run_training

CONF = str(Path(__file__).resolve().parents[2] / "conf")
SMALL = ["dataset=synthetic", "dataset.n_users=80", "dataset.n_items=60", "trainer.progress=false"]


def config(*overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("train", overrides=[*SMALL, *overrides])


@pytest.mark.parametrize("model", ["pop", "itemknn", "ease", "genrepop"])
def test_ranking_baselines_run_on_the_global_time_split(tmp_path, model):
    m = run_training(config(f"model={model}", "split=temporal_global", "split.test_quantile=0.7",
                            "split.valid_quantile=0.6"), tmp_path)
    assert 0 <= m["test"]["hr@10"] <= 1 and "rmse" not in m["test"]
    assert json.loads((tmp_path / "metrics.json").read_text())["split"].startswith("temporal_global")


def test_sasrec_baseline_is_the_hybrid_without_ghrs_and_graph(tmp_path):
    cfg = config("+experiment=topk", "model=sasrec", "trainer.max_epochs=1", "model.dim=16",
                 "model.encoder.d_model=16", "model.train_regime=all_prefixes", "trainer.batch_size=16")
    assert cfg.model.encoder.layer == "sasrec" and not cfg.model.use_ghrs_features
    m = run_training(cfg, tmp_path)
    assert 0 <= m["test"]["hr@10"] <= 1


def test_cold_item_experiment_reports_both_protocols(tmp_path):
    m = run_training(config("+experiment=cold_item", "encoder=gru", "encoder.d_model=16", "model.dim=16",
                            "trainer.max_epochs=1"), tmp_path)
    assert {"hr@10", "cold:hr@10", "cold:ndcg@10"} <= set(m["test"])


SHARED = ("model.dim", "model.dropout", "model.max_len", "model.train_regime", "encoder.d_model",
          "encoder.n_layers", "encoder.dropout", "trainer.lr", "trainer.batch_size", "trainer.max_epochs",
          "trainer.patience")


def shared_settings(cfg):
    """The settings the README says are equal across encoders on the top-k protocol."""
    encoder = cfg.model.encoder if cfg.model.get("use_ghrs_features") is False else cfg.encoder
    out = {}
    for key in SHARED:
        group, name = key.split(".")
        out[key] = (encoder if group == "encoder" else cfg[group])[name]
    return out


def test_topk_settings_are_equal_across_encoders_and_the_sasrec_baseline():
    reference = shared_settings(config("+experiment=topk", "encoder=gru"))
    for overrides in (["encoder=s4d"], ["encoder=mamba"], ["encoder=mamba2"], ["encoder=sasrec"], ["model=sasrec"]):
        assert shared_settings(config("+experiment=topk", *overrides)) == reference, overrides
    # encoder=none has no layers; it still receives the same dropout (unused)
    assert config("+experiment=topk", "encoder=none").encoder.dropout == reference["encoder.dropout"]


def test_topk_keeps_only_the_components_that_paid_in_the_ablation(tmp_path):
    """+experiment=topk switches off what did not pay on top-k (graph features, codes, clusters, LightGCN
    embedding, then side information) and keeps the encoder; +ablation=full turns everything back on."""
    cfg = config("+experiment=topk", "encoder=gru")
    off = {k for k, v in cfg.model.use.items() if not v}
    assert off == {"graph_features", "codes", "clusters", "graph_embedding", "side"}
    assert cfg.encoder.layer == "gru"
    assert all(config("+experiment=topk", "+ablation=full").model.use.values())
    assert all(config("+experiment=ablation_topk").model.use.values())  # the ablation's reference is all-on
    cfg = config("+experiment=topk", "encoder=gru", "trainer.max_epochs=1", "model.dim=16", "encoder.d_model=16",
                 "trainer.batch_size=16")
    m = run_training(cfg, tmp_path)
    assert 0 <= m["test"]["hr@10"] <= 1
