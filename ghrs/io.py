"""Atomic artifact writes: a crash mid-write never leaves a truncated file behind."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def _atomic(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    return _atomic(path, lambda fh: fh.write(data))


def write_json_atomic(path: Path, obj: Any) -> Path:
    return write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False, default=float) + "\n").encode())


def torch_save_atomic(path: Path, obj: Any) -> Path:
    return _atomic(path, lambda fh: torch.save(obj, fh))


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Write a matplotlib figure atomically (PNG into a temporary file, then renamed) and close it."""
    import io

    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", dpi=dpi)
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())
    return path
