"""A run's states, defined once, and what a status means to a reader: its state as it truly is, and its best.

States. The engine writes ``queued``, ``running``, ``finished``, ``stopped`` or ``failed`` (``STATES``) into
status.json; readers add three: ``died`` (the status claims a process that is gone), ``unknown`` (no
readable state), and, in the dashboard's listing, ``starting`` (launched, nothing written yet) and
``refused`` (a folder that resolves outside its root, never read). ``stopping...`` is what a page shows
for an active run that has been asked to stop.

Two rules every reader (``regnet compare``, ``regnet eval``, study, the dashboard) shares:

- A run whose status still says ``queued`` or ``running`` but whose process is gone has ``died``: it was
  killed (or crashed) before it could write its end; ``--resume`` continues it. If a stop had been asked
  for (a STOP file), it is ``stopped``: the user asked for that end, whether or not the process had to be
  killed before it wrote it.
- A run's best is the checkpointed best: ``best_metric``, ``best_value`` and ``best_epoch`` in status.json,
  the values best.pt was saved with. Never the maximum of a metrics column, which can disagree (a shipped
  run's final evaluation, an early-stop metric other than top-1). "Best" of any other metric is its value
  at that epoch (``regnet.runs.summary``).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from .layout import STOP
from .process import owner_alive

STATES = ("queued", "running", "finished", "stopped", "failed")
ACTIVE_STATES = ("queued", "running")
STOPPED = "stopped"
DIED = "died"
UNKNOWN = "unknown"
STARTING = "starting"
REFUSED = "refused"
STOPPING = "stopping..."
STARTING_OR_ACTIVE = (STARTING, *ACTIVE_STATES)  # a process is, or is about to be, at work
RESUMABLE_STATES = (STOPPED, "failed", DIED)  # what ``train --resume`` continues
FAILED_STATES = ("failed", DIED)  # ended without the user asking: shown with their error


def reported_state(status: dict, stop_requested: bool = False) -> str:
    """The state to show for ``status``: its own, or, when it claims to be active and its process is gone,
    ``stopped`` if a stop was asked for (``stop_requested``) and ``died`` if not."""
    state = status.get("state")
    if not isinstance(state, str) or not state:
        return UNKNOWN
    if state in ACTIVE_STATES and not owner_alive(status):
        return STOPPED if stop_requested else DIED
    return state


def stop_requested_at(run_dir: str | Path) -> float | None:
    """When a stop was asked for (the STOP file's time), or None when none was."""
    try:
        return os.stat(Path(run_dir) / STOP).st_mtime
    except OSError:
        return None


def finite(value, kind=float):
    """``value`` as ``kind`` when it is a finite int or float (not a bool), else None: how a reader takes a
    number from a file that may be damaged or foreign."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return kind(value)


@dataclass(frozen=True)
class Best:
    """The checkpointed best: which metric chose it, its value and its epoch (None where unknown)."""

    metric: str | None
    value: float | None
    epoch: int | None


def best_of(status: dict) -> Best:
    """The run's checkpointed best (the model in best.pt); missing or damaged values are None."""
    metric = status.get("best_metric")
    return Best(metric if isinstance(metric, str) else None, finite(status.get("best_value"), float),
                finite(status.get("best_epoch"), int))


NO_BEST = Best(None, None, None)
