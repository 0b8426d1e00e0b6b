"""Data-parallel training with PyTorch's own engine (``trainer.strategy=ddp`` under ``torchrun``).

Every rank builds the same data and draws the same global batches (same seed); each trains on its slice
of every global batch inside ``DistributedDataParallel``, which averages gradients, so N processes
follow the 1-process trajectory with the same global batch. Evaluation is sharded over ranks and its
sums reduced; only rank 0 writes artifacts.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

STRATEGIES = ("single", "ddp")


def init(strategy: str) -> None:
    """Start the process group for ``ddp`` (gloo on CPU, nccl on GPU) from torchrun's environment."""
    if strategy not in STRATEGIES:
        raise ValueError(f"trainer.strategy must be one of {STRATEGIES}, got {strategy!r}")
    if strategy == "single" or dist.is_initialized():
        return
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise RuntimeError("trainer.strategy=ddp needs torchrun: torchrun --nproc_per_node=N -m ghrs.train ...")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    log.info("ddp: rank %d of %d (%s)", rank(), world_size(), backend)


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def shard(batch, index: int | None = None, parts: int | None = None):
    """This rank's contiguous slice of a global batch (tensors split along dim 0; tuples recursively)."""
    index = rank() if index is None else index
    parts = world_size() if parts is None else parts
    if parts == 1:
        return batch
    if isinstance(batch, torch.Tensor):
        return torch.tensor_split(batch, parts)[index]
    if isinstance(batch, (tuple, list)):
        return type(batch)(shard(b, index, parts) for b in batch)
    return batch


def all_reduce_sum(values: dict[str, float]) -> dict[str, float]:
    """Sum float values over ranks (identity in a single process)."""
    if not active() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist()))


def barrier() -> None:
    if active():
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
