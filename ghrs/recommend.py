"""``python -m ghrs.recommend run=<run> users=[1,42] k=10``: top-k per user (Hydra entry point)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from ghrs.paths import config_dir
from ghrs.serving import load_run, recommend, update_run

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
    model, _ = load_run(cfg.run)
    users = OmegaConf.to_container(cfg.users) if OmegaConf.is_list(cfg.users) else [cfg.users]
    history = OmegaConf.to_container(cfg.history) if cfg.history is not None else None
    side = OmegaConf.to_container(cfg.side) if cfg.side is not None else None
    table = recommend(model, users, int(cfg.k), history, side, cfg.get("side_unknown", "error"))
    print(render(table, cfg.format))
    if cfg.save:
        # Re-applied to the newest saved model under the run dir's lock: concurrent saves all keep theirs.
        update_run(cfg.run, lambda latest: recommend(latest, users, int(cfg.k), history, side))


if __name__ == "__main__":
    main()
