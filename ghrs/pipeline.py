"""The training pipeline as a plain function: config -> dataset -> split -> fit -> evaluate -> artifacts.

``python -m ghrs.train`` is a thin Hydra wrapper around :func:`run_training`; call it from Python with
a composed config (see ``tests/ghrs/test_pipeline.py``).
"""

from __future__ import annotations

import logging
import resource
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ghrs import distributed
from ghrs.data.dataset import RatingsDataset
from ghrs.data.splits import Split
from ghrs.evaluation import evaluate
from ghrs.io import torch_save_atomic, write_bytes_atomic, write_json_atomic
from ghrs.models.base import Recommender
from ghrs.resources import PeakMemory
from ghrs.serving import MODEL_FILE
from ghrs.training import seed_everything

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"


@contextmanager
def stage(name: str, timings: dict[str, float], memory: dict[str, float] | None = None):
    """Time a pipeline stage (and, given ``memory``, record its peak resident memory in MiB)."""
    t0 = time.perf_counter()
    with PeakMemory() as mem:
        yield
    timings[name] = round(time.perf_counter() - t0, 3)
    if memory is not None:
        memory[name] = round(mem.peak_mb, 1)
        if mem.cuda_peak_mb is not None:
            memory[f"{name}_cuda"] = round(mem.cuda_peak_mb, 1)
    log.info("stage %s: %.2f s, peak RSS %.0f MiB", name, timings[name], mem.peak_mb)


def build(cfg: DictConfig) -> tuple[RatingsDataset, Split]:
    """Instantiate the dataset and the split named by the config."""
    dataset = instantiate(cfg.dataset, _convert_="all")
    split = instantiate(cfg.split)(dataset)
    return dataset, split


def save_model(path: Path, model: Recommender, cfg: DictConfig) -> None:
    """Pickle the fitted model (it holds its dataset: id maps, titles, history) and the resolved config."""
    dataset = model.dataset
    torch_save_atomic(path, {"model": model, "config": OmegaConf.to_container(cfg, resolve=True),
                             "dataset_name": dataset.name})


def results_table(metrics: dict[str, dict[str, float]]) -> str:
    names = [k for k in ("rmse", "mae", "precision@10", "recall@10", "hr@10", "ndcg@10", "mrr@10")
             if any(k in m for m in metrics.values())]
    rows = [f"{'':8s}" + "".join(f"{n:>14s}" for n in names)]
    for part, m in metrics.items():
        rows.append(f"{part:8s}" + "".join(f"{m[n]:14.4f}" if n in m else f"{'-':>14s}" for n in names))
    return "\n".join(rows)


def run_training(cfg: DictConfig, run_dir: Path | str) -> dict[str, Any]:
    """Run the whole pipeline; writes ``config.yaml``, ``model.pt``, ``metrics.json`` into ``run_dir``."""
    run_dir = Path(run_dir)
    distributed.init(cfg.trainer.get("strategy", "single"))
    main = distributed.is_main()  # under DDP only rank 0 writes artifacts
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(int(cfg.seed))
    if main:
        write_bytes_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True).encode())
    timings: dict[str, float] = {}
    memory: dict[str, float] = {}
    with stage("load", timings, memory):
        dataset = instantiate(cfg.dataset, _convert_="all")
    log.info("%s", dataset.summary())
    with stage("split", timings, memory):
        split = instantiate(cfg.split)(dataset)
    log.info("%s", split.describe())
    model: Recommender = instantiate(cfg.model, _convert_="all")
    with stage("fit", timings, memory):
        model.fit(dataset, split.train, split.valid if len(split.valid) else None, run_dir=run_dir)
    if main:
        with stage("save", timings):
            save_model(run_dir / MODEL_FILE, model, cfg)
    ks = tuple(int(k) for k in cfg.eval.ks)
    metrics: dict[str, Any] = {}
    with stage("evaluate", timings, memory):
        for part in cfg.eval.get("parts", ("valid", "test")):  # hparams_search: valid only
            m = evaluate(model, dataset, split, part, ks, int(cfg.eval.batch_size),
                         bool(cfg.eval.rating_metrics) and model.predicts_ratings)
            if m:
                metrics[part] = m
    metrics["timings"] = timings
    metrics["world_size"] = distributed.world_size()
    if not main:
        return metrics
    model.save_artifacts(run_dir)
    metrics["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # process peak
    metrics["stage_peak_mb"] = memory  # peak RSS while each stage ran (per run, also inside a multirun)
    epochs = [r["seconds"] for r in getattr(getattr(model, "state", None), "history", [])]
    if epochs:
        metrics["epoch_s"] = round(sum(epochs) / len(epochs), 3)  # mean seconds per training epoch
        metrics["epochs"] = len(epochs)
    metrics["dataset"] = dataset.name
    metrics["split"] = split.name
    write_json_atomic(run_dir / METRICS_FILE, metrics)
    table = results_table({k: v for k, v in metrics.items() if k in ("valid", "test")})
    print(f"\n{dataset.name} | {split.name} | model={cfg.model._target_.rsplit('.', 1)[-1]}\n{table}\n"
          f"run dir: {run_dir}")
    return metrics
