"""``python -m ghrs.predict run=<run> pairs=pairs.csv out=preds.csv``: batch rating prediction."""

from __future__ import annotations

from pathlib import Path

import hydra
import pandas as pd
from omegaconf import DictConfig

from ghrs.io import write_bytes_atomic
from ghrs.serving import load_run, predict_pairs

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def _read(path: str | None, sep: str) -> pd.DataFrame | None:
    return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""]) if path else None


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
def main(cfg: DictConfig) -> None:
    model, _ = load_run(cfg.run)
    preds = predict_pairs(model, _read(cfg.pairs, cfg.sep), _read(cfg.history, cfg.sep), _read(cfg.side, cfg.sep))
    write_bytes_atomic(Path(cfg.out), preds.to_csv(index=False).encode())
    print(f"wrote {len(preds)} predictions to {cfg.out}")


if __name__ == "__main__":
    main()
