"""``python -m ghrs.evaluate run=<run> split=cold_user``: re-evaluate a trained run on a protocol.

A protocol whose test ratings the run was trained on is refused (a leak), with the command that trains a
run for that protocol. Each protocol's metrics go to their own file, ``metrics_<protocol>.json``.
"""

from __future__ import annotations

import re
from pathlib import Path

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ghrs.arguments import output_file, required, run_file
from ghrs.errors import ConfigError, check_command_line, user_errors
from ghrs.evaluation import evaluate
from ghrs.io import write_json_atomic
from ghrs.paths import config_dir
from ghrs.pipeline import build_split, results_table
from ghrs.serving import load_run

CONFIG_DIR = config_dir()  # conf/ of the checkout, or the installed package data


def train_command(run_dir: Path, split_overrides: list[str]) -> str:
    """The ``python -m ghrs.train`` command that trains the run's model for the protocol ``split_overrides``."""
    file = run_dir / ".hydra" / "overrides.yaml"
    run_overrides = yaml.safe_load(file.read_text()) if file.is_file() else []
    keep = [o for o in run_overrides or [] if not re.match(r"^[+~]*(split|hydra)\b", o)]
    return " ".join(["python -m ghrs.train", *keep, *split_overrides])


def reevaluate(run: str | Path, split_cfg: DictConfig, ks=(10,), batch_size: int = 1024,
               split_overrides: list[str] | None = None) -> dict:
    """Evaluate the run's model on another split of the run's own dataset; refuses leaky protocols."""
    file = run_file(run)
    model, train_cfg = load_run(file)
    dataset = instantiate(OmegaConf.create(train_cfg)["dataset"], _convert_="all")
    split = build_split(split_cfg, dataset)
    trained = model.history[["user", "item"]]
    # A rating the model was fitted on may not be tested on: compare (user, item) pairs by index.
    key = lambda t: set(zip(t["user"].tolist(), t["item"].tolist()))
    overlap = key(split.test) & key(trained)
    if overlap:
        command = train_command(file.parent, split_overrides or [f"split={split.name.split(':')[0]}"])
        raise ConfigError(
            f"this run was trained on {len(overlap):,} of the test ratings of {split.name}, so evaluating it there "
            f"would leak; train a run for that protocol (it reports the protocol's test metrics itself): {command}")
    metrics = evaluate(model, dataset, split, "test", tuple(ks), batch_size, rating_metrics=model.predicts_ratings)
    return {"test": metrics, "split": split.name}


def metrics_path(run: str | Path, split_name: str) -> Path:
    """``<run dir>/metrics_<protocol>.json``, e.g. ``metrics_cold_user_0.1_k3.json`` (protocol and reveal)."""
    run_dir = Path(run) if Path(run).is_dir() else Path(run).parent
    return run_dir / f"metrics_{re.sub(r'[^A-Za-z0-9_.-]+', '_', split_name)}.json"


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate")
@user_errors
def main(cfg: DictConfig) -> None:
    run = required(cfg, "run", "run=outputs/<date>/<time>")
    file = run_file(run)  # checked before the model loads
    out = output_file(cfg.out, "out") if cfg.out else None
    if cfg.seed is None:  # the run's own seed: the same held-out users / items as the run's split
        cfg.seed = int(yaml.safe_load((file.parent / "config.yaml").read_text()).get("seed", 0)) \
            if (file.parent / "config.yaml").is_file() else 0
    split_overrides = [o for o in HydraConfig.get().overrides.task if re.match(r"^[+~]*(split|seed)\b", o)]
    metrics = reevaluate(file, cfg.split, tuple(cfg.eval.ks), int(cfg.eval.batch_size), split_overrides)
    out = out or metrics_path(run, metrics["split"])
    write_json_atomic(out, metrics)
    print(f"{metrics['split']}\n{results_table({'test': metrics['test']})}\nwritten to {out}")


if __name__ == "__main__":
    check_command_line("evaluate")
    main()
