"""``python -m ghrs.train [overrides]``: fit a recommender and evaluate it (Hydra entry point)."""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from ghrs.errors import check_command_line, user_errors
from ghrs.paths import config_dir
from ghrs.pipeline import run_training

CONFIG_DIR = config_dir()  # conf/ of the checkout, or the installed package data


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
@user_errors
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    metrics = run_training(cfg, hydra_cfg.runtime.output_dir, list(hydra_cfg.overrides.task))
    return metrics.get("test", {}).get("rmse")  # the value a Hydra sweeper would minimise


if __name__ == "__main__":
    check_command_line("train")
    main()
