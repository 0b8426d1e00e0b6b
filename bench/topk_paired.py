"""Is model A ahead of model B on the top-k test part by more than the noise? Two views of "2 standard errors".

Each group is a folder of finished runs of one configuration (one run per seed, e.g. the sweep dir of
``python -m ghrs.train -m +experiment=topk model=sasrec seed=0,1,2``) or a single run dir (a deterministic
baseline). Every run is re-scored on its own split's test part (saved model, no training), user by user.

* **seeds**: mean ± std over the runs of each group, and the difference of the means in units of its
  standard error over seeds, sqrt(std_A^2 / n_A + std_B^2 / n_B) (0 for two deterministic models);
* **paired over users**: each user's metric averaged over the group's runs, the per-user difference A - B,
  and its mean in units of std / sqrt(n_users): the test sample's noise, which the seeds do not show.

    GHRS_DATA_DIR=/work/shared/data python bench/topk_paired.py RUNS_A RUNS_B [RUNS_C ...]

Compares the first group with every other one (same split required); prints a Markdown table.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ghrs.evaluation import _user_item_matrix, history_for
from ghrs.metrics import ranking_metrics
from ghrs.pipeline import build
from ghrs.serving import MODEL_FILE, load_run

METRICS = ("hr@10", "ndcg@10")


def run_dirs(group: Path) -> list[Path]:
    """The run dirs of a group: the folder itself if it holds a model, else every sub-folder that does."""
    if _has_model(group):
        return [group]
    runs = sorted(p.parent for p in group.glob("**/config.yaml") if _has_model(p.parent))
    if not runs:
        raise SystemExit(f"{group}: no finished run (config.yaml + saved model) in it")
    return runs


def _has_model(run: Path) -> bool:
    return (run / MODEL_FILE).is_file()


def per_user(run: Path) -> tuple[str, np.ndarray, dict[str, np.ndarray]]:
    """The run's split (its name and a fingerprint of its test pairs), its ranked test users (U,) and each
    metric per user (U,)."""
    model, cfg = load_run(run)
    dataset, split = build(OmegaConf.create(cfg))
    target = split.test if split.relevant_min_rating is None else split.test[
        split.test["rating"] >= split.relevant_min_rating]
    users = np.unique(target["user"].to_numpy())
    history = history_for(split, "test")
    model.set_history(history)
    seen = _user_item_matrix(history, dataset.n_users, dataset.n_items)
    rel = _user_item_matrix(target, dataset.n_users, dataset.n_items)
    out = {m: np.empty(len(users)) for m in METRICS}
    for start in range(0, len(users), 1024):
        batch = users[start : start + 1024]
        scores = model.score_tensor(batch).cpu()
        values = ranking_metrics(scores, torch.from_numpy(rel[batch].toarray()),
                                 torch.from_numpy(seen[batch].toarray()), (10,))
        for m in METRICS:
            out[m][start : start + len(batch)] = values[m].numpy()
    pairs = target[["user", "item"]].to_numpy()
    return f"{split.name} (test pairs {hashlib.sha1(pairs[np.lexsort(pairs.T[::-1])].tobytes()).hexdigest()[:8]})", users, out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("groups", nargs="+", type=Path, help="folders of runs (first = A)")
    args = parser.parse_args(argv)
    if len(args.groups) < 2:
        raise SystemExit("give at least two groups of runs")
    scored = []  # per group: {metric: (runs, users)}
    split_users = None
    for group in args.groups:
        per_run = [per_user(run) for run in run_dirs(group)]
        for name, users, _ in per_run:
            key = (name, tuple(users))  # same split: same test pairs
            if split_users is None:
                split_users = key
            elif key != split_users:
                raise SystemExit(f"{group}: split {name} differs from the first group's {split_users[0]}")
        scored.append({m: np.stack([v[m] for *_, v in per_run]) for m in METRICS})
    n_users = len(split_users[1])
    print(f"split {split_users[0]}, {n_users} test users; A = {args.groups[0]}\n")
    print("| B | metric | A (runs) | B (runs) | A - B | seeds: SE, diff/SE | users (paired): SE, diff/SE |")
    print("|---|---|---|---|---:|---|---|")
    a = scored[0]
    for group, b in zip(args.groups[1:], scored[1:]):
        for m in METRICS:
            ra, rb = a[m].mean(1), b[m].mean(1)  # per-run test means
            diff = ra.mean() - rb.mean()
            se_seed = np.sqrt(_var(ra) / len(ra) + _var(rb) / len(rb))
            d_user = a[m].mean(0) - b[m].mean(0)  # per user, averaged over each group's runs
            se_user = d_user.std(ddof=1) / np.sqrt(n_users)
            print(f"| {group} | {m} | {_cell(ra)} | {_cell(rb)} | {diff:+.4f} | {se_seed:.4f}, "
                  f"{_ratio(diff, se_seed)} | {se_user:.4f}, {_ratio(diff, se_user)} |")


def _var(x: np.ndarray) -> float:
    return float(x.var(ddof=1)) if len(x) > 1 else 0.0


def _cell(x: np.ndarray) -> str:
    return f"{x.mean():.4f} ± {np.sqrt(_var(x)):.4f} ({len(x)})" if len(x) > 1 else f"{x[0]:.4f} (1)"


def _ratio(diff: float, se: float) -> str:
    return f"{diff / se:+.1f}" if se > 0 else "n/a"


if __name__ == "__main__":
    main()
