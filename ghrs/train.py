"""``python -m ghrs.train [overrides]``: fit a recommender and evaluate it (Hydra entry point)."""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from ghrs.errors import UserError, check_command_line, user_errors
from ghrs.paths import config_dir
from ghrs.pipeline import run_training

CONFIG_DIR = config_dir()  # conf/ of the checkout, or the installed package data


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
@user_errors
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    metrics = run_training(cfg, hydra_cfg.runtime.output_dir, list(hydra_cfg.overrides.task))
    return objective_value(metrics, cfg.get("objective"))


def objective_value(metrics: dict, objective: str | None) -> float | None:
    """The value a Hydra sweeper optimises: ``objective`` = ``<part>.<metric>`` (``conf/hparams_search``
    sets ``valid.rmse`` or ``valid.hr@10``; tuning never reads the test part). None: no objective."""
    if not objective:
        return None
    part, _, name = str(objective).partition(".")
    value = metrics.get(part, {}).get(name)
    if value is None:
        raise UserError(f"objective={objective!r} was not measured (measured: "
                        f"{ {p: sorted(m) for p, m in metrics.items() if p in ('valid', 'test')} }); "
                        "tuning needs a validation part: split.valid_ratio > 0")
    return float(value)


if __name__ == "__main__":
    check_command_line("train")
    main()
