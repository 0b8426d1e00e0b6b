"""Measured cost curve of the whole pipeline: wall time and peak memory of every stage against the number
of ratings, with the fitted growth exponent a of each stage (time ~ ratings^a).

Stages: load (read / generate), split (random 90/10), the GHRS stages (user graph, graph features,
autoencoder, clustering, item graph, item graph features, item autoencoder, predictor fit), one epoch of
the hybrid's sequence encoder (``--encoder``; sampled softmax with ``--negatives`` negatives and LightGCN
propagation over a neighbour-sampled subgraph, ``--fanout`` neighbours per node and hop, so that the epoch
is linear in the users; setup and encoding of all histories reported beside it), and evaluation (RMSE on
the test ratings + full ranking of every test user over all items, in batches of 1,024 users).
GHRS runs with ``graph_max_degree`` = ``--max-degree`` and ``neighbours.candidates`` = ``--candidates`` (the
bounded-cost settings for large sets; ``0`` restores the exact ones). Peak memory of a stage = the largest resident set size sampled while it ran (``ghrs.resources``).

Sets: ``ml-100k``, ``ml-1m-subset`` (real data from ``--data`` / $GHRS_DATA_DIR) and synthetic sets
``synthetic-<users>`` with MovieLens-like shape: log-normal user activity (sigma 1, mean 100 ratings),
Zipf item popularity, n_items = n_users / 6 (ML-10M: 70k users, 10.7k items). The exponent is fitted on
the synthetic sets only (one distribution, growing size); the real sets are reported beside them.

Examples::

    python bench/scaling.py --sets ml-100k ml-1m-subset synthetic-3000 synthetic-10000 synthetic-30000
    python bench/scaling.py --sets synthetic-100000 --out bench/results/scaling   # the 10M-rating set
    python bench/scaling.py --fit-only bench/results/scaling                       # refit / retable
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ghrs.data.splits import RandomSplit
from ghrs.evaluation import evaluate
from ghrs.models.ghrs import GHRSRecommender
from ghrs.models.hybrid import HybridRecommender
from ghrs.resources import PeakMemory
from ghrs.training import TrainerConfig
from ssm.encoders import SequenceEncoder

sys.path.insert(0, str(ROOT / "bench"))
from bench_ghrs import default_params  # conf/model/ghrs.yaml as keyword arguments

log = logging.getLogger("scaling")


def load(name: str, data: str | None, seed: int):
    if name.startswith("synthetic-"):
        from ghrs.data.synthetic import make_synthetic

        n_users = int(name.split("-")[1])
        return make_synthetic(n_users=n_users, n_items=max(500, n_users // 6), n_groups=8, ratings_per_user=100,
                              activity_sigma=1.0, seed=seed)
    from ghrs.data.movielens import load_movielens

    root = data or os.environ.get("GHRS_DATA_DIR")
    if name == "ml-100k":
        return load_movielens("ml-100k", root=root, download=False)
    if name == "ml-1m-subset":  # the loader finds ml-1m-users-1-2999.zip in a data directory
        return load_movielens("ml-1m", root=root, download=False)
    raise SystemExit(f"unknown set {name!r}")


class StageMemory:
    """GHRS stage listener: a PeakMemory per stage."""

    def __init__(self) -> None:
        self.running: dict[str, PeakMemory] = {}
        self.peak: dict[str, float] = {}

    def __call__(self, stage: str, event: str) -> None:
        if event == "start":
            self.running[stage] = PeakMemory().start()
        else:
            self.peak[stage] = max(self.peak.get(stage, 0.0), self.running.pop(stage).stop().peak_mb)


def run_set(name: str, args) -> dict:
    rows: list[dict] = []

    def record(stage: str, seconds: float, peak_mb: float) -> None:
        rows.append({"stage": stage, "seconds": round(seconds, 3), "peak_mb": round(peak_mb, 1)})
        log.info("%s | %-22s %9.2f s %9.0f MiB", name, stage, seconds, peak_mb)

    def timed(stage: str, fn):
        t0 = time.perf_counter()
        with PeakMemory() as mem:
            out = fn()
        record(stage, time.perf_counter() - t0, mem.peak_mb)
        return out

    ds = timed("load", lambda: load(name, args.data, args.seed))
    log.info("%s", ds.summary())
    split = timed("split", lambda: RandomSplit(0.1, seed=args.seed)(ds))
    stage_mem = StageMemory()
    ghrs = GHRSRecommender(**{**default_params(args.seed), "alpha": args.alpha, "n_clusters": args.clusters,
                                   "graph_max_degree": args.max_degree or None,
                               "neighbours": {**default_params(args.seed).get("neighbours", {}),
                                              "candidates": args.candidates or None}})
    ghrs.stages.listeners.append(stage_mem)
    t0 = time.perf_counter()
    ghrs.fit(ds, split.train)
    ghrs_total = time.perf_counter() - t0
    for stage, secs in ghrs.seconds.items():
        record(stage, secs, stage_mem.peak.get(stage, float("nan")))
    enc = partial(SequenceEncoder, layer=args.encoder, d_model=64, n_layers=2, dropout=0.1)
    hybrid = HybridRecommender(
        encoder=enc, ghrs=ghrs, base_folds=1, heads={"rating": 1.0, "ranking": 1.0}, n_negatives=args.negatives,
        graph_fanout=args.fanout or None,
        trainer=TrainerConfig(max_epochs=1, batch_size=args.batch_size, lr=0.003, progress=False), seed=args.seed)
    t0 = time.perf_counter()
    with PeakMemory() as mem:
        hybrid.fit(ds, split.train)
    fit_s = time.perf_counter() - t0
    record(f"encoder_epoch ({args.encoder})", hybrid.state.history[0]["seconds"], mem.peak_mb)
    record("hybrid_setup+encode", fit_s - hybrid.state.history[0]["seconds"], mem.peak_mb)
    metrics = timed("evaluate", lambda: evaluate(hybrid, ds, split, "test", (10,), 1024, True, progress=False))
    return {"set": name, "dataset": ds.summary(), "n_ratings": len(ds.ratings), "n_users": ds.n_users,
            "n_items": ds.n_items, "user_graph": ghrs.features.user_extractor.graph.summary(),
            "ghrs_fit_seconds": round(ghrs_total, 2), "test": metrics, "stages": rows,
            "total_seconds": round(sum(r["seconds"] for r in rows), 1),
            "peak_mb": max(r["peak_mb"] for r in rows if np.isfinite(r["peak_mb"]))}


def fit_exponents(results: list[dict]) -> pd.DataFrame:
    """Least-squares slope of log(seconds) and log(peak MiB) on log(ratings) per stage, synthetic sets."""
    syn = [r for r in results if r["set"].startswith("synthetic-")]
    if len(syn) < 2:
        return pd.DataFrame()
    out = []
    for stage in [s["stage"] for s in syn[0]["stages"]]:
        pts = [(r["n_ratings"], s["seconds"], s["peak_mb"]) for r in syn for s in r["stages"] if s["stage"] == stage]
        n, t, m = (np.array(v, float) for v in zip(*pts, strict=True))
        ok = t > 0.05  # sub-50 ms stages are timer noise
        a_time = np.polyfit(np.log(n[ok]), np.log(t[ok]), 1)[0] if ok.sum() >= 2 else float("nan")
        a_mem = np.polyfit(np.log(n), np.log(m), 1)[0]
        out.append({"stage": stage, "time_exponent": round(a_time, 2), "memory_exponent": round(a_mem, 2),
                    "points": len(n)})
    return pd.DataFrame(out)


def table(results: list[dict]) -> str:
    sets = [r["set"] for r in results]
    stages = list(dict.fromkeys(s["stage"] for r in results for s in r["stages"]))
    lines = ["| stage | " + " | ".join(f"{s} ({r['n_ratings']:,} ratings)" for s, r in zip(sets, results, strict=True)) + " |",
             "|---|" + "---:|" * len(sets)]
    for stage in stages:
        cells = []
        for r in results:
            s = next((x for x in r["stages"] if x["stage"] == stage), None)
            cells.append(f"{s['seconds']:.2f} s / {s['peak_mb']:,.0f} MiB" if s else "-")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lines.append("| **total** | " + " | ".join(f"{r['total_seconds']:.0f} s / {r['peak_mb']:,.0f} MiB" for r in results) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", default=["ml-100k", "ml-1m-subset", "synthetic-3000", "synthetic-10000",
                                                  "synthetic-30000"])
    p.add_argument("--data", default=None)
    p.add_argument("--out", default="bench/results/scaling")
    p.add_argument("--encoder", default="gru")
    p.add_argument("--negatives", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--alpha", type=float, default=0.01)
    p.add_argument("--max-degree", type=int, default=50,
                   help="GHRS graph_max_degree (0: the paper's unbounded graph, dense on large sets)")
    p.add_argument("--fanout", type=int, default=10,
                   help="hybrid graph_fanout: sampled neighbours per node and hop in training (0: whole graph per batch)")
    p.add_argument("--candidates", type=int, default=2000,
                   help="GHRS neighbours.candidates: neighbour pool of the most active users/items (0: all, exact)")
    p.add_argument("--clusters", type=int, default=8, help="fixed k (the elbow sweep is timed in bench_ghrs.py)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fit-only", default=None, help="only refit exponents / rewrite the table of this out dir")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out = Path(args.fit_only or args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.fit_only:
        for name in args.sets:
            res = run_set(name, args)
            res.update({"date": datetime.now(UTC).isoformat(timespec="seconds"), "command": " ".join(sys.argv),
                        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                                   f"torch {torch.__version__}, threads {torch.get_num_threads()}"})
            (out / f"{name}.json").write_text(json.dumps(res, indent=1))
    results = sorted((json.loads(f.read_text()) for f in out.glob("*.json")), key=lambda r: r["n_ratings"])
    exps = fit_exponents(results)
    text = table(results) + "\n\n" + (exps.to_markdown(index=False) if len(exps) else "(exponents need >= 2 synthetic sets)")
    (out / "scaling.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
