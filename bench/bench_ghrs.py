"""Wall time and peak memory of every GHRS stage on ML-100K, ML-1M users 1-2,999 and a synthetic set of
ML-1M's full size (6,040 users x 3,700 items, ~1M ratings).

Stages: user graph, user graph features, autoencoder, clustering, item graph, item graph features,
item autoencoder, predictor fit, fold-in (``set_history``), predict (the test pairs' ratings) and rank
(scores of every test user over all items, as the top-k evaluation needs). Memory per stage is the
process's peak resident set size during the stage (Linux: the ``VmHWM`` high-water mark, reset at the
start of every stage through ``/proc/self/clear_refs``; elsewhere ``ru_maxrss``, which never
decreases) and its increase over the resident size when the stage started.

``--approx-check`` also measures the error of the sampled shortest-path features (closeness,
betweenness, load from k pivots) against the exact ones, and the RMSE of the model built on them.

Examples::

    python bench/bench_ghrs.py                       # all three sets, data from $GHRS_DATA_DIR
    python bench/bench_ghrs.py --sets ml-100k --approx-check --data /work/shared/data
    python bench/bench_ghrs.py --sets synthetic --set centrality.exact_max_nodes=10000   # exact on 6,040 nodes
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import re
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ghrs.data.splits import OfficialSplit, RandomSplit
from ghrs.metrics import mae, rmse
from ghrs.models.ghrs import GHRSRecommender

log = logging.getLogger("bench_ghrs")

SETS = {
    "ml-100k": "ML-100K, official split u1",
    "ml-1m-subset": "ML-1M users 1-2,999, random 90/10 split (seed 0)",
    "synthetic": "synthetic, ML-1M's full size (6,040 users x 3,700 items), random 90/10 split (seed 0)",
}


class Memory:
    """Per-stage peak RSS (MB) via the kernel's high-water mark, which can be reset on Linux."""

    def __init__(self) -> None:
        self.can_reset = False
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.can_reset = "VmHWM" in Path("/proc/self/status").read_text()
        except OSError:
            pass
        self.method = "VmHWM reset per stage" if self.can_reset else "ru_maxrss (monotone)"
        self.start_rss: dict[str, float] = {}
        self.peak: dict[str, float] = {}

    @staticmethod
    def _status(field: str) -> float:
        m = re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text())
        return int(m.group(1)) / 1024 if m else float("nan")

    def rss(self) -> float:
        if Path("/proc/self/status").exists():
            return self._status("VmRSS")
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def __call__(self, stage: str, event: str) -> None:
        if event == "start":
            if self.can_reset:
                with open("/proc/self/clear_refs", "w") as fh:
                    fh.write("5")
            self.start_rss[stage] = self.rss()
        else:
            peak = self._status("VmHWM") if self.can_reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            self.peak[stage] = max(self.peak.get(stage, 0.0), peak)


def load(name: str, data: str | None, seed: int):
    if name == "synthetic":
        from ghrs.data.synthetic import make_synthetic

        ds = make_synthetic(n_users=6040, n_items=3700, ratings_per_user=165, n_groups=8, seed=seed)
        return ds, RandomSplit(0.1, seed=seed)(ds)
    from ghrs.data.movielens import load_movielens

    root = data or os.environ.get("GHRS_DATA_DIR")
    if name == "ml-100k":
        ds = load_movielens("ml-100k", root=root, download=False)
        return ds, OfficialSplit("u1")(ds)
    root = str(Path(root) / "ml-1m-users-1-2999.zip") if root and Path(root).is_dir() else root
    ds = load_movielens("ml-1m", root=root, download=False)
    return ds, RandomSplit(0.1, seed=seed)(ds)


def default_params(seed: int) -> dict:
    from omegaconf import OmegaConf

    cfg = OmegaConf.merge(OmegaConf.create({"seed": seed}),
                          OmegaConf.create({"model": OmegaConf.load(ROOT / "conf" / "model" / "ghrs.yaml")}))
    params = OmegaConf.to_container(cfg.model, resolve=True)
    params.pop("_target_")
    params["alpha_sweep"] = None
    return params


def run_set(name: str, args, params: dict) -> dict:
    t0 = time.perf_counter()
    ds, split = load(name, args.data, args.seed)
    load_s = time.perf_counter() - t0
    log.info("%s | %s (load %.1f s)", ds.summary(), split.describe(), load_s)
    mem = Memory()
    model = GHRSRecommender(**params)
    model.stages.listeners.append(mem)
    t_all = time.perf_counter()
    model.fit(ds, split.train)
    with model.stages("fold_in"):
        history = pd.concat([p for p in (split.train, split.revealed, split.valid) if len(p)], ignore_index=True)
        model.set_history(history)
    te = split.test
    with model.stages("predict"):
        pred = model.predict(te["user"].to_numpy(), te["item"].to_numpy())
    ghrs_total = time.perf_counter() - t_all
    rank_users = np.unique(te["user"].to_numpy())
    with model.stages("rank"):
        for start in range(0, len(rank_users), 1024):
            model.score(rank_users[start : start + 1024])
    f = model.features
    ug = f.user_extractor.graph
    stages = []
    for stage, secs in model.seconds.items():
        stages.append({"stage": stage, "seconds": round(secs, 3), "peak_rss_mb": round(mem.peak.get(stage, float("nan")), 1),
                       "rss_increase_mb": round(mem.peak.get(stage, float("nan")) - mem.start_rss.get(stage, float("nan")), 1)})
    out = {
        "set": name, "label": SETS[name], "dataset": ds.summary(), "split": split.describe(),
        "load_seconds": round(load_s, 2),
        "ghrs_seconds_fit_to_predict": round(ghrs_total, 2),
        "rank_seconds": round(model.seconds["rank"], 2),
        "user_graph": ug.summary(), "graph_feature_modes": f.user_extractor.raw.modes,
        "item_graph": f.item_extractor.graph.summary() if f.item_side else None,
        "k": f.n_clusters_, "test_rmse": rmse(pred, te["rating"].to_numpy()), "test_mae": mae(pred, te["rating"].to_numpy()),
        "stages": stages, "memory_method": mem.method,
        # (ru_maxrss is reset along with VmHWM by clear_refs: the process peak is the largest stage peak)
        "process_peak_rss_mb": round(max(mem.peak.values()), 1),
    }
    if args.approx_check:
        out["approximation"] = approx_check(model, ds, split, params, args)
    return out


def approx_check(model: GHRSRecommender, ds, split, params: dict, args) -> list[dict]:
    """Sampled vs exact closeness/betweenness/load on the fitted user graph, and the model's RMSE."""
    from scipy.stats import spearmanr

    from ghrs.graph.graph_features import FEATURES, CentralityConfig, compute_graph_features

    adj = model.features.user_extractor.graph.adjacency
    base_cfg = {**params["centrality"], "exact_max_nodes": 10**9}
    t0 = time.perf_counter()
    exact = compute_graph_features(adj, CentralityConfig(**{**base_cfg, "closeness": "exact", "betweenness": "exact",
                                                              "load": "exact"}))
    exact_s = time.perf_counter() - t0
    nodes = exact.in_graph
    rows = [{"pivots": "exact", "seconds": round(exact_s, 2)}]
    te = split.test
    for k in args.pivots:
        cfg = CentralityConfig(**{**base_cfg, "closeness": "sampled", "betweenness": "sampled", "load": "sampled",
                                  "n_pivots": k})
        t0 = time.perf_counter()
        approx = compute_graph_features(adj, cfg)
        row = {"pivots": k, "seconds": round(time.perf_counter() - t0, 2)}
        for name in ("closeness", "betweenness", "load"):
            j = FEATURES.index(name)
            e, a = exact.values[nodes, j], approx.values[nodes, j]
            row[f"{name}_spearman"] = round(float(spearmanr(e, a).statistic), 4)
            row[f"{name}_mean_rel_err"] = round(float(np.mean(np.abs(a - e)) / max(np.mean(np.abs(e)), 1e-300)), 4)
        p = copy.deepcopy(params)
        p["centrality"] = {**base_cfg, "closeness": "sampled", "betweenness": "sampled", "load": "sampled", "n_pivots": k}
        m = GHRSRecommender(**p).fit(ds, split.train)
        m.set_history(split.train)
        row["test_rmse"] = round(rmse(m.predict(te["user"].to_numpy(), te["item"].to_numpy()), te["rating"].to_numpy()), 4)
        rows.append(row)
        log.info("approximation: %s", row)
    p = copy.deepcopy(params)
    p["centrality"] = {**base_cfg, "closeness": "exact", "betweenness": "exact", "load": "exact"}
    m = GHRSRecommender(**p).fit(ds, split.train)
    m.set_history(split.train)
    rows[0]["test_rmse"] = round(rmse(m.predict(te["user"].to_numpy(), te["item"].to_numpy()), te["rating"].to_numpy()), 4)
    return rows


def markdown(results: list[dict]) -> str:
    lines = []
    for r in results:
        lines += [f"**{r['label']}** — {r['dataset']}; {r['split']}", "",
                  (f"user graph: {r['user_graph']}; path features: {r['graph_feature_modes']}; k = {r['k']}; "
                   f"test RMSE {r['test_rmse']:.4f}"), "",
                  "| stage | seconds | peak RSS (MB) | RSS increase (MB) |", "|---|---:|---:|---:|"]
        for s in r["stages"]:
            lines.append(f"| {s['stage']} | {s['seconds']:.2f} | {s['peak_rss_mb']:.0f} | {s['rss_increase_mb']:.0f} |")
        lines += ["", (f"GHRS fit -> fold-in -> predict: **{r['ghrs_seconds_fit_to_predict']:.1f} s** "
                       f"(+ rank {r['rank_seconds']:.1f} s; data loading {r['load_seconds']:.1f} s not included); "
                       f"process peak RSS {r['process_peak_rss_mb']:.0f} MB"), ""]
        if r.get("approximation"):
            cols = list(dict.fromkeys(k for row in r["approximation"] for k in row))
            lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            for row in r["approximation"]:
                lines.append("| " + " | ".join(str(row.get(c, "")) for c in cols) + " |")
            lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="ml-100k,ml-1m-subset,synthetic", help=f"comma list of {sorted(SETS)}")
    ap.add_argument("--data", default=None, help="MovieLens folder/zip (default: $GHRS_DATA_DIR)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model override, e.g. alpha=0.005")
    ap.add_argument("--approx-check", action="store_true", help="measure sampled vs exact path features")
    ap.add_argument("--pivots", default="64,256,512", help="pivot counts for --approx-check")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "bench_ghrs"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.pivots = [int(k) for k in args.pivots.split(",")]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import yaml

    params = default_params(args.seed)
    for item in args.set:
        k, v = item.split("=", 1)
        node = params
        *head, last = k.split(".")
        for h in head:
            if not isinstance(node.get(h), dict):
                node[h] = {}
            node = node[h]
        node[last] = yaml.safe_load(v)
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None}
    results = []
    for name in args.sets.split(","):
        if name not in SETS:
            raise SystemExit(f"unknown set {name!r}; known: {sorted(SETS)}")
        results.append(run_set(name, args, params))
        print(markdown(results[-1:]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_ghrs.json").write_text(json.dumps({"env": env, "overrides": args.set, "results": results}, indent=2,
                                                    default=str))
    (out / "bench_ghrs.md").write_text(markdown(results))
    print(f"environment: {env}\nwrote {out}/bench_ghrs.json and bench_ghrs.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
