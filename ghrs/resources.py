"""Peak resident memory of a block of code, for per-stage figures in metrics.json and bench/scaling.py.

``ru_maxrss`` is the peak of the whole process, so in a Hydra multirun (all jobs in one process) or across
the stages of one run it cannot tell which part used the memory. :class:`PeakMemory` samples the current
resident set size from ``/proc/self/statm`` in a background thread while the block runs (Linux; elsewhere
it falls back to ``ru_maxrss``) and, on a GPU, reads torch's peak allocated CUDA memory.

:class:`RunMemory` turns these into per-run figures: each stage's peak minus the resident memory when the
run started, so a run inside a multirun (or a resumed run) reports its own memory, not what earlier jobs
of the same process left behind.
"""

from __future__ import annotations

import os
import resource
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Self

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def current_rss_mb() -> float | None:
    """Resident set size now, in MiB (None where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE / 2**20
    except OSError:
        return None


class PeakMemory:
    """``with PeakMemory() as m: ...`` then ``m.peak_mb`` (peak RSS inside the block, MiB),
    ``m.delta_mb`` (peak minus the RSS at entry) and ``m.cuda_peak_mb`` (None without CUDA)."""

    def __init__(self, interval_s: float = 0.02):
        self.interval_s = interval_s
        self.peak_mb = self.start_mb = self.delta_mb = self.cuda_peak_mb = None
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            rss = current_rss_mb()
            if rss is not None and rss > self.peak_mb:
                self.peak_mb = rss

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> Self:
        self._stop.clear()
        self.start_mb = current_rss_mb()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        if self.start_mb is not None:
            self.peak_mb = self.start_mb
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> Self:
        if self.start_mb is None:
            self.peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak
        else:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self.peak_mb, current_rss_mb() or 0.0)
            self.delta_mb = self.peak_mb - self.start_mb
        if torch.cuda.is_available():
            self.cuda_peak_mb = torch.cuda.max_memory_allocated() / 2**20
        return self


class RunMemory:
    """Per-run stage memory: ``with run.stage("fit"): ...`` then ``run.stage_mb["fit"]``.

    ``base_mb`` is the resident set size when the run started (interpreter, imports, whatever earlier runs
    of the process still hold); ``stage_mb[name]`` is the stage's peak RSS minus ``base_mb`` (MiB; the run's
    own memory at its peak in that stage, including what earlier stages of this run keep alive) and
    ``peak_mb`` the run's absolute peak RSS. Memory an earlier run freed but the allocator kept may be
    reused without raising the RSS, so inside a multirun the figures are lower bounds; a fresh process
    gives exact ones. ``cuda_mb[name]``: torch's peak allocated CUDA memory in the stage, when on a GPU.
    """

    def __init__(self, interval_s: float = 0.02):
        self.interval_s = interval_s
        self.base_mb = current_rss_mb()
        self.peak_mb = self.base_mb
        self.stage_mb: dict[str, float] = {}
        self.cuda_mb: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[PeakMemory]:
        with PeakMemory(self.interval_s) as mem:
            yield mem
        if self.base_mb is not None:
            self.stage_mb[name] = round(max(mem.peak_mb - self.base_mb, 0.0), 1)
            self.peak_mb = max(self.peak_mb, mem.peak_mb)
        else:  # no /proc: only the process peak is known
            self.stage_mb[name] = round(mem.peak_mb, 1)
            self.peak_mb = max(self.peak_mb or 0.0, mem.peak_mb)
        if mem.cuda_peak_mb is not None:
            self.cuda_mb[name] = round(mem.cuda_peak_mb, 1)
