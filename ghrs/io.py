"""Atomic artifact writes: a crash mid-write never leaves a truncated file behind."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import torch

TEMP_SUFFIX = ".tmp"  # temporary files are ".<name>.<random>.tmp" next to their target
_UMASK_LOCK = threading.Lock()


def _file_mode() -> int:
    """The mode a plain ``open()`` would give a new file (0644 under the usual umask 022): ``mkstemp``
    creates 0600, which would keep artefacts from the other users of a shared run dir."""
    with _UMASK_LOCK:  # reading the umask means setting it: serialise against other writer threads
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def _atomic(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        os.fchmod(fd, _file_mode())
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
