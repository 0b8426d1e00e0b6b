"""What the authors' self-loop on every graph node changes: GHRS graph features and RMSE.

The authors' feature script (github.com/hadoov/GHRS, ``Features100K.py``) adds an edge (u, u) for both
ends of every graph edge before computing PageRank, degree centrality and average neighbour degree.
This script builds the user graph of one training fold, computes the six features with and without the
self-loops, reports how each feature moves (Pearson / Spearman correlation, mean relative change over
the graph's nodes), then fits ``model=ghrs`` both ways with both predictors and scores the test fold.

    GHRS_DATA_DIR=/work/shared/data python bench/ghrs_self_loops.py [--fold u1] [--alpha 0.01]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from scipy.stats import pearsonr, spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ghrs.data.movielens import load_movielens
from ghrs.data.splits import OfficialSplit
from ghrs.graph.graph_features import FEATURES, CentralityConfig, compute_graph_features
from ghrs.graph.similarity_graph import user_similarity_graph
from ghrs.metrics import rmse
from ghrs.models.ghrs import GHRSRecommender


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("GHRS_DATA_DIR"))
    ap.add_argument("--fold", default="u1")
    ap.add_argument("--alpha", type=float, default=0.01)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    ds = load_movielens("ml-100k", root=args.data, download=False)
    split = OfficialSplit(args.fold)(ds)
    train, test = split.train, split.test
    graph = user_similarity_graph(train, ds.n_users, ds.n_items, args.alpha)
    feats = {loops: compute_graph_features(graph.adjacency, CentralityConfig(self_loops=loops, dtype="float64"))
             for loops in (False, True)}
    nodes = feats[True].in_graph
    out: dict = {"fold": args.fold, "alpha": args.alpha, "graph_nodes": int(nodes.sum()), "features": {}}
    for j, name in enumerate(FEATURES):
        a, b = feats[False].values[nodes, j], feats[True].values[nodes, j]
        out["features"][name] = {
            "pearson": round(float(pearsonr(a, b)[0]), 4), "spearman": round(float(spearmanr(a, b)[0]), 4),
            "mean_rel_change": round(float(np.mean(np.abs(b - a) / np.maximum(np.abs(a), 1e-12))), 4),
        }
    out["test_rmse"] = {}
    for predictor in ("agreement_knn", "paper"):
        for loops in (False, True):
            scores = []
            for seed in args.seeds:  # the autoencoder and k-means depend on the seed
                m = GHRSRecommender(predictor=predictor, centrality={"self_loops": loops}, item_side=False,
                                    seed=seed).fit(ds, train)
                m.set_history(train)
                scores.append(rmse(m.predict(test["user"].to_numpy(), test["item"].to_numpy()),
                                   test["rating"].to_numpy()))
            out["test_rmse"][f"{predictor}, self_loops={loops}"] = {
                "mean": round(float(np.mean(scores)), 4), "std": round(float(np.std(scores, ddof=1)), 4),
                "runs": [round(s, 4) for s in scores]}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
