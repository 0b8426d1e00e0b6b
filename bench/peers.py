"""Peer baselines from Surprise (Hug 2020) on exactly the splits the README's rating table uses.

Each model is trained on the training part our pipeline produces (same rows, same ids) and scored on
its test part, so the RMSEs sit beside ours without any protocol difference. Surprise is a bench-only
dependency: ``pip install -e '.[peers]'`` (scikit-surprise, a C extension).

    GHRS_DATA_DIR=/work/shared/data python bench/peers.py                       # ML-100K u1
    GHRS_DATA_DIR=/work/shared/data python bench/peers.py --splits u1 u2 u3 u4 u5 ml-1m
    python bench/peers.py --models svd svdpp baseline knn_baseline --seeds 0 1 2

Split names: ``u1``..``u5`` (ML-100K official folds), ``ml-1m`` (ML-1M users 1-2,999 as stored under
``GHRS_DATA_DIR``, random 90/10 with ``split.seed`` 0, as ``python -m ghrs.train dataset.name=ml-1m
split=random``). Prints a markdown table (mean ± std over seeds for the stochastic models) and writes
the raw runs as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ghrs.data.movielens import load_movielens
from ghrs.data.splits import OfficialSplit, RandomSplit
from ghrs.metrics import mae, rmse

# Surprise defaults except where noted; knn_baseline = item-based, pearson_baseline similarity (the
# strongest neighbourhood model in Surprise's own ML-100K/1M benchmark table).
MODELS = {
    "svd": ("SVD", {}, True),
    "svdpp": ("SVDpp", {}, True),
    "baseline": ("BaselineOnly", {}, False),
    "knn_baseline": ("KNNBaseline", {"sim_options": {"name": "pearson_baseline", "user_based": False},
                                     "verbose": False}, False),
}


def load_split(name: str, data: str | None):
    if name.startswith("u") and name[1:].isdigit():
        ds = load_movielens("ml-100k", root=data, download=False)
        return ds, OfficialSplit(name)(ds)
    if name == "ml-1m":
        ds = load_movielens("ml-1m", root=data, download=False)
        return ds, RandomSplit(0.1, seed=0)(ds)
    raise SystemExit(f"unknown split {name!r}: u1..u5 or ml-1m")


def fit_predict(model: str, train: pd.DataFrame, test: pd.DataFrame, scale: tuple[float, float], seed: int):
    import surprise

    cls_name, kwargs, _ = MODELS[model]
    reader = surprise.Reader(rating_scale=scale)
    data = surprise.Dataset.load_from_df(train[["user", "item", "rating"]], reader)
    trainset = data.build_full_trainset()
    cls = getattr(surprise, cls_name)
    algo = cls(random_state=seed, **kwargs) if MODELS[model][2] else cls(**kwargs)
    algo.fit(trainset)
    return np.array([algo.predict(u, i).est for u, i in zip(test["user"].to_numpy(), test["item"].to_numpy())])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("GHRS_DATA_DIR"))
    ap.add_argument("--splits", nargs="+", default=["u1"])
    ap.add_argument("--models", nargs="+", default=["svd", "baseline", "knn_baseline"], choices=sorted(MODELS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--out", default=None, help="JSON file for the raw runs")
    args = ap.parse_args()
    try:
        import surprise  # noqa: F401
    except ImportError:
        raise SystemExit("bench/peers.py needs Surprise: pip install -e '.[peers]'") from None
    runs = []
    for split_name in args.splits:
        ds, split = load_split(split_name, args.data)
        y = split.test["rating"].to_numpy(np.float64)
        for model in args.models:
            for seed in args.seeds if MODELS[model][2] else args.seeds[:1]:
                t0 = time.perf_counter()
                p = fit_predict(model, split.train, split.test, tuple(ds.rating_scale), seed)
                runs.append({"split": split_name, "model": model, "seed": seed, "rmse": rmse(p, y), "mae": mae(p, y),
                             "seconds": round(time.perf_counter() - t0, 2)})
                print(json.dumps(runs[-1]), flush=True)
    table = pd.DataFrame(runs)
    if args.out:
        Path(args.out).write_text(json.dumps(runs, indent=2))
    rows = ["| split | model | RMSE | MAE | seeds |", "|---|---|---:|---:|---:|"]
    for (split_name, model), g in table.groupby(["split", "model"], sort=False):
        cells = [f"{g[c].mean():.4f}" + (f" ± {g[c].std(ddof=1):.4f}" if len(g) > 1 else "") for c in ("rmse", "mae")]
        rows.append(f"| {split_name} | {model} | {cells[0]} | {cells[1]} | {len(g)} |")
    if len(args.splits) > 1 and {"u1", "u2", "u3", "u4", "u5"} <= set(args.splits):
        folds = table[table["split"].isin(["u1", "u2", "u3", "u4", "u5"])]
        for model, g in folds.groupby("model", sort=False):
            per_fold = g.groupby("split")["rmse"].mean()
            rows.append(f"| u1..u5 mean ± std over folds | {model} | {per_fold.mean():.4f} ± "
                        f"{per_fold.std(ddof=1):.4f} | | |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
