"""``python -m ghrs.recommend run=<run> users=[1,42] k=10``: top-k per user (Hydra entry point)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from ghrs.arguments import choice, id_list, plain, required, run_file
from ghrs.errors import check_command_line, user_errors
from ghrs.paths import config_dir
from ghrs.serving import check_request, load_run, recommend, update_run

FORMATS = ("table", "json", "csv")

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
@user_errors
def main(cfg: DictConfig) -> None:
    # every argument is checked before the model loads (loading takes seconds)
    run = run_file(required(cfg, "run", "run=outputs/<date>/<time>"))
    users = id_list(required(cfg, "users", "users=[1,42]"), "users")
    history, side, fmt = plain(cfg.history), plain(cfg.side), choice(cfg.format, "format", FORMATS)
    check_request(users, cfg.k, history, side)
    model, _ = load_run(run)
    table = recommend(model, users, int(cfg.k), history, side, cfg.get("side_unknown", "error"))
    print(render(table, fmt))
    if cfg.save:
        # Re-applied to the newest saved model under the run dir's lock: concurrent saves all keep theirs.
        update_run(cfg.run, lambda latest: recommend(latest, users, int(cfg.k), history, side))


if __name__ == "__main__":
    check_command_line("recommend")
    main()
