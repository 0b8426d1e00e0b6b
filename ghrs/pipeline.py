"""The training pipeline as a plain function: config -> dataset -> split -> fit -> evaluate -> artifacts.

``python -m ghrs.train`` is a thin Hydra wrapper around :func:`run_training`; call it from Python with
a composed config (see ``tests/ghrs/test_pipeline.py``).
"""

from __future__ import annotations

import logging
import resource
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ghrs import distributed
from ghrs.data.dataset import RatingsDataset
from ghrs.data.splits import Split
from ghrs.evaluation import evaluate
from ghrs.io import write_bytes_atomic, write_json_atomic
from ghrs.models.base import Recommender
from ghrs.resources import RunMemory
from ghrs.rundir import check_resume_config, new_run_id, run_lock, set_run_id
from ghrs.serving import MODEL_FILE, save_run_model
from ghrs.training import CHECKPOINT, checkpoint_meta, load_checkpoint, seed_everything

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"


@contextmanager
def stage(name: str, timings: dict[str, float], memory: RunMemory | None = None):
    """Time a pipeline stage (and, given ``memory``, record the run's peak resident memory in it, MiB)."""
    t0 = time.perf_counter()
    with memory.stage(name) if memory is not None else nullcontext():
        yield
    timings[name] = round(time.perf_counter() - t0, 3)
    if memory is not None:
        log.info("stage %s: %.2f s, run memory %.0f MiB above the %.0f MiB at its start", name, timings[name],
                 memory.stage_mb[name], memory.base_mb or 0.0)
    else:
        log.info("stage %s: %.2f s", name, timings[name])


def build(cfg: DictConfig) -> tuple[RatingsDataset, Split]:
    """Instantiate the dataset and the split named by the config."""
    dataset = instantiate(cfg.dataset, _convert_="all")
    split = instantiate(cfg.split)(dataset)
    return dataset, split


def save_model(path: Path, model: Recommender, cfg: DictConfig) -> None:
    """Write the fitted model (id maps, titles, side table, training interactions; no test ratings) and
    the resolved config as a pickle-free artefact (:func:`ghrs.serving.save_run_model`)."""
    save_run_model(path, model, OmegaConf.to_container(cfg, resolve=True))


def results_table(metrics: dict[str, dict[str, float]]) -> str:
    names = [k for k in ("rmse", "mae", "precision@10", "recall@10", "hr@10", "ndcg@10", "mrr@10")
             if any(k in m for m in metrics.values())]
    rows = [f"{'':8s}" + "".join(f"{n:>14s}" for n in names)]
    for part, m in metrics.items():
        rows.append(f"{part:8s}" + "".join(f"{m[n]:14.4f}" if n in m else f"{'-':>14s}" for n in names))
    return "\n".join(rows)


def check_resume(cfg: DictConfig, run_dir: Path) -> None:
    """With ``trainer.resume``, refuse a config that differs from the checkpoint's in a key that shapes the
    model (:func:`ghrs.rundir.check_resume_config`) before anything is fitted."""
    resume = cfg.trainer.get("resume", False)
    path = Path(resume) if isinstance(resume, str) else run_dir / CHECKPOINT
    if not resume or not path.exists():
        return
    stored = load_checkpoint(path).get("meta", {}).get("config")
    if stored is not None:
        check_resume_config(stored, OmegaConf.to_container(cfg, resolve=True), path)


def run_training(cfg: DictConfig, run_dir: Path | str) -> dict[str, Any]:
    """Run the whole pipeline; writes ``config.yaml``, the model, ``metrics.json`` into ``run_dir``.

    One trainer per run dir: the run holds the dir's writer lock (:func:`ghrs.rundir.run_lock`) and tags
    its log lines, its config and its metrics with a fresh run id."""
    run_dir = Path(run_dir)
    distributed.init(cfg.trainer.get("strategy", "single"), cfg.trainer.get("device", "auto"))
    run_id = new_run_id()
    set_run_id(run_id)
    # under DDP only rank 0 writes artifacts, and locks
    lock = run_lock(run_dir, "training", run_id=run_id) if distributed.is_main() else nullcontext()
    with lock:
        return _run_training(cfg, run_dir, run_id)


def _run_training(cfg: DictConfig, run_dir: Path, run_id: str) -> dict[str, Any]:
    main = distributed.is_main()
    run_dir.mkdir(parents=True, exist_ok=True)
    log.info("run id %s in %s", run_id, run_dir)
    check_resume(cfg, run_dir)
    seed_everything(int(cfg.seed))
    if main:
        header = f"# run_id: {run_id}\n"
        write_bytes_atomic(run_dir / "config.yaml", (header + OmegaConf.to_yaml(cfg, resolve=True)).encode())
    timings: dict[str, float] = {}
    memory = RunMemory()  # baseline: this run's start (per run inside a multirun or after a resume)
    with stage("load", timings, memory):
        dataset = instantiate(cfg.dataset, _convert_="all")
    log.info("%s", dataset.summary())
    with stage("split", timings, memory):
        split = instantiate(cfg.split)(dataset)
    log.info("%s", split.describe())
    model: Recommender = instantiate(cfg.model, _convert_="all")
    with stage("fit", timings, memory), checkpoint_meta({"config": OmegaConf.to_container(cfg, resolve=True),
                                                         "run_id": run_id}):
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
    metrics["run_id"] = run_id
    metrics["timings"] = timings
    metrics["world_size"] = distributed.world_size()
    if not main:
        return metrics
    model.save_artifacts(run_dir)
    # Memory of this run: each stage's peak RSS minus the RSS at the run's start (base_rss_mb), and the
    # run's absolute peak; the process-wide ru_maxrss would mix in earlier jobs of a multirun.
    metrics["base_rss_mb"] = round(memory.base_mb, 1) if memory.base_mb is not None else None
    metrics["peak_rss_mb"] = round(memory.peak_mb if memory.base_mb is not None
                                   else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    metrics["stage_peak_mb"] = {**memory.stage_mb, **{f"{k}_cuda": v for k, v in memory.cuda_mb.items()}}
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
