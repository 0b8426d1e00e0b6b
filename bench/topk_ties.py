"""How much the temporal leave-one-out test set depends on the order of same-second ratings.

ML-100K users often rate several films within one second; which of them is the "last" (test) and "second
last" (validation) item is then decided by the tie-break (``split.tie_break``), not by time. For each
tie-break (a neutral hash, the default; the item index; the file's row order, as RecBole) this script prints how
many users tie, the training popularity of the validation and test items, and the test HR@10 / NDCG@10 of
two deterministic baselines (pop, EASE with λ chosen on validation).

    GHRS_DATA_DIR=/work/shared/data python bench/topk_ties.py [--dataset ml-100k]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ghrs.data.movielens import load_movielens
from ghrs.data.splits import TIE_BREAKS, Split, TemporalLOOSplit
from ghrs.evaluation import evaluate
from ghrs.models.ease import EASERecommender
from ghrs.models.pop import PopRecommender

EASE_GRID = (10.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0)  # conf/model/ease.yaml's l2_grid


def baselines(dataset, split: Split) -> dict[str, tuple[float, float]]:
    out = {}
    for name, model in (("pop", PopRecommender()), ("EASE", EASERecommender(l2_grid=list(EASE_GRID)))):
        model.fit(dataset, split.train, split.valid)
        m = evaluate(model, dataset, split, "test", (10,), 1024, False, progress=False)
        out[name] = (m["hr@10"], m["ndcg@10"])
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--root", default=None, help="dataset.root (default: $GHRS_DATA_DIR, then the usual places)")
    args = parser.parse_args(argv)
    rows = []
    ds = load_movielens(args.dataset, root=args.root)
    for tie_break in TIE_BREAKS:
        split = TemporalLOOSplit(tie_break=tie_break)(ds)
        tied = split.test["timestamp"].to_numpy() == split.valid.set_index("user")["timestamp"].reindex(
            split.test["user"]).to_numpy()
        pop = split.train["item"].value_counts()
        med = [np.median(pop.reindex(getattr(split, part)["item"]).fillna(0).to_numpy()) for part in ("valid", "test")]
        b = baselines(ds, split)
        rows.append(f"| {tie_break} | {int(tied.sum())} of {len(split.test)} | {med[0]:.0f} | {med[1]:.0f} | "
                    f"{b['pop'][0]:.4f} | {b['pop'][1]:.4f} | {b['EASE'][0]:.4f} | {b['EASE'][1]:.4f} |")
    print(f"{args.dataset}, temporal leave-one-out\n\n| split.tie_break | users with test and validation in one "
          "second | median training popularity, validation item | ... test item | pop HR@10 | pop NDCG@10 | "
          "EASE HR@10 | EASE NDCG@10 |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
