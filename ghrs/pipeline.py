"""The training pipeline as a plain function: config -> dataset -> split -> fit -> evaluate -> artifacts.

``python -m ghrs.train`` is a thin Hydra wrapper around :func:`run_training`; call it from Python with
a composed config (see ``tests/ghrs/test_pipeline.py``).
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ghrs import distributed
from ghrs.data.dataset import RatingsDataset
from ghrs.data.splits import Split
from ghrs.errors import ConfigError
from ghrs.evaluation import evaluate
from ghrs.io import write_bytes_atomic, write_json_atomic
from ghrs.models.base import Recommender
from ghrs.resources import RunMemory
from ghrs.rundir import check_resume_config, new_run_id, run_lock, set_run_id
from ghrs.serving import MODEL_FILE, save_run_model, top_k
from ghrs.training import CHECKPOINT, TrainerConfig, checkpoint_meta, load_checkpoint, seed_everything

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
RECOMMENDATIONS_FILE = "recommendations.csv"


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


def configured(node: DictConfig, group: str) -> Any:
    """Instantiate a configured class; a ``ValueError``/``TypeError`` from its constructor (which only
    checks and stores its parameters, scikit-learn style) is a bad value in config group ``group``, so it
    becomes a :class:`ConfigError` naming the group."""
    factory = instantiate(node, _partial_=True, _convert_="all")
    try:
        return factory()
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{group}: {exc} (fix the {group}.* value)") from exc


def check_encoder(cfg: DictConfig, overrides: list[str] | None = None) -> None:
    """``encoder=...`` only means something for a model with a sequence encoder; else it is a mistake.

    ``overrides``: the command-line overrides (Hydra's ``overrides.task``); the encoder configuration
    itself is validated by building a tiny instance (its constructor checks every layer option)."""
    given = [o for o in overrides or [] if o.lstrip("+~").split("=", 1)[0].split(".")[0] == "encoder"]
    if "encoder" not in cfg.model:
        if given:
            raise ConfigError(f"{given[0]!r} has no effect: model={_model_name(cfg)} has no sequence encoder; drop it, "
                              "or train the hybrid: python -m ghrs.train model=hybrid " + " ".join(given))
        return
    if cfg.get("encoder") is not None:
        tiny = {**OmegaConf.to_container(cfg.encoder, resolve=True), "_partial_": False, "n_items": 2, "n_features": 2}
        configured(OmegaConf.create(tiny), "encoder")


def _model_name(cfg: DictConfig) -> str:
    return str(cfg.model._target_).rsplit(".", 1)[-1].removesuffix("Recommender").lower()


def build(cfg: DictConfig) -> tuple[RatingsDataset, Split]:
    """Instantiate the dataset and the split named by the config."""
    dataset = instantiate(cfg.dataset, _convert_="all")
    return dataset, build_split(cfg.split, dataset)


def build_split(split_cfg: DictConfig | Callable, dataset: RatingsDataset) -> Split:
    """Split ``dataset`` as configured (``split_cfg``: the config or the split object built from it); a split
    that leaves no training or no test ratings is a :class:`ConfigError`."""
    splitter = split_cfg if callable(split_cfg) else configured(split_cfg, "split")
    split = splitter(dataset)
    for part in ("train", "test"):
        if len(getattr(split, part)) == 0:
            raise ConfigError(f"split {split.name} of {dataset.name} ({len(dataset.ratings):,} ratings) leaves no "
                              f"{part} ratings: give more ratings or another split (split=random split.test_ratio=0.2)")
    return split


def write_recommendations(path: Path, model: Recommender, dataset: RatingsDataset, k: int, batch_size: int) -> None:
    """Top-``k`` items per user that the user has not rated anywhere in the data, with titles and scores."""
    table = top_k(model, np.arange(dataset.n_users), k, dataset.ratings, batch_size)
    write_bytes_atomic(path, table.to_csv(index=False).encode())


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


def run_training(cfg: DictConfig, run_dir: Path | str, overrides: list[str] | None = None) -> dict[str, Any]:
    """Run the whole pipeline; writes ``config.yaml``, the model, ``metrics.json`` and
    ``recommendations.csv`` into ``run_dir``. ``overrides``: the command line's (checked for mistakes).

    One trainer per run dir: the run holds the dir's writer lock (:func:`ghrs.rundir.run_lock`) and tags
    its log lines, its config and its metrics with a fresh run id."""
    run_dir = Path(run_dir)
    # every configured object is built (and so checked) before any data work
    check_encoder(cfg, overrides)
    if "trainer" in cfg:
        try:
            TrainerConfig.from_any(OmegaConf.to_container(cfg.trainer, resolve=True))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{exc} (fix the trainer.* value)") from exc
    splitter = configured(cfg.split, "split")
    model: Recommender = configured(cfg.model, "model")
    distributed.init(cfg.trainer.get("strategy", "single"), cfg.trainer.get("device", "auto"))
    run_id = new_run_id()
    set_run_id(run_id)
    # under DDP only rank 0 writes artifacts, and locks
    lock = run_lock(run_dir, "training", run_id=run_id) if distributed.is_main() else nullcontext()
    with lock:
        return _run_training(cfg, run_dir, run_id, splitter, model)


def _run_training(cfg: DictConfig, run_dir: Path, run_id: str, splitter: Callable, model: Recommender) -> dict[str, Any]:
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
        split = build_split(splitter, dataset)
    log.info("%s", split.describe())
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
    k = int(cfg.eval.get("recommendations", 10))
    if k:
        with stage("recommend", timings):
            write_recommendations(run_dir / RECOMMENDATIONS_FILE, model, dataset, k, int(cfg.eval.batch_size))
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
