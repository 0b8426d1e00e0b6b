"""How much the temporal leave-one-out test set depends on the order of same-second ratings.

ML-100K users often rate several films within one second; which of them is the "last" (test) and "second
last" (validation) item is then decided by the tie-break, not by time. ``TemporalLOOSplit`` (and the
dataset's canonical order) break ties by item index. This script prints how many users tie, the training
popularity of the validation and test items, and the test HR@10 / NDCG@10 of two deterministic baselines
(pop, EASE with λ chosen on validation) under other tie-breaks: reversed item index and random orders.

    GHRS_DATA_DIR=/work/shared/data python bench/topk_ties.py [--dataset ml-100k] [--random 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ghrs.data.movielens import load_movielens
from ghrs.data.splits import Split, TemporalLOOSplit, _empty
from ghrs.evaluation import evaluate
from ghrs.models.ease import EASERecommender
from ghrs.models.pop import PopRecommender

EASE_GRID = (10.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0)  # conf/model/ease.yaml's l2_grid


def loo_split(ratings, tie_key: np.ndarray) -> Split:
    """Temporal leave-one-out with timestamp ties broken by ``tie_key`` (larger = later)."""
    u, t = ratings["user"].to_numpy(), ratings["timestamp"].to_numpy()
    order = np.lexsort((tie_key, t, u))
    pos = np.empty(len(ratings), np.int64)
    pos[order] = ratings.iloc[order].groupby("user").cumcount(ascending=False).to_numpy()
    n_user = ratings.groupby("user")["item"].transform("size").to_numpy()
    test, valid = (n_user >= 3) & (pos == 0), (n_user >= 3) & (pos == 1)
    return Split("temporal_loo", ratings[~(test | valid)], ratings[valid], ratings[test], _empty(ratings), None)


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
    parser.add_argument("--random", type=int, default=3, help="number of random tie orders (seeds 0..N-1)")
    args = parser.parse_args(argv)
    ds = load_movielens(args.dataset)
    r = ds.ratings
    current = TemporalLOOSplit()(ds)
    tied = current.test["timestamp"].to_numpy() == current.valid.set_index("user")["timestamp"].reindex(
        current.test["user"]).to_numpy()
    pop = current.train["item"].value_counts()
    print(f"{args.dataset}: {len(current.test)} test users, {int(tied.sum())} ({tied.mean():.0%}) with the test "
          "and validation items in the same second")
    for part in ("valid", "test"):
        p = pop.reindex(getattr(current, part)["item"]).fillna(0).to_numpy()
        print(f"  {part} items: median training popularity {np.median(p):.0f}, mean {p.mean():.1f}")
    item = r["item"].to_numpy()
    keys = {"item index (current)": item, "reversed item index": -item}
    keys.update({f"random order, seed {s}": np.random.default_rng(s).permutation(len(r)) for s in range(args.random)})
    print("\n| tie-break | pop HR@10 | pop NDCG@10 | EASE HR@10 | EASE NDCG@10 |\n|---|---:|---:|---:|---:|")
    for name, key in keys.items():
        b = baselines(ds, loo_split(r, key))
        print(f"| {name} | {b['pop'][0]:.4f} | {b['pop'][1]:.4f} | {b['EASE'][0]:.4f} | {b['EASE'][1]:.4f} |")


if __name__ == "__main__":
    main()
