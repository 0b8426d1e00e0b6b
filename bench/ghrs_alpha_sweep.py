"""GHRS alpha sweep (and any other knobs) on a validation split carved from the training fold.

For every alpha (edge threshold = alpha * n_items) the graph, features, autoencoder and clusters are
fitted on the training part; every predictor setting of the grid is then re-fitted on top of them
(``GHRSRecommender.refit_predictor``) and scored on the validation part. Nothing here looks at the
test fold unless ``--report-test`` is given, which refits the best validation setting on the whole
training fold and scores the test fold once.

Examples::

    # the paper's sweep on ML-100K u1 (validation = 10% of u1.base), both predictors
    python bench/ghrs_alpha_sweep.py --data /work/shared/data/ml-100k.zip
    # tune predictor knobs too (dotted keys reach into nested config groups)
    python bench/ghrs_alpha_sweep.py --alphas 0.01 --grid neighbours.k_item=100,300 --grid shrink_cluster_item=25,100

Writes ``<out>/ghrs_alpha_sweep.csv``, ``<out>/ghrs_alpha_sweep.png`` and ``<out>/ghrs_sweep_best.json``.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ghrs.data.splits import OfficialSplit, RandomSplit
from ghrs.io import save_figure
from ghrs.metrics import mae, rmse
from ghrs.models.ghrs import PREDICTOR_PARAMS, GHRSRecommender

log = logging.getLogger("ghrs_alpha_sweep")

PAPER_ALPHAS = [0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.035, 0.04, 0.045]


def default_params(seed: int) -> dict:
    """The model's knobs from ``conf/model/ghrs.yaml`` (``${seed}`` resolved)."""
    cfg = OmegaConf.load(ROOT / "conf" / "model" / "ghrs.yaml")
    cfg = OmegaConf.merge(OmegaConf.create({"seed": seed}), OmegaConf.create({"model": cfg}))
    params = OmegaConf.to_container(cfg.model, resolve=True)
    params.pop("_target_")
    return params


def set_dotted(params: dict, key: str, value) -> None:
    node = params
    parts = key.split(".")
    for p in parts[:-1]:
        if node.get(p) is None:
            node[p] = {}
        node = node[p]
    node[parts[-1]] = value


def parse_value(text: str):
    return yaml.safe_load(text)


def load_data(args):
    if args.dataset == "synthetic":
        from ghrs.data.synthetic import make_synthetic

        ds = make_synthetic(n_users=args.syn_users, n_items=args.syn_items, ratings_per_user=args.syn_rpu,
                            n_groups=8, seed=args.seed)
        return ds, RandomSplit(0.1, valid_ratio=args.valid_ratio, seed=args.seed)(ds)
    from ghrs.data.movielens import load_movielens

    ds = load_movielens(args.dataset, root=args.data, download=False)
    if args.fold:
        return ds, OfficialSplit(args.fold, valid_ratio=args.valid_ratio, seed=args.seed)(ds)
    return ds, RandomSplit(0.1, valid_ratio=args.valid_ratio, seed=args.seed)(ds)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ml-100k", help="ml-100k | ml-1m | synthetic")
    ap.add_argument("--data", default=None, help="zip/dir of the MovieLens files (default: $GHRS_DATA_DIR)")
    ap.add_argument("--fold", default="u1", help="official fold (ML-100K); '' = random 90/10 split")
    ap.add_argument("--valid-ratio", type=float, default=0.1, help="share of the training fold held out")
    ap.add_argument("--alphas", default=",".join(map(str, PAPER_ALPHAS)))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="fixed override (repeatable)")
    ap.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2", help="grid axis (repeatable)")
    ap.add_argument("--report-test", action="store_true", help="refit the best setting on the full training fold and score the test fold once")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "ghrs_alpha_sweep"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--syn-users", type=int, default=943)
    ap.add_argument("--syn-items", type=int, default=1682)
    ap.add_argument("--syn-rpu", type=int, default=100)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("ghrs.features", "ghrs.graph", "ghrs.autoencoder", "ghrs.clustering", "ghrs.models", "ghrs.data"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    ds, split = load_data(args)
    log.info("%s | %s", ds.summary(), split.describe())
    if len(split.valid) == 0:
        raise SystemExit("--valid-ratio must be > 0: the sweep scores on the validation part")
    base = default_params(args.seed)
    base["alpha_sweep"] = None
    for item in args.set:
        k, v = item.split("=", 1)
        set_dotted(base, k, parse_value(v))
    axes = [(k, [parse_value(v) for v in vals.split(",")]) for k, vals in (g.split("=", 1) for g in args.grid)]
    feat_axes = [(k, v) for k, v in axes if k.split(".")[0] not in PREDICTOR_PARAMS]
    pred_axes = [(k, v) for k, v in axes if k.split(".")[0] in PREDICTOR_PARAMS]
    alphas = [float(a) for a in args.alphas.split(",")]

    tr, va = split.train, split.valid
    yv = va["rating"].to_numpy()
    rows = []
    for alpha in alphas:
        for fvals in itertools.product(*[v for _, v in feat_axes]):
            params = copy.deepcopy(base)
            params["alpha"] = alpha
            fset = dict(zip([k for k, _ in feat_axes], fvals))
            for k, v in fset.items():
                set_dotted(params, k, v)
            t0 = time.perf_counter()
            model = GHRSRecommender(**params).fit(ds, tr)
            fit_s = time.perf_counter() - t0
            g = model.features.user_extractor.graph
            common = {"alpha": alpha, **fset, "graph_nodes": len(g.nodes), "graph_edges": g.n_edges,
                      "k": model.features.n_clusters_, "fit_seconds": round(fit_s, 2)}
            settings = [{"predictor": "paper"}] + [
                {"predictor": "agreement_knn", **dict(zip([k for k, _ in pred_axes], pv))}
                for pv in itertools.product(*[v for _, v in pred_axes])
            ]
            for ps in settings:
                nested: dict = {}
                for k, v in ps.items():
                    set_dotted(nested, k, v)
                model.refit_predictor(**nested)
                model.set_history(tr)
                pred = model.predict(va["user"].to_numpy(), va["item"].to_numpy())
                row = {**common, **ps, "rmse": rmse(pred, yv), "mae": mae(pred, yv)}
                rows.append(row)
                log.info("%s", {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})
    table = pd.DataFrame(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "ghrs_alpha_sweep.csv", index=False)

    # Plot: per alpha, the paper predictor and the best agreement_knn setting.
    best_res = table[table["predictor"] == "agreement_knn"].sort_values("rmse").groupby("alpha", as_index=False).first()
    paper = table[table["predictor"] == "paper"].groupby("alpha", as_index=False)["rmse"].min()
    plot_table = best_res[["alpha", "rmse", "graph_edges"]].rename(columns={"rmse": "agreement_knn"})
    plot_table = plot_table.merge(paper.rename(columns={"rmse": "paper"}), on="alpha")
    _plot(plot_table, out / "ghrs_alpha_sweep.png", f"GHRS alpha sweep, {ds.name} {split.name} (validation)")

    best = table[table["predictor"] == "agreement_knn"].sort_values("rmse").iloc[0].to_dict()
    best_paper = table[table["predictor"] == "paper"].sort_values("rmse").iloc[0].to_dict()
    result = {"dataset": ds.name, "split": split.name, "valid_ratio": args.valid_ratio,
              "best_agreement_knn": best, "best_paper": best_paper}
    print("\nbest agreement_knn setting (validation):", json.dumps(best, default=str))
    print("best paper setting (validation):", json.dumps(best_paper, default=str))
    if args.report_test:
        full = pd.concat([tr, va], ignore_index=True)
        te = split.test
        result["test"] = {}
        for name, setting in (("agreement_knn", best), ("paper", best_paper)):
            params = copy.deepcopy(base)
            for k, v in setting.items():
                if k in ("rmse", "mae", "graph_nodes", "graph_edges", "k", "fit_seconds") or (isinstance(v, float) and np.isnan(v)):
                    continue
                set_dotted(params, k, v)
            m = GHRSRecommender(**params).fit(ds, full)
            m.set_history(full)
            p = m.predict(te["user"].to_numpy(), te["item"].to_numpy())
            result["test"][name] = {"rmse": rmse(p, te["rating"].to_numpy()), "mae": mae(p, te["rating"].to_numpy()),
                                    "k": m.features.n_clusters_}
            print(f"test ({name}, refit on the full training fold): {result['test'][name]}")
    (out / "ghrs_sweep_best.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {out}/ghrs_alpha_sweep.csv, .png, ghrs_sweep_best.json")
    return 0


def _plot(table: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(table["alpha"], table["agreement_knn"], "o-", label="default (agreement_knn) predictor")
    ax.plot(table["alpha"], table["paper"], "s--", label="paper predictor")
    ax.set_xlabel("alpha (edge threshold = alpha * n_items)")
    ax.set_ylabel("validation RMSE")
    ax2 = ax.twinx()
    ax2.plot(table["alpha"], table["graph_edges"], ":", color="gray")
    ax2.set_ylabel("user graph edges (dotted)", color="gray")
    ax.legend(loc="center right", fontsize=8)
    ax.set_title(title, fontsize=9)
    save_figure(fig, path)


if __name__ == "__main__":
    raise SystemExit(main())
