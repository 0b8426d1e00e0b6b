"""``python -m ghrs.predict run=<run> pairs=pairs.csv out=preds.csv``: batch rating prediction."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from ghrs.arguments import input_file, output_file, required, run_file
from ghrs.data.user_input import read_history, read_pairs, read_side
from ghrs.errors import check_command_line, user_errors
from ghrs.io import write_bytes_atomic
from ghrs.paths import config_dir
from ghrs.serving import load_run, predict_pairs

CONFIG_DIR = config_dir()  # conf/ of the checkout, or the installed package data


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
@user_errors
def main(cfg: DictConfig) -> None:
    # every argument is checked before the model loads (loading takes seconds)
    run = run_file(required(cfg, "run", "run=outputs/<date>/<time>"))
    pairs = input_file(required(cfg, "pairs", "pairs=pairs.csv (columns user,item)"), "pairs")
    out = output_file(required(cfg, "out", "out=preds.csv"), "out")
    history, side = (input_file(cfg[k], k) if cfg[k] is not None else None for k in ("history", "side"))
    model, _ = load_run(run)
    ds = model.dataset  # the CSV parsers name file, line and column of any bad value
    preds = predict_pairs(model, read_pairs(pairs, cfg.sep, ds), read_history(history, cfg.sep, ds),
                          read_side(side, cfg.sep, ds), cfg.get("side_unknown", "error"))
    write_bytes_atomic(out, preds.to_csv(index=False).encode())
    print(f"wrote {len(preds)} predictions to {out}")


if __name__ == "__main__":
    check_command_line("predict")
    main()
