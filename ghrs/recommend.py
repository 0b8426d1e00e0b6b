"""``python -m ghrs.recommend run=<run> users=[1,42] k=10``: top-k per user (Hydra entry point)."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from ghrs.io import torch_save_atomic
from ghrs.paths import config_dir
from ghrs.serving import MODEL_FILE, load_run, recommend

CONFIG_DIR = config_dir()  # conf/ of the checkout, or the installed package data


def render(table, fmt: str) -> str:
    if fmt == "json":
        return table.to_json(orient="records", indent=1)
    if fmt == "csv":
        return table.to_csv(index=False)
    if fmt == "table":
        return table.to_string(index=False, float_format=lambda x: f"{x:.4f}")
    raise ValueError(f"format must be table|json|csv, got {fmt!r}")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="recommend")
def main(cfg: DictConfig) -> None:
    model, train_cfg = load_run(cfg.run)
    users = OmegaConf.to_container(cfg.users) if OmegaConf.is_list(cfg.users) else [cfg.users]
    history = OmegaConf.to_container(cfg.history) if cfg.history is not None else None
    side = OmegaConf.to_container(cfg.side) if cfg.side is not None else None
    table = recommend(model, users, int(cfg.k), history, side, cfg.get("side_unknown", "error"))
    print(render(table, cfg.format))
    if cfg.save:
        path = Path(cfg.run) / MODEL_FILE if Path(cfg.run).is_dir() else Path(cfg.run)
        torch_save_atomic(path, {"model": model, "config": train_cfg, "dataset_name": model.dataset.name})


if __name__ == "__main__":
    main()
