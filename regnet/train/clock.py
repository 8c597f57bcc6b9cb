"""Where an epoch's time goes, on host clocks only: the "system" line of metrics.jsonl.

Each phase (waiting for the data loader, the training steps, evaluation, the regulator probe, the checkpoint
writes) is timed with ``time.perf_counter()`` around the host code that runs it; nothing here reads a device
value, so the steps are never synchronised for it. On a GPU a step's host time is the time to queue it: the
device's share shows up where the host next waits (the log step's read, evaluation). The process's CPU time
(``time.process_time()``, all its threads, not DataLoader workers) and peak resident memory
(``getrusage``) are read once at the epoch's end, and the peak GPU memory where the device is CUDA.
"""
from __future__ import annotations

import resource
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch

PHASES = ("data_s", "compute_s", "eval_s", "probe_s", "checkpoint_s")


@dataclass
class EpochClock:
    """Seconds per phase since the epoch (or a resumed part of it) started."""

    started: float = field(default_factory=time.perf_counter)
    cpu_started: float = field(default_factory=time.process_time)
    seconds: dict = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Add the block's wall seconds to ``name`` (one of ``PHASES``)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] += seconds

    def record(self, device: torch.device) -> dict:
        """The phases' seconds, ``other_s`` (logging, status writes: the rest), ``wall_s`` (their sum), the
        process's CPU seconds and cores used over the epoch, its peak RSS and, on CUDA, its peak GPU memory (MiB)."""
        wall = time.perf_counter() - self.started
        cpu = time.process_time() - self.cpu_started
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        record = {**self.seconds, "other_s": max(wall - sum(self.seconds.values()), 0.0), "wall_s": wall,
                  "cpu_s": cpu, "cpu_cores": cpu / max(wall, 1e-9),
                  "max_rss_mb": peak_rss / (2**20 if sys.platform == "darwin" else 2**10)}
        if device.type == "cuda":
            record["gpu_max_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        return record
