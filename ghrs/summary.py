"""Collect the ``metrics.json`` of a Hydra multirun into one table (``summary.csv`` / ``summary.md``).

Runs automatically at the end of ``python -m ghrs.train -m ...`` (a Hydra callback, see
``conf/train.yaml``), or by hand: ``python -m ghrs.summary multirun/<date>/<time>``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from hydra.experimental.callback import Callback

from ghrs.io import write_bytes_atomic

COLUMNS = ("rmse", "mae", "precision@10", "recall@10", "hr@10", "ndcg@10", "mrr@10", "cold:hr@10", "cold:ndcg@10")


def collect(sweep_dir: str | Path) -> pd.DataFrame:
    """One row per finished run: its overrides, test metrics, fit and epoch seconds, fit-stage peak RSS."""
    rows = []
    for metrics_file in sorted(Path(sweep_dir).glob("**/metrics.json")):
        run = metrics_file.parent
        metrics = json.loads(metrics_file.read_text())
        overrides_file = run / ".hydra" / "overrides.yaml"
        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.exists() else []
        row: dict[str, Any] = {"run": str(run.relative_to(sweep_dir)), "overrides": " ".join(overrides)}
        row.update({k: metrics.get("test", {}).get(k) for k in COLUMNS if k in metrics.get("test", {})})
        row["fit_s"] = metrics.get("timings", {}).get("fit")
        row["epoch_s"] = metrics.get("epoch_s")
        row["fit_peak_mb"] = metrics.get("stage_peak_mb", {}).get("fit")
        rows.append(row)
    return pd.DataFrame(rows)


def grouped(table: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds: groups runs whose overrides differ only in ``seed=``."""
    if table.empty:
        return table
    key = table["overrides"].str.replace(r"\bseed=\S+\s?", "", regex=True).str.strip()
    numeric = table[[c for c in COLUMNS if c in table.columns]]
    agg = numeric.groupby(key).agg(["mean", "std"])
    agg.columns = [f"{a}_{b}" for a, b in agg.columns]
    agg.insert(0, "n_runs", key.value_counts())
    return agg.reset_index(names="overrides")


def mean_std_markdown(stats: pd.DataFrame, digits: int = 4) -> str:
    """The :func:`grouped` table as Markdown with one ``mean ± std`` cell per metric (std over the seeds;
    a single run shows its value alone)."""
    if stats.empty:
        return ""
    metrics = [c for c in COLUMNS if f"{c}_mean" in stats.columns and stats[f"{c}_mean"].notna().any()]
    header = "| runs | seeds | " + " | ".join(metrics) + " |"
    lines = [header, "|---|---:|" + "---:|" * len(metrics)]
    for _, row in stats.iterrows():
        cells = []
        for c in metrics:
            m, sd = row[f"{c}_mean"], row[f"{c}_std"]
            cells.append("" if pd.isna(m) else f"{m:.{digits}f}" + ("" if pd.isna(sd) else f" ± {sd:.{digits}f}"))
        lines.append(f"| {row['overrides'] or '(defaults)'} | {int(row['n_runs'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_summary(sweep_dir: str | Path) -> pd.DataFrame:
    sweep_dir = Path(sweep_dir)
    table = collect(sweep_dir)
    if table.empty:
        return table
    write_bytes_atomic(sweep_dir / "summary.csv", table.to_csv(index=False).encode())
    text = table.to_markdown(index=False, floatfmt=".4f") if _has_tabulate() else table.to_string(index=False)
    stats = grouped(table)
    text += "\n\n" + (stats.to_markdown(index=False, floatfmt=".4f") if _has_tabulate() else stats.to_string(index=False))
    text += "\n\nMean ± std over seeds:\n\n" + mean_std_markdown(stats)
    write_bytes_atomic(sweep_dir / "summary.md", (text + "\n").encode())
    return table


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


class SummaryCallback(Callback):
    """Hydra callback: write and print the summary when a multirun ends."""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        table = write_summary(sweep_dir)
        if not table.empty:
            print(f"\nsummary of {len(table)} runs -> {sweep_dir / 'summary.md'}")
            print(table.to_string(index=False))
            print("\nMean ± std over seeds:\n\n" + mean_std_markdown(grouped(table)))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m ghrs.summary <multirun sweep dir>")
    table = write_summary(sys.argv[1])
    print(table.to_string(index=False))
    print("\nMean ± std over seeds:\n")
    print(mean_std_markdown(grouped(table)))
