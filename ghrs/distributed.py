"""Data-parallel training with PyTorch's own engine (``trainer.strategy=ddp`` under ``torchrun``).

Every rank builds the same data and draws the same global batches (same seed); each trains on its slice
of every global batch inside ``DistributedDataParallel``. Losses are sums over a shard divided by the
all-reduced global count (``ghrs.training._global_loss``), so N processes follow the 1-process trajectory
with the same global batch, whatever the shard sizes (an empty shard joins with zero gradients). Dropout
draws from a stream seeded per rank. Evaluation is sharded over ranks and its sums reduced; only rank 0
writes artifacts. The backend is nccl when the run's tensors are on CUDA (``trainer.device``), gloo
otherwise; each rank then uses the GPU of its LOCAL_RANK.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist

from ghrs import device as devices

log = logging.getLogger(__name__)

STRATEGIES = ("single", "ddp")


def init(strategy: str, device: str = "auto") -> None:
    """Start the process group for ``ddp`` from torchrun's environment: nccl when ``device``
    (``trainer.device``) resolves to CUDA on this rank, gloo otherwise."""
    if strategy not in STRATEGIES:
        raise ValueError(f"trainer.strategy must be one of {STRATEGIES}, got {strategy!r}")
    if strategy == "single" or dist.is_initialized():
        return
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise RuntimeError("trainer.strategy=ddp needs torchrun: torchrun --nproc_per_node=N -m ghrs.train ...")
    where = devices.resolve(device)
    backend = "nccl" if where.type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(where)
    dist.init_process_group(backend)
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


def _comm_device() -> torch.device:
    """Where collective tensors must live: the rank's GPU under nccl, the CPU under gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_tensor(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over ranks, on ``t``'s device (``t`` itself in a single process)."""
    if not active():
        return t
    out = t.to(_comm_device())
    dist.all_reduce(out)
    return out.to(t.device)


def all_reduce_sum(values: dict[str, float]) -> dict[str, float]:
    """Sum float values over ranks (identity in a single process)."""
    if not active() or not values:
        return values
    keys = sorted(values)
    t = all_reduce_tensor(torch.tensor([float(values[k]) for k in keys], dtype=torch.float64))
    return dict(zip(keys, t.tolist()))


def broadcast_(tensors) -> None:
    """Overwrite ``tensors`` in place with rank 0's values (no-op in a single process)."""
    if not active():
        return
    for t in tensors:
        buf = t.data.to(_comm_device())
        dist.broadcast(buf, 0)
        t.data.copy_(buf)


def barrier() -> None:
    if active():
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
