"""Where torch work runs (``trainer.device``) and in which precision (``trainer.precision``).

``auto`` means CUDA when it exists, else the CPU. An explicit CUDA request on a machine without CUDA is a
:class:`~ghrs.errors.UserError` (exit 2), never a silent fallback to the CPU. Under DDP (``torchrun``)
each rank takes the GPU of its ``LOCAL_RANK``.
"""

from __future__ import annotations

import os
from contextlib import nullcontext

import torch

from ghrs.errors import UserError

DEVICES = "auto|cpu|cuda|cuda:N"
PRECISIONS = ("fp32", "bf16")


def check_spec(device: str, precision: str = "fp32") -> None:
    """Reject malformed ``trainer.device`` / ``trainer.precision`` values (no hardware is queried)."""
    spec = str(device)
    index = spec.split(":", 1)[1] if spec.startswith("cuda:") else "0"
    if spec not in ("auto", "cpu", "cuda") and not (spec.startswith("cuda:") and index.isdigit()):
        raise UserError(f"trainer.device must be {DEVICES}, got {spec!r}")
    if precision not in PRECISIONS:
        raise UserError(f"trainer.precision must be one of {'|'.join(PRECISIONS)}, got {precision!r}")


def _ddp_local_rank() -> int | None:
    """LOCAL_RANK of a multi-process torchrun launch, else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "LOCAL_RANK" in os.environ:
        return int(os.environ["LOCAL_RANK"])
    return None


def resolve(device: str = "auto", precision: str = "fp32") -> torch.device:
    """The torch.device for ``trainer.device`` on this machine (and this rank under DDP).

    Raises UserError for CUDA asked for where there is none, a GPU index that does not exist, an explicit
    GPU index under DDP (each rank uses cuda:LOCAL_RANK), or bf16 without CUDA.
    """
    check_spec(device, precision)
    spec = str(device)
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        if precision == "bf16":
            raise UserError("trainer.precision=bf16 needs CUDA (bf16 autocast runs on GPUs only); "
                            "use trainer.precision=fp32 on the CPU")
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError(f"trainer.device={device} but this machine has no CUDA device (torch "
                        f"{torch.__version__}); use trainer.device=cpu or auto")
    local = _ddp_local_rank()
    if local is not None:
        if spec != "cuda":
            raise UserError(f"trainer.device={device} under DDP: use trainer.device=cuda (or auto); "
                            f"each rank takes cuda:LOCAL_RANK")
        spec = f"cuda:{local}"
    dev = torch.device(spec)
    index = 0 if dev.index is None else dev.index
    if index >= torch.cuda.device_count():
        raise UserError(f"trainer.device={spec} but only {torch.cuda.device_count()} CUDA device(s) exist; "
                        f"use cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return dev


def autocast(device: torch.device, precision: str = "fp32"):
    """bf16 autocast context on CUDA for ``precision == "bf16"``, a no-op otherwise."""
    if precision == "bf16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def to_device(batch, device: torch.device):
    """``batch`` with every tensor (also inside tuples, lists and dicts) moved to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def module_device(module: torch.nn.Module) -> torch.device:
    """Where ``module``'s parameters (or buffers) live; the CPU for a module without any."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")
