"""Validation-only comparison of the hybrid's stacked rating bases and blenders (choices for issue 12).

Builds the dataset, split and hybrid exactly as ``python -m ghrs.train <overrides>`` would, then, on the
training part minus its validation carve, computes every base's out-of-fold predictions (the hybrid's
``base_folds`` and seed) and its full-fit predictions of the validation ratings. Prints the validation RMSE
of each base alone, of each blender over all bases, and of the blend without each base. The test part is
never read. Per-base predictions are cached under ``--cache`` (keyed by the training rows and the base's
settings), so a second call with another blender or one more base only fits what is new.

    GHRS_DATA_DIR=/work/shared/data python bench/rating_bases.py +experiment=rating_blend
    python bench/rating_bases.py +experiment=rating_blend dataset.name=ml-1m split=random split.seed=0

Over seeds (``seed`` moves the validation carve and the folds), the ablation of the stacked bases: each base's
gain = validation RMSE of the blend without it minus that of the blend of all, mean ± std over the seeds; it
pays when the mean gain exceeds 2 x the larger seed std of the two blends (issue 12's rule):

    for s in 0 1 2; do python bench/rating_bases.py +experiment=rating_blend seed=$s --out bases_$s.json; done
    python bench/rating_bases.py --table bases_0.json bases_1.json bases_2.json [--blender support]
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ghrs import artefacts
from ghrs.models.blender import LinearBlender, out_of_fold
from ghrs.models.ghrs import GHRSRecommender
from ghrs.models.hybrid import BLENDERS
from ghrs.pipeline import build, configured


def base_predictions(name, make, dataset, split, folds, seed, cache: Path) -> dict[str, np.ndarray]:
    """{"oof", "n_user", "n_item": out-of-fold over split.train, "valid": full fit on split.train}."""
    key = artefacts.fingerprint(split.train, split.valid, repr(make), folds, seed)[:16]
    path = cache / f"{name}-{key}.npz"
    if path.exists():
        return dict(np.load(path))
    t0 = time.perf_counter()
    oof, n_user, n_item = out_of_fold({name: make}, dataset, split.train, folds, seed)
    model = make().fit(dataset, split.train)
    model.set_history(split.train)
    valid = model.predict(split.valid["user"].to_numpy(), split.valid["item"].to_numpy())
    out = {"oof": oof[:, 0], "n_user": n_user, "n_item": n_item, "valid": valid}
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    print(f"# {name}: fitted {folds + 1} times in {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def ablation_table(runs: list[dict], blender: str) -> str:
    """Markdown: the blend of all bases and the blend without each, validation RMSE mean ± std over ``runs``
    (the ``--out`` JSONs of one seed each), with each base's gain and the 2-std verdict."""
    prefix = f"{blender} blend of "
    per_run = [{r["what"].removeprefix(prefix): r["valid"] for r in run["rows"] if r["what"].startswith(prefix)}
               for run in runs]
    full = max(per_run[0], key=lambda k: k.count("+"))  # the blend of every base
    bases = full.split("+")
    lines = [f"| blend ({blender}) | seeds | valid RMSE | base's gain (valid) | 2 std | pays? |",
             "|---|---:|---:|---:|---:|---|"]
    vals = np.array([r[full] for r in per_run])
    lines.append(f"| all: {full} | {len(runs)} | {vals.mean():.4f} ± {vals.std(ddof=1):.4f} | | | |")
    for b in bases:
        name = "+".join(x for x in bases if x != b)
        v = np.array([r[name] for r in per_run])
        gain = v - vals  # > 0: the base helps
        thr = 2 * max(v.std(ddof=1), vals.std(ddof=1))
        lines.append(f"| without {b} | {len(runs)} | {v.mean():.4f} ± {v.std(ddof=1):.4f} | "
                     f"{gain.mean():+.4f} (paired: {gain.min():+.4f} to {gain.max():+.4f}) | {thr:.4f} | "
                     f"{'yes' if gain.mean() > thr else 'no'} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("overrides", nargs="*", help="ghrs.train overrides (the hybrid with model.bases)")
    ap.add_argument("--cache", type=Path, default=ROOT / "outputs" / "rating_bases")
    ap.add_argument("--out", type=Path, default=None, help="JSON with the table's rows")
    ap.add_argument("--table", type=Path, nargs="+", default=None, help="--out files of several seeds: ablation table")
    ap.add_argument("--blender", default="support", help="with --table: the blender whose ablation is shown")
    args = ap.parse_args()
    if args.table:
        print(ablation_table([json.loads(f.read_text()) for f in args.table], args.blender))
        return
    with initialize_config_dir(str(ROOT / "conf"), version_base=None):
        cfg = compose("train", overrides=args.overrides)
    dataset, split = build(cfg)
    if split.valid is None or not len(split.valid):
        raise SystemExit("needs a validation carve: split.valid_ratio > 0 (e.g. +experiment=rating)")
    hybrid = configured(cfg.model, "model")
    factories = {"ghrs": functools.partial(GHRSRecommender, **{**hybrid.ghrs_kwargs, "alpha_sweep": None}),
                 **hybrid.bases}
    preds = {name: base_predictions(name, make, dataset, split, hybrid.base_folds, hybrid.seed, args.cache)
             for name, make in factories.items()}
    y, yv = split.train["rating"].to_numpy(np.float64), split.valid["rating"].to_numpy(np.float64)
    lo, hi = dataset.rating_scale
    nu_v = np.bincount(split.train["user"].to_numpy(), minlength=dataset.n_users)[split.valid["user"].to_numpy()]
    ni_v = np.bincount(split.train["item"].to_numpy(), minlength=dataset.n_items)[split.valid["item"].to_numpy()]
    n_user, n_item = preds["ghrs"]["n_user"], preds["ghrs"]["n_item"]
    rmse = lambda p, t: float(np.sqrt(np.mean((np.clip(p, lo, hi) - t) ** 2)))
    rows = [{"what": f"{name} alone", "oof": rmse(p["oof"], y), "valid": rmse(p["valid"], yv)}
            for name, p in preds.items()]

    def blend(names: list[str], blender: str) -> dict:
        oof = np.column_stack([preds[n]["oof"] for n in names])
        b = LinearBlender(**BLENDERS[blender]).fit(oof, n_user, n_item, y)
        valid = b.predict(np.column_stack([preds[n]["valid"] for n in names]), nu_v, ni_v)
        return {"what": f"{blender} blend of {'+'.join(names)}", "oof": rmse(b.predict(oof, n_user, n_item), y),
                "valid": rmse(valid, yv), "coef": np.round(b.coef_, 3).tolist()}

    names = list(preds)
    for blender in BLENDERS:
        rows.append(blend(names, blender))
        if len(names) > 2:
            rows += [blend([n for n in names if n != drop], blender) for drop in names]
    print(f"{dataset.name}, split {split.name}: {len(split.train):,} training ratings, {len(yv):,} validation")
    print("| bases / blender | out-of-fold RMSE (train) | valid RMSE |\n|---|---:|---:|")
    for r in rows:
        print(f"| {r['what']} | {r['oof']:.4f} | {r['valid']:.4f} |")
    if args.out:
        args.out.write_text(json.dumps({"overrides": args.overrides, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
