"""A small epoch loop for the torch models: early stopping, per-epoch atomic checkpoints, resume.

A checkpoint (``last.ckpt`` in the checkpoint directory) is written after every finished epoch; with
``resume=True`` training restarts after the last finished epoch with the same model, optimiser, RNG
and early-stopping state, so an interrupt loses at most the epoch in progress.
"""

from __future__ import annotations

import contextvars
import logging
import pickle
import random
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ghrs import device as devices
from ghrs import distributed
from ghrs.errors import UserError
from ghrs.io import torch_save_atomic

log = logging.getLogger(__name__)

CHECKPOINT = "last.ckpt"


@dataclass
class TrainerConfig:
    """Knobs of :func:`train_loop` (``conf/trainer/default.yaml``)."""

    max_epochs: int = 20
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 3  # epochs without validation improvement before stopping (0 = never stop early)
    device: str = "auto"  # auto | cpu | cuda | cuda:N (auto: CUDA when it exists)
    precision: str = "fp32"  # fp32 | bf16 (autocast of the training forward; CUDA only)
    resume: bool | str = False  # True: resume from the checkpoint directory; a path: from that file
    grad_clip: float = 5.0
    progress: bool = True
    strategy: str = "single"  # single | ddp (run under torchrun)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.patience < 0:
            raise ValueError(f"trainer: max_epochs, batch_size >= 1, lr > 0, patience >= 0 required; got {self}")
        devices.check_spec(self.device, self.precision)

    @classmethod
    def from_any(cls, cfg: Any) -> TrainerConfig:
        if isinstance(cfg, cls):
            return cfg
        cfg = dict(cfg or {})
        known = {k: cfg.pop(k) for k in list(cfg) if k in cls.__dataclass_fields__}
        return cls(**known, extra={**known.pop("extra", {}), **cfg})

    def torch_device(self) -> torch.device:
        """The device this run trains on (UserError when it asks for CUDA that is not there)."""
        return devices.resolve(self.device, self.precision)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    """Every global RNG's state as tensors and plain values (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "numpy": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])


# What the caller (the pipeline) wants stored with every checkpoint: the config that shapes the model,
# the run id. Plain values only.
_checkpoint_meta: contextvars.ContextVar[dict | None] = contextvars.ContextVar("checkpoint_meta", default=None)


@contextmanager
def checkpoint_meta(meta: dict) -> Iterator[None]:
    """Store ``meta`` (plain values) in every checkpoint written inside the ``with`` block."""
    token = _checkpoint_meta.set(meta)
    try:
        yield
    finally:
        _checkpoint_meta.reset(token)


def _bad_checkpoint(path: Path, what: str) -> UserError:
    return UserError(f"checkpoint {path} {what}; delete it to train from scratch (or set trainer.resume=false "
                     "in a new run dir), or restore it from a backup")


def load_checkpoint(path: Path | str) -> dict:
    """Read a checkpoint with ``torch.load(weights_only=True)``: tensors and plain values only, so a
    crafted file cannot run code. Unreadable, truncated or foreign files are a one-line UserError."""
    path = Path(path)
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"no checkpoint at {path}: give trainer.resume=true with the run dir of an "
                        "interrupted run, or a path to its last.ckpt") from None
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 -- whatever a damaged file makes the unpickler raise
        if isinstance(exc, pickle.UnpicklingError) and "Unsupported global" in str(exc):
            raise _bad_checkpoint(path, "holds objects other than tensors and plain values (never loaded: "
                                        "loading them could run code)") from None
        raise _bad_checkpoint(path, f"is corrupt or truncated ({type(exc).__name__})") from None
    if not isinstance(ck, dict) or not {"model", "optimizer", "state", "rng"} <= set(ck):
        raise _bad_checkpoint(path, "is not a ghrs checkpoint")
    return ck


def save_checkpoint(path: Path, module: torch.nn.Module, opt: torch.optim.Optimizer, state: TrainState,
                    best_weights: dict | None) -> None:
    """Write ``last.ckpt`` atomically: plain tensors and values (model, optimiser, RNG, early stopping)."""
    torch_save_atomic(path, {
        "model": module.state_dict(), "optimizer": opt.state_dict(), "state": asdict(state),
        "best_weights": best_weights, "rng": _rng_state(), "meta": _checkpoint_meta.get() or {},
    })


def _resume(path: Path, module: torch.nn.Module, opt: torch.optim.Optimizer, cfg: TrainerConfig):
    """Restore module, optimiser, RNG and early-stopping state from ``path``; the optimiser takes the
    *current* ``trainer.lr`` / ``weight_decay`` (a changed value is applied, and logged)."""
    ck = load_checkpoint(path)
    try:
        module.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[1:2] or [str(exc)[:120]]
        raise _bad_checkpoint(path, f"was written by a model of another shape ({first[0].strip()})") from None
    for group in opt.param_groups:
        for key, new in (("lr", cfg.lr), ("weight_decay", cfg.weight_decay)):
            if group[key] != new:
                log.info("resume: trainer.%s %g in the checkpoint -> %g now (applied)", key, group[key], new)
                group[key] = new
    _set_rng_state(ck["rng"])
    return TrainState(**ck["state"]), ck["best_weights"]


class _LossModule(torch.nn.Module):
    """Puts the whole loss computation inside ``forward`` so DistributedDataParallel sees every use of
    every parameter (models' loss functions may touch parameters outside their own ``forward``).

    An empty shard (a last global batch with fewer rows than ranks) contributes a zero loss that still
    reaches every parameter, so the rank joins the gradient all-reduce with zero gradients.
    """

    def __init__(self, module: torch.nn.Module, loss_fn):
        super().__init__()
        self.module, self.loss_fn = module, loss_fn

    def forward(self, batch):
        if _rows(batch) == 0:
            zero = sum(p.reshape(-1)[:0].sum() for p in self.module.parameters())
            return zero, torch.zeros((), device=zero.device)
        return self.loss_fn(self.module, batch)


def _rows(batch) -> int | None:
    """Rows of a batch: the length of its first tensor (None without any)."""
    if isinstance(batch, torch.Tensor):
        return len(batch) if batch.dim() else None
    if isinstance(batch, (tuple, list)):
        for b in batch:
            n = _rows(b)
            if n is not None:
                return n
    return None


def _global_loss(out) -> tuple[torch.Tensor, float]:
    """(loss to back-propagate, the global batch's loss value) from a loss function's output.

    ``(sum, count)``: the sum of per-example losses over this rank's shard and the number of examples.
    Counts and sums are all-reduced, and the backward loss is ``sum * world / global count``: DDP averages
    gradients over the world, so every rank's gradient is that of ``global sum / global count``, the same
    as one process on the whole global batch whatever the world size or shard sizes. A plain scalar is
    taken as this shard's mean loss (DDP then averages the shards' means).
    """
    if not isinstance(out, (tuple, list)):
        return out, float(distributed.all_reduce_tensor(out.detach().double().reshape(1))[0]) / distributed.world_size()
    total, count = out
    stats = torch.stack([total.detach().double(), torch.as_tensor(count, device=total.device).double()])
    stats = distributed.all_reduce_tensor(stats)
    n = float(stats[1])
    if n <= 0:
        raise RuntimeError("internal: a global batch with no training examples")
    return total * (distributed.world_size() / n), float(stats[0]) / n


def forward_stream_seed(base_seed: int, epoch: int, rank: int) -> int:
    """Seed of the RNG stream that randomness inside the forward (dropout) draws from in ``epoch``.

    Offset by rank, so DDP ranks draw different dropout masks (one stream per rank, as one process draws
    different masks for different rows); a function of the epoch, so a resumed run re-seeds it exactly.
    Batch shuffling keeps the global RNG, which every rank shares.
    """
    return int(np.random.SeedSequence([int(base_seed) % 2**63, int(rank), int(epoch)]).generate_state(1)[0])


class _ForwardStream:
    """A private CPU (and CUDA) generator state swapped in around each forward."""

    def __init__(self, seed: int, device: torch.device):
        self.cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else []
        with torch.random.fork_rng(devices=self.cuda):
            torch.manual_seed(seed)
            self.states = self._get()

    def _get(self):
        return torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in self.cuda]

    def __call__(self, fn, *args):
        with torch.random.fork_rng(devices=self.cuda):
            cpu, gpus = self.states
            torch.set_rng_state(cpu)
            for d, st in zip(self.cuda, gpus):
                torch.cuda.set_rng_state(st, d)
            out = fn(*args)
            self.states = self._get()
        return out


@dataclass
class Validation:
    """The early-stopping metric: ``fn(module) -> value``, logged as ``valid_<name>`` (e.g. ``valid_rmse``,
    ``valid_hr@10``); ``higher_is_better`` for ranking metrics."""

    fn: Callable[[torch.nn.Module], float]
    name: str = "metric"
    higher_is_better: bool = False

    def loss(self, value: float) -> float:
        """The value as a quantity to minimise (what ``TrainState.best_metric`` holds)."""
        return -value if self.higher_is_better else value


@dataclass
class TrainState:
    epoch: int = 0  # number of finished epochs
    best_metric: float = float("inf")
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict] = field(default_factory=list)


def train_loop(
    module: torch.nn.Module,
    batches: Callable[[int], Iterable[Any]],
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor],
    cfg: TrainerConfig,
    valid_fn: Validation | Callable[[torch.nn.Module], float] | None = None,
    checkpoint_dir: Path | None = None,
    on_epoch_end: Callable[[TrainState], None] | None = None,
    n_batches: int | None = None,
) -> TrainState:
    """Train ``module`` with Adam.

    Args:
        batches: ``epoch -> iterable of batches`` (the caller shuffles with the global RNG, which is
            checkpointed, so a resumed run sees the same batches as an uninterrupted one).
        loss_fn: ``(module, batch) -> (loss sum, example count)`` over the batch (this rank's shard under
            DDP; normalised by the global count, see :func:`_global_loss`), or a scalar mean loss.
        valid_fn: a :class:`Validation`, or ``module -> metric`` (lower is better), for early stopping and
            best-weight selection.
        checkpoint_dir: where ``last.ckpt`` is written after every epoch (None: no checkpoints).
        on_epoch_end: hook called after each epoch's checkpoint (used by tests to simulate interrupts).
        n_batches: batches per epoch, for the progress bar's total and ETA (when ``batches`` has no len).

    Returns the final :class:`TrainState`; the module holds the best validation weights.
    """
    device = cfg.torch_device()
    base_seed = torch.initial_seed()  # the model's seed (models seed torch before building the module)
    module.to(device)
    opt = torch.optim.Adam(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    runner: torch.nn.Module = _LossModule(module, loss_fn)
    if cfg.strategy == "ddp" and distributed.active():
        runner = torch.nn.parallel.DistributedDataParallel(
            runner, device_ids=[device] if device.type == "cuda" else None, find_unused_parameters=True)
    state = TrainState()
    best_weights = None
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir else None
    resume_from = None
    if cfg.resume:
        resume_from = Path(cfg.resume) if isinstance(cfg.resume, str) else ckpt_path
        if resume_from is None or not resume_from.exists():
            log.warning("trainer.resume set but no checkpoint at %s: starting from scratch", resume_from)
            resume_from = None
    if resume_from is not None:
        state, best_weights = _resume(resume_from, module, opt, cfg)
        log.info("resumed from %s after epoch %d", resume_from, state.epoch)

    valid = valid_fn if valid_fn is None or isinstance(valid_fn, Validation) else Validation(valid_fn)
    last_valid: dict[str, float] = {}  # the latest validation value, shown in the progress bar
    if valid is not None and resume_from is None:
        # Epoch 0: the untrained model is a candidate too (models that start from a fitted baseline
        # then never end worse than it on validation).
        module.eval()
        with torch.no_grad():
            value = float(valid.fn(module))
        state.best_metric = valid.loss(value)
        best_weights = {k: v.detach().clone() for k, v in module.state_dict().items()}
        last_valid = {f"valid_{valid.name}": value}
        log.info("epoch 0 (before training): valid_%s=%.4f", valid.name, value)

    while state.epoch < cfg.max_epochs:
        if cfg.patience and state.bad_epochs >= cfg.patience:
            break
        epoch = state.epoch + 1
        t0 = time.perf_counter()
        module.train()
        total, n = 0.0, 0
        progress = cfg.progress and distributed.is_main()
        stream = _ForwardStream(forward_stream_seed(base_seed, epoch, distributed.rank()), device)
        epoch_batches = batches(epoch)
        total_batches = len(epoch_batches) if hasattr(epoch_batches, "__len__") else n_batches
        bar = tqdm(epoch_batches, desc=f"epoch {epoch}/{cfg.max_epochs}", total=total_batches, unit="batch",
                   disable=not progress, leave=False, dynamic_ncols=True)
        for batch in bar:
            opt.zero_grad(set_to_none=True)
            mine = devices.to_device(distributed.shard(batch), device)  # this rank's slice of the global batch
            with devices.autocast(device, cfg.precision):
                loss, value = _global_loss(stream(runner, mine))
            if not np.isfinite(value):
                raise FloatingPointError(f"non-finite training loss at epoch {epoch}; lower trainer.lr?")
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.grad_clip)
            opt.step()
            total, n = total + value, n + 1
            bar.set_postfix({"loss": f"{total / n:.4f}", **{k: f"{v:.4f}" for k, v in last_valid.items()}})
        record = {"epoch": epoch, "train_loss": total / max(1, n)}
        if valid is not None:
            module.eval()
            with torch.no_grad():
                value = float(valid.fn(module))
            record[f"valid_{valid.name}"] = value
            last_valid = {f"valid_{valid.name}": value}
            metric = valid.loss(value)
            if metric < state.best_metric:
                state.best_metric, state.best_epoch, state.bad_epochs = metric, epoch, 0
                best_weights = {k: v.detach().clone() for k, v in module.state_dict().items()}
            else:
                state.bad_epochs += 1
        record["seconds"] = time.perf_counter() - t0
        state.history.append(record)
        state.epoch = epoch
        log.info("epoch %d: %s", epoch, ", ".join(f"{k}={v:.4f}" for k, v in record.items() if k != "epoch"))
        if ckpt_path is not None and distributed.is_main():
            save_checkpoint(ckpt_path, module, opt, state, best_weights)
        if on_epoch_end is not None:
            on_epoch_end(state)
    if best_weights is not None:
        module.load_state_dict(best_weights)
    module.eval()
    return state
