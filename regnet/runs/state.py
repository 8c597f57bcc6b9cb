"""What a run's status means to a reader: its state as it truly is, and its best result.

Two definitions every reader (``regnet compare``, ``regnet eval``, the dashboard) shares:

- A run whose status still says ``queued`` or ``running`` but whose process is gone is ``died``: it was
  killed (or crashed) before it could write its end. ``--resume`` continues it.
- A run's best is the checkpointed best: ``best_metric``, ``best_value`` and ``best_epoch`` in status.json,
  the values best.pt was saved with. Never the maximum of a metrics column, which can disagree (a shipped
  run's final evaluation, an early-stop metric other than top-1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .process import owner_alive

STATES = ("queued", "running", "finished", "stopped", "failed")
ACTIVE_STATES = ("queued", "running")
DIED = "died"


def reported_state(status: dict) -> str:
    """The state to show for ``status``: its own, or ``died`` when it claims to be active and its process is gone."""
    state = status.get("state")
    if not isinstance(state, str) or not state:
        return "unknown"
    if state in ACTIVE_STATES and not owner_alive(status):
        return DIED
    return state


@dataclass(frozen=True)
class Best:
    metric: str | None
    value: float | None
    epoch: int | None


def _number(value, kind):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return kind(value)


def best_of(status: dict) -> Best:
    """The run's checkpointed best (the model in best.pt); missing or damaged values are None."""
    metric = status.get("best_metric")
    return Best(metric if isinstance(metric, str) else None, _number(status.get("best_value"), float),
                _number(status.get("best_epoch"), int))
