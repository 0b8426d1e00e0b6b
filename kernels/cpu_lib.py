"""Loader and threading helpers of the compiled CPU kernels (``kernels/csrc``, built by ``setup.py``).

The kernels are plain C functions in the extension module ``kernels._cpu_kernels``, called through
ctypes, which releases the GIL: a batch is split into disjoint slices, one per torch intra-op thread, and
each slice is one call. When the extension was not built (no C compiler at install time) :func:`library`
is None and the callers fall back to their torch code.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from itertools import pairwise

import torch

__all__ = [
    "SUFFIX", "available", "channels_contiguous", "check", "handles", "kernel", "library", "ptr", "run_slices", "slices",
    "strides_bt",
]

SUFFIX = {torch.float32: "f32", torch.float64: "f64"}  # the dtypes every kernel is compiled for
_I64, _PTR = ctypes.c_int64, ctypes.c_void_p
_ROW = [_PTR, _I64, _I64]  # a (batch, L, dim) tensor: pointer, batch stride, time stride
_BC = [_PTR, _I64, _I64, _I64, _I64]  # B or C (batch, G, N, L): pointer and its four strides
# shape; u, delta, z; A; B, C; D; delta_bias, softplus; mask (pointer, batch and time strides)
_SCAN = [_I64] * 6 + _ROW * 3 + [_PTR] + _BC * 2 + [_PTR] + [_PTR, _I64] + [_PTR, _I64, _I64]
# argument types of every kernel (see the C sources for their meaning)
_SIGNATURES = {
    "sscan_fwd": _SCAN + [_PTR, _PTR],  # y, ckpt
    "sscan_bwd": _SCAN + [_PTR] + _ROW + [_PTR] * 9,  # ckpt; dy; dlast, du, ddelta, dz, dB, dC, dA, dD, dbias
    "cconv_fwd": [_I64] * 4 + _ROW + [_PTR] * 3,  # shape; x; w, bias, y
    "cconv_bwd": [_I64] * 4 + _ROW + [_PTR] * 2 + _ROW + [_PTR] * 3,  # shape; x; w, bias; dy; dx, dw, dbias
}


@lru_cache(maxsize=1)
def library() -> ctypes.CDLL | None:
    """The compiled library, or None when the extension was not built."""
    spec = importlib.util.find_spec("kernels._cpu_kernels")
    if spec is None or spec.origin is None:
        return None
    lib = ctypes.CDLL(spec.origin)
    for name, argtypes in _SIGNATURES.items():
        for suffix in SUFFIX.values():
            fn = getattr(lib, f"{name}_{suffix}")
            fn.argtypes, fn.restype = argtypes, None
    return lib


def available() -> bool:
    """True when the compiled kernels were built and load."""
    return library() is not None


def handles(t: torch.Tensor) -> bool:
    """Whether the compiled kernels take this tensor: on the CPU, float32 or float64, and the kernels built."""
    return t.device.type == "cpu" and t.dtype in SUFFIX and available()


def kernel(name: str, dtype: torch.dtype):
    """The C function ``name`` for ``dtype`` (float32 or float64)."""
    lib = library()
    if lib is None:
        raise RuntimeError("the compiled CPU kernels are not built (reinstall the project with a C compiler)")
    return getattr(lib, f"{name}_{SUFFIX[dtype]}")


@lru_cache(maxsize=4)
def _pool(workers: int, pid: int) -> ThreadPoolExecutor:
    """A pool per process (``pid``): a forked child would inherit a pool whose threads it does not have."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cpu-kernels")


def slices(batch: int) -> list[tuple[int, int]]:
    """Disjoint batch slices, one per torch intra-op thread (at most one per batch element)."""
    n = max(1, min(torch.get_num_threads(), batch))
    bounds = [batch * i // n for i in range(n + 1)]
    return [(b0, b1) for b0, b1 in pairwise(bounds) if b1 > b0]


def run_slices(call: Callable[[int, int, int], None], parts: list[tuple[int, int]]) -> None:
    """Run ``call(i, b0, b1)`` for every slice ``i`` of ``parts`` (in threads when there are several)."""
    if len(parts) == 1:
        call(0, *parts[0])
    else:
        for future in [_pool(len(parts), os.getpid()).submit(call, i, b0, b1) for i, (b0, b1) in enumerate(parts)]:
            future.result()


def ptr(t: torch.Tensor | None, b0: int = 0) -> int | None:
    """Address of batch row ``b0`` of a tensor (None for a missing tensor)."""
    if t is None:
        return None
    return t.data_ptr() + b0 * t.stride(0) * t.element_size()


def channels_contiguous(t: torch.Tensor | None, dim: int) -> torch.Tensor | None:
    """``t`` with stride 1 along its channel axis ``dim``, as the kernels read it: a view when it already
    is, else a copy in that layout (same shape)."""
    if t is None or t.stride(dim) == 1 or t.shape[dim] == 1:
        return t
    return t.movedim(dim, -1).contiguous().movedim(-1, dim)


def strides_bt(t: torch.Tensor | None, time_dim: int) -> tuple[int, int]:
    """(batch, time) element strides of a channels-contiguous tensor ((0, 0) when missing)."""
    return (0, 0) if t is None else (t.stride(0), t.stride(time_dim))


def check(tensors: dict[str, torch.Tensor | None], dtype: torch.dtype) -> None:
    """Every given tensor is a CPU tensor of ``dtype`` (the kernels read raw memory)."""
    for name, t in tensors.items():
        if t is not None and (t.dtype != dtype or t.device.type != "cpu"):
            raise ValueError(f"{name}: expected a CPU {dtype} tensor, got {t.dtype} on {t.device}")
