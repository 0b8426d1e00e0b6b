"""One writer per run directory: a lock file, a run id for log lines, and stale temporary files.

A training run holds an exclusive ``flock`` on ``<run dir>/.ghrs.lock`` for its whole life; a second
trainer on the same directory is refused with a :class:`RunDirBusy` naming the holder. The kernel drops
the lock when its process exits, however it exits (kill -9 included), so a lock file left behind is
never stale: the next run simply takes it. Short writers (``ghrs.recommend ... save=true``) wait for the
lock instead of failing, which serialises their read-modify-write of the model file.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ghrs.errors import UserError
from ghrs.io import TEMP_SUFFIX

log = logging.getLogger(__name__)

LOCK_FILE = ".ghrs.lock"
NO_RUN_ID = "-"
_run_id = NO_RUN_ID


class RunDirBusy(UserError):
    """Another process is writing the run directory."""


def new_run_id() -> str:
    """A short random id for one training process (8 hex digits)."""
    return secrets.token_hex(4)


def current_run_id() -> str:
    return _run_id


def set_run_id(run_id: str) -> None:
    """Tag every log record from now on with ``run_id`` (the ``%(run_id)s`` field of the log format)."""
    global _run_id
    _run_id = run_id


def _install_record_factory() -> None:
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_ghrs_run_id", False):
        return

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        record.run_id = _run_id
        return record

    factory._ghrs_run_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


_install_record_factory()


def clean_stale_temps(run_dir: Path) -> list[Path]:
    """Remove ``.<name>.<random>.tmp`` files that an interrupted atomic write left in ``run_dir``.

    Call it holding the run dir's lock: no other writer can have a temporary file in flight then."""
    removed = []
    for tmp in Path(run_dir).glob(f".*{TEMP_SUFFIX}"):
        if tmp.is_file() and tmp.name.count(".") >= 3:
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    if removed:
        log.info("removed %d stale temporary file(s) from an interrupted write: %s", len(removed),
                 ", ".join(p.name for p in removed[:5]))
    return removed


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another process"
    return f"{info.get('purpose', 'a writer')} (pid {info.get('pid', '?')}, run id {info.get('run_id', '?')})"


@contextmanager
def run_lock(run_dir: Path | str, purpose: str, wait: float = 0.0, run_id: str | None = None) -> Iterator[Path]:
    """Hold the exclusive writer lock of ``run_dir`` (created if needed) for the ``with`` block.

    Args:
        purpose: what the holder does ("training", "recommend save"): shown to a refused writer.
        wait: seconds to wait for the lock (0: refuse at once). A holder that is training is never
            waited for.
    Raises :class:`RunDirBusy` when the lock is not obtained. Stale temporary files are removed once held.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _holder(path)
                if time.monotonic() >= deadline or holder.startswith("training"):
                    raise RunDirBusy(
                        f"run dir {run_dir} is in use by {holder}: wait for it to finish, or use another run "
                        "dir (hydra.run.dir=...)") from None
                time.sleep(0.05)
        info = {"pid": os.getpid(), "purpose": purpose, "run_id": run_id or _run_id,
                "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        clean_stale_temps(run_dir)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the flock


# Config keys that may change when a run is resumed (the last components of a dotted key; ``trainer.lr``
# also matches ``model.trainer.lr``). ``trainer.lr`` / ``weight_decay`` are applied to the resumed
# optimiser; every other key shapes the model, its data or its batches and must match the checkpoint.
SAFE_ON_RESUME = ("trainer.max_epochs", "trainer.patience", "trainer.progress", "trainer.resume", "trainer.lr",
                  "trainer.weight_decay", "trainer.grad_clip", "trainer.device", "trainer.precision",
                  "autoencoder.device", "item_autoencoder.device")  # the GHRS autoencoders follow trainer.device
SAFE_PREFIXES_ON_RESUME = ("eval.", "hydra.")


def _flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(cfg, dict):
        out: dict[str, Any] = {}
        for k, v in cfg.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: cfg}


def _safe_on_resume(key: str) -> bool:
    return key.startswith(SAFE_PREFIXES_ON_RESUME) or any(key == s or key.endswith("." + s) for s in SAFE_ON_RESUME)


def check_resume_config(stored: dict, current: dict, checkpoint: Path | str) -> None:
    """Refuse to resume a checkpoint with a config that differs in a key that shapes the model.

    ``stored``, ``current``: resolved configs (plain nested dicts). Raises a UserError naming the keys."""
    old, new = _flatten(stored), _flatten(current)
    changed = sorted(k for k in old.keys() | new.keys()
                     if old.get(k, "<unset>") != new.get(k, "<unset>") and not _safe_on_resume(k))
    if changed:
        shown = ", ".join(f"{k} ({old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r})" for k in changed[:8])
        more = f" and {len(changed) - 8} more" if len(changed) > 8 else ""
        raise UserError(
            f"cannot resume {checkpoint}: the config differs from the checkpoint's in {shown}{more}; set them "
            f"back, or train in a new run dir (keys that may change on resume: "
            f"{', '.join(SAFE_ON_RESUME)}, eval.*)")
