"""``python -m ghrs.predict run=<run> pairs=pairs.csv out=preds.csv``: batch rating prediction."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from ghrs.data.user_input import read_history, read_pairs, read_side
from ghrs.io import write_bytes_atomic
from ghrs.paths import config_dir
from ghrs.serving import load_run, predict_pairs

CONFIG_DIR = config_dir()  # conf/ of the checkout, or the installed package data


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
def main(cfg: DictConfig) -> None:
    model, _ = load_run(cfg.run)
    ds = model.dataset  # the CSV parsers name file, line and column of any bad value
    preds = predict_pairs(model, read_pairs(cfg.pairs, cfg.sep, ds), read_history(cfg.history, cfg.sep, ds),
                          read_side(cfg.side, cfg.sep, ds), cfg.get("side_unknown", "error"))
    write_bytes_atomic(Path(cfg.out), preds.to_csv(index=False).encode())
    print(f"wrote {len(preds)} predictions to {cfg.out}")


if __name__ == "__main__":
    main()
