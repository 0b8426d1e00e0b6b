"""The ablation table of one or more ``+experiment=ablation_*`` multiruns: mean ± std over seeds per ablation,
the change against the full hybrid, and whether each component pays (the rule of issue 12: a component
that is on by default must improve its metric by more than 2 standard deviations of the seed spread).

    python bench/ablation_table.py multirun/<date>/<time> [more sweep dirs] [--metric rmse|hr@10]
    python bench/ablation_table.py SWEEP_DIR full=RUNS_DIR no_encoder=OTHER_RUNS_DIR --metric hr@10

A ``LABEL=DIR`` argument files every run under DIR as ablation LABEL whatever its overrides say: for runs
made by another command with the same resolved configuration (e.g. ``+experiment=topk encoder=gru`` is
``+experiment=ablation_topk ablation=full``; check with ``--cfg job``).

The verdict is taken on the validation metric (choices are made on validation); the test metric of the
same runs is shown beside it. "std" is the sample std over seeds; the threshold is 2 x the larger std of
the two configurations compared.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml


def collect(dirs: list[str]) -> pd.DataFrame:
    rows = []
    for d in dirs:
        label, sep, path = d.partition("=")
        label, d = (label, path) if sep and not Path(d).exists() else (None, d)  # a run dir may contain "="
        for f in sorted(Path(d).glob("**/metrics.json")):
            overrides = yaml.safe_load((f.parent / ".hydra" / "overrides.yaml").read_text())
            opts = dict(o.lstrip("+~").split("=", 1) for o in overrides if "=" in o)  # +ablation=x too
            m = json.loads(f.read_text())
            rows.append({"ablation": label or opts.get("ablation", "full"), "seed": int(opts.get("seed", 0)),
                         **{f"valid_{k}": v for k, v in m.get("valid", {}).items()},
                         **{f"test_{k}": v for k, v in m.get("test", {}).items()}, "epochs": m.get("epochs")})
    return pd.DataFrame(rows)


def table(runs: pd.DataFrame, metric: str) -> str:
    lower_better = metric in ("rmse", "mae")
    g = runs.groupby("ablation")
    stats = pd.DataFrame({
        "n": g.size().astype(int),
        "valid": g[f"valid_{metric}"].mean(), "valid_std": g[f"valid_{metric}"].std(ddof=1),
        "test": g[f"test_{metric}"].mean(), "test_std": g[f"test_{metric}"].std(ddof=1),
        "epochs": g["epochs"].mean(),
    })
    if "full" not in stats.index:
        raise SystemExit("no 'full' runs among the sweep dirs")
    full = stats.loc["full"]
    lines = [f"| configuration | seeds | valid {metric} | test {metric} | component's gain (valid) | 2 std | pays? | epochs |",
             "|---|---:|---:|---:|---:|---:|---|---:|"]
    order = ["full"] + sorted(i for i in stats.index if i != "full")
    for name in order:
        s = stats.loc[name]
        cells = f"{s.valid:.4f} ± {s.valid_std:.4f} | {s.test:.4f} ± {s.test_std:.4f}"
        if name == "full":
            lines.append(f"| full hybrid | {int(s.n)} | {cells} | | | | {s.epochs:.1f} |")
            continue
        gain = (s.valid - full.valid) if lower_better else (full.valid - s.valid)  # > 0: the component helps
        thr = 2 * np.nanmax([s.valid_std, full.valid_std])
        lines.append(f"| {name.replace('_', ' ')} | {int(s.n)} | {cells} | {gain:+.4f} | {thr:.4f} | "
                     f"{'yes' if gain > thr else 'no'} | {s.epochs:.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--metric", default="rmse")
    args = ap.parse_args()
    runs = collect(args.dirs)
    print(table(runs, args.metric))


if __name__ == "__main__":
    main()
