"""A run's summary and the comparison table: what every listing, comparison and page says about a run.

One reading of a run folder gives its identity (folder, model, data set), state (``state.py``'s rules),
progress (epochs and steps done of all), timing (start, last write, training time, average speed), its
best (the checkpointed best, and every other epoch metric at that same epoch: one definition of "best"
for every metric), its final epoch's metrics, its config, and the user's tags and note. ``regnet compare``,
``grid``, ``study`` and the dashboard's Runs, Compare and Live pages all read runs through
:func:`read_summary`, and :func:`comparison_row` is the one comparison table's row.

Like every reader of the contract it is tolerant: a damaged file is a sentence in ``problem`` or
``notes``, never an exception, so a table of thousands of runs never stops at one bad folder.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from .annotations import read_note, read_tags
from .layout import CONFIG, METRICS, STATUS
from .read import MetricsChunk, read_all_metrics, read_config_dict, read_status
from .state import (ACTIVE_STATES, DIED, NO_BEST, UNKNOWN, Best, best_of, finite, reported_state,
                    stop_requested_at)

# The epoch metrics the comparison table shows at the best epoch and at the last (docs/run-folder.md).
COMPARED_METRICS = ("val_top1", "val_top5", "val_macro_f1", "val_loss", "train_loss")
_NOT_METRICS = ("kind", "epoch", "step", "time")


@dataclass(frozen=True)
class EpochMetrics:
    """What a run's metrics.jsonl says per epoch: each epoch line's numbers, the run's speed, its first time."""

    by_epoch: dict = field(default_factory=dict)  # {epoch: {metric: value}}; a repeated epoch's later line wins
    images_per_s: float | None = None  # the run's average over its completed epochs
    first_time: float | None = None  # when its first line was written
    damaged: int = 0
    problem: str | None = None

    @property
    def final(self) -> dict:
        """The last epoch's metrics ({} before the first epoch ends)."""
        return self.by_epoch[max(self.by_epoch)] if self.by_epoch else {}

    def at(self, epoch: int | None) -> dict:
        return self.by_epoch.get(epoch, {}) if epoch is not None else {}


def epoch_metrics(chunk: MetricsChunk) -> EpochMetrics:
    """The per-epoch numbers of a metrics read, with the run's average training speed.

    Each epoch line's images/s is that epoch's training images over its training seconds; epochs hold the
    same number of images, so the run's average (all images over all training seconds) is their harmonic
    mean. Not the last step's value, which is one window of a few steps and swings with the machine's load.
    """
    by_epoch, times = {}, []
    for row in chunk.rows:
        moment = finite(row.get("time"))
        if moment:
            times.append(moment)
        epoch = finite(row.get("epoch"), int)
        if row.get("kind") == "epoch" and epoch is not None:
            by_epoch[epoch] = {key: finite(value) for key, value in row.items()
                               if key not in _NOT_METRICS and finite(value) is not None}
    speeds = [values["images_per_s"] for values in by_epoch.values() if values.get("images_per_s", 0) > 0]
    average = len(speeds) / sum(1.0 / speed for speed in speeds) if speeds else None
    return EpochMetrics(dict(sorted(by_epoch.items())), average, min(times) if times else None, chunk.damaged,
                        chunk.problem)


def read_epoch_metrics(run_dir: str | Path, completed_epochs: int | None = None) -> EpochMetrics:
    """:func:`epoch_metrics` of the run's whole metrics.jsonl (``completed_epochs`` is for caching readers)."""
    return epoch_metrics(read_all_metrics(run_dir))


@dataclass
class RunSummary:
    """One run as every reader reports it. ``state`` is the recorded one until :func:`settle` asks the process."""

    path: Path
    state: str = UNKNOWN
    model: str | None = None
    dataset: str | None = None
    epoch: int | None = None  # epochs completed
    epochs: int | None = None
    step: int | None = None
    steps_per_epoch: int | None = None
    started_at: float | None = None
    updated_at: float | None = None
    elapsed_s: float | None = None  # training time
    images_per_s: float | None = None
    params: int | None = None
    macs: int | None = None
    best: Best = NO_BEST
    at_best: dict = field(default_factory=dict)  # every epoch metric at the best epoch
    final: dict = field(default_factory=dict)  # every epoch metric at the last epoch
    config: dict = field(default_factory=dict)  # config.yaml as plain dicts ({} when missing, damaged or not read)
    error: str | None = None
    owner: dict = field(default_factory=dict)  # pid, pid_start, host: whom to ask whether it still runs
    stop_requested_at: float | None = None
    tags: tuple[str, ...] = ()
    note: str = ""
    problem: str | None = None  # status.json exists but is damaged
    notes: tuple[str, ...] = ()  # every file that could not be used, one sentence each
    recorded: bool = True  # False: the folder holds nothing a run writes

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def pid(self) -> int | None:
        return finite(self.owner.get("pid"), int)

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS


def _text(value) -> str | None:
    return value if isinstance(value, str) and value else None


def _section_name(config: dict, section: str) -> str | None:
    part = config.get(section)
    return _text(part.get("name")) if isinstance(part, dict) else None


def _dataset_name(status: dict, config: dict) -> str | None:
    """The data set as listings and filters show it: status.json's name, else the config's. A run recorded
    as "imagefolder" (as CIFAR-10 folders were before they were named so) is named by the class folders of
    its data root when that is still there (``recognised_name``), so old and new runs group alike."""
    name = _text(status.get("dataset")) or _section_name(config, "data")
    if name != "imagefolder":
        return name
    from regnet.data.folders import folder_class_names  # torch, loaded only for such a run
    from regnet.data.info import recognised_name

    data = config.get("data")
    root = data.get("root") if isinstance(data, dict) else None
    return recognised_name(name, (folder_class_names(root) if isinstance(root, str) else None) or ())


def _read_config(run_dir: Path, notes: list[str]) -> dict:
    try:
        return read_config_dict(run_dir)
    except ValueError as error:
        if os.path.lexists(run_dir / CONFIG):
            notes.append(str(error))
        return {}


def recorded_summary(run_dir: str | Path,
                     metrics_of: Callable[[Path, int | None], EpochMetrics] = read_epoch_metrics,
                     with_config: bool = True) -> RunSummary:
    """What the run's files say, before asking whether its process lives (see :func:`settle`).

    ``metrics_of(run_dir, completed_epochs)`` reads the metrics; a lister passes a cached reader. A lister
    that shows no config passes ``with_config=False``: config.yaml (a YAML parse, the costliest read of a
    listing of thousands) is then read only when status.json does not name the model and data set.
    """
    run_dir = Path(run_dir)
    status, problem, notes = {}, None, []
    try:
        status = read_status(run_dir)
    except ValueError as error:
        problem = str(error) if os.path.lexists(run_dir / STATUS) else None
        notes.append(str(error))
    # An "imagefolder" run is named by its data root's classes (``_dataset_name``), which the config holds.
    needed = with_config or not (_text(status.get("model")) and _text(status.get("dataset"))) or (
        status.get("dataset") == "imagefolder")
    config = _read_config(run_dir, notes) if needed else {}
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    epoch = finite(status.get("epoch"), int)
    metrics = metrics_of(run_dir, epoch)
    if metrics.problem:
        notes.append(metrics.problem)
    elif metrics.damaged:
        notes.append(f"skipped {metrics.damaged} damaged line{'s' if metrics.damaged != 1 else ''} of {METRICS}")
    best = best_of(status)
    return RunSummary(
        path=run_dir, state=_text(status.get("state")) or UNKNOWN,
        model=_text(status.get("model")) or _section_name(config, "model"),
        dataset=_dataset_name(status, config),
        epoch=epoch, epochs=finite(status.get("epochs"), int) or finite(train.get("epochs"), int),
        step=finite(status.get("step"), int), steps_per_epoch=finite(status.get("steps_per_epoch"), int),
        started_at=finite(status.get("started_at")) or metrics.first_time, updated_at=finite(status.get("updated_at")),
        elapsed_s=finite(status.get("elapsed_s")),
        images_per_s=metrics.images_per_s or finite(status.get("images_per_s")),
        params=finite(status.get("params"), int), macs=finite(status.get("macs"), int),
        best=best, at_best=metrics.at(best.epoch), final=metrics.final, config=config,
        error=_text(status.get("error")), owner={key: status.get(key) for key in ("pid", "pid_start", "host")},
        stop_requested_at=stop_requested_at(run_dir), tags=tuple(read_tags(run_dir)), note=read_note(run_dir),
        problem=problem, notes=tuple(notes), recorded=bool(status or config or problem))


def settle(summary: RunSummary) -> RunSummary:
    """``summary`` with the state readers report now (``state.py``): an active run whose process is gone has
    ``died``, or ``stopped`` when a stop was asked for; a died run's error says how to continue it."""
    if not summary.active:
        return summary
    state = reported_state({**summary.owner, "state": summary.state}, summary.stop_requested_at is not None)
    if state == summary.state:
        return summary
    error = summary.error
    if state == DIED and not error:
        pid = f" (pid {summary.pid})" if summary.pid else ""
        error = (f"Its process{pid} ended without writing a final status; continue it with "
                 f"python -m regnet train --resume {summary.path}.")
    return replace(summary, state=state, error=error)


def read_summary(run_dir: str | Path) -> RunSummary:
    """The run as it is now: its files read (:func:`recorded_summary`) and its state settled."""
    return settle(recorded_summary(run_dir))


def comparison_row(summary: RunSummary) -> dict:
    """The comparison table's row of a run: identity, state, size, the checkpointed best (its metric, value
    and epoch), each compared metric at the best epoch (``best_<metric>``) and at the last (``final_<metric>``),
    training time and speed, and the damaged files in ``note``. Plain values, ready for JSON."""
    model = summary.config.get("model") if isinstance(summary.config.get("model"), dict) else {}
    row = {"run": summary.run_id, "model": summary.model, "options": dict(model.get("options") or {}),
           "dataset": summary.dataset, "state": summary.state,
           "epochs": f"{_or_unknown(summary.epoch)}/{_or_unknown(summary.epochs)}",
           "params": summary.params, "macs": summary.macs, "best_metric": summary.best.metric,
           "best_value": summary.best.value, "best_epoch": summary.best.epoch}
    for metric in COMPARED_METRICS:
        row[f"best_{metric}"] = summary.at_best.get(metric)
        row[f"final_{metric}"] = summary.final.get(metric)
    row.update(train_time_s=summary.elapsed_s, images_per_s=summary.images_per_s, note="; ".join(summary.notes) or None)
    return row


def _or_unknown(value) -> object:
    return "?" if value is None else value
