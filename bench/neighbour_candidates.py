"""Accuracy and cost of GHRS's ``neighbours.candidates`` (neighbour pool of the most active users/items).

Fits the default GHRS model (conf/model/ghrs.yaml) once per pool size on ML-100K u1 and on the ML-1M
copy under ``--data`` (random 90/10, seed 0) and prints test RMSE, fit time and predictor-fit time::

    python bench/neighbour_candidates.py --data ../shared/data --candidates 0 2000 1000 500
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_ghrs import default_params

from ghrs.data.movielens import load_movielens
from ghrs.data.splits import OfficialSplit, RandomSplit
from ghrs.metrics import rmse
from ghrs.models.ghrs import GHRSRecommender


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("GHRS_DATA_DIR"))
    p.add_argument("--candidates", type=int, nargs="+", default=[0, 2000, 1000, 500], help="0 = exact")
    args = p.parse_args()
    print("| data | candidates | test RMSE | GHRS fit s | predictor fit s |\n|---|---:|---:|---:|---:|")
    for name, split in [("ml-100k", OfficialSplit("u1")), ("ml-1m", RandomSplit(0.1, seed=0))]:
        # a data directory: the loader also finds a partial copy such as ml-1m-users-1-2999.zip
        ds = load_movielens(name, root=args.data, download=args.data is None)
        s = split(ds)
        for c in args.candidates:
            params = default_params(0)
            params["neighbours"]["candidates"] = c or None
            t0 = time.perf_counter()
            model = GHRSRecommender(**params).fit(ds, s.train)
            fit_s = time.perf_counter() - t0
            pred = model.predict(s.test["user"].to_numpy(), s.test["item"].to_numpy())
            print(f"| {ds.name} | {c or 'all (exact)'} | {rmse(s.test['rating'].to_numpy(), pred):.4f} | "
                  f"{fit_s:.1f} | {model.seconds['predictor_fit']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
