"""``python -m ghrs.evaluate run=<run> split=cold_user``: re-evaluate a trained run on a protocol."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ghrs.evaluation import evaluate
from ghrs.io import write_json_atomic
from ghrs.paths import config_dir
from ghrs.pipeline import results_table
from ghrs.serving import load_run

CONFIG_DIR = config_dir()  # conf/ of the checkout, or the installed package data


def reevaluate(run: str | Path, split_cfg: DictConfig, ks=(10,), batch_size: int = 1024) -> dict:
    """Evaluate the run's model on another split of the run's own dataset; refuses leaky protocols."""
    model, train_cfg = load_run(run)
    dataset = instantiate(OmegaConf.create(train_cfg)["dataset"], _convert_="all")
    split = instantiate(split_cfg)(dataset)
    trained = model.history[["user", "item"]]
    # A rating the model was fitted on may not be tested on: compare (user, item) pairs by index.
    key = lambda t: set(zip(t["user"].tolist(), t["item"].tolist()))
    overlap = key(split.test) & key(trained)
    if overlap:
        raise ValueError(
            f"{len(overlap)} test ratings of split {split.name} were in this run's training data: that "
            "evaluation would be a leak; train a run with this split instead (python -m ghrs.train split=...)")
    metrics = evaluate(model, dataset, split, "test", tuple(ks), batch_size, rating_metrics=model.predicts_ratings)
    return {"test": metrics, "split": split.name}


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    metrics = reevaluate(cfg.run, cfg.split, tuple(cfg.eval.ks), int(cfg.eval.batch_size))
    run = Path(cfg.run) if Path(cfg.run).is_dir() else Path(cfg.run).parent
    out = Path(cfg.out) if cfg.out else run / f"metrics_{metrics['split'].split(':')[0]}.json"
    write_json_atomic(out, metrics)
    print(f"{metrics['split']}\n{results_table({'test': metrics['test']})}\nwritten to {out}")


if __name__ == "__main__":
    main()
