"""``python -m ghrs.predict run=<run> pairs=pairs.csv out=preds.csv``: batch rating prediction."""

from __future__ import annotations

from pathlib import Path

import hydra
import pandas as pd
from omegaconf import DictConfig

from ghrs.arguments import input_file, output_file, required, run_file
from ghrs.errors import check_command_line, user_errors
from ghrs.io import write_bytes_atomic
from ghrs.serving import load_run, predict_pairs

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def _read(path: str | Path | None, sep: str) -> pd.DataFrame | None:
    return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""]) if path else None


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
@user_errors
def main(cfg: DictConfig) -> None:
    # every argument is checked before the model loads (loading takes seconds)
    run = run_file(required(cfg, "run", "run=outputs/<date>/<time>"))
    pairs = input_file(required(cfg, "pairs", "pairs=pairs.csv (columns user,item)"), "pairs")
    out = output_file(required(cfg, "out", "out=preds.csv"), "out")
    history, side = (input_file(cfg[k], k) if cfg[k] is not None else None for k in ("history", "side"))
    model, _ = load_run(run)
    preds = predict_pairs(model, _read(pairs, cfg.sep), _read(history, cfg.sep), _read(side, cfg.sep))
    write_bytes_atomic(out, preds.to_csv(index=False).encode())
    print(f"wrote {len(preds)} predictions to {out}")


if __name__ == "__main__":
    check_command_line()
    main()
