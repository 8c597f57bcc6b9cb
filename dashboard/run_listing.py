"""What the dashboard's pages show about runs: run rows, live metric tails, tables (the folder itself: regnet.runs).

A run folder (docs/run-folder.md) is written by ``python -m regnet train`` whoever started it, and read here
only through the contract (``regnet.runs``): its file names, its run-id rule, its tolerant readers, its
liveness check and its definition of best. This module keeps what is shaped for pages: a row per run
(``RunInfo``), a listing that re-reads a folder only when its status changed (so 10,000 runs list in a
fraction of a second once scanned), per-file metric tails, and the tables. Nothing here keeps state that a
browser refresh or a server restart could lose; damaged files become facts on the page, never exceptions.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISREG
from typing import Iterable, Sequence

import pandas as pd

from regnet.runs import (ACTIVE_STATES as CONTRACT_ACTIVE, CONFIG, LAUNCHES, LOG, METRICS, STATUS, STOP,
                         Best, best_of, is_run_id, owner_alive, read_all_metrics, read_config_dict, read_metrics_since,
                         read_note, read_regular, read_status, read_tags, reported_state, scan_runs, tail_text)

# Contract states plus "starting" (launched, nothing written yet); "died", "refused" and "unknown" are not active.
ACTIVE_STATES = ("starting", *CONTRACT_ACTIVE)
REFUSED = "refused"
STOPPING = "stopping..."  # shown from a stop request until the run's status says it has stopped
SHIPPED_PREFIX = "shipped/"

# Metrics logged on every step line: dense, so they are smoothed and read from step lines when present.
STEP_METRICS = ("train_loss", "lr", "images_per_s")
EPOCH_METRICS = ("train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "val_macro_f1", "lr",
                 "epoch_time_s", "images_per_s")


# --------------------------------------------------------------------------------------------- metrics.jsonl

@dataclass
class _Tail:
    offset: int = 0
    rows: list = field(default_factory=list)
    damaged: int = 0
    identity: tuple = ()


@dataclass
class MetricsRead:
    """All rows of a metrics file so far, the damaged lines skipped, and why the file cannot be read (if so)."""

    rows: list
    damaged: int = 0
    problem: str | None = None


class MetricsTail:
    """Per-file byte offsets and parsed rows, so a refresh of a live chart reads only what is new.

    Shared by every browser session of the server (module-level instance below): reading is idempotent,
    and a lock keeps two sessions from appending the same lines twice. A file that shrank or was
    replaced (another inode) is read again from the start.
    """

    def __init__(self) -> None:
        self._tails: dict[str, _Tail] = {}
        self._lock = threading.Lock()

    def read(self, path: Path) -> MetricsRead:
        key = os.path.abspath(path)
        with self._lock:
            tail = self._tails.setdefault(key, _Tail())
            try:
                stat = os.stat(key)
            except OSError:
                self._tails[key] = _Tail()
                return MetricsRead([])
            if (tail.identity and tail.identity != (stat.st_ino,)) or stat.st_size < tail.offset:
                tail = self._tails[key] = _Tail()
            tail.identity = (stat.st_ino,)
            problem = None
            if stat.st_size > tail.offset or not S_ISREG(stat.st_mode):  # a folder or device: say why, read nothing
                chunk = read_metrics_since(key, tail.offset)
                tail.rows.extend(chunk.rows)
                tail.offset, tail.damaged, problem = chunk.offset, tail.damaged + chunk.damaged, chunk.problem
            return MetricsRead(list(tail.rows), tail.damaged, problem)

    def offset(self, path: Path) -> int:
        """Bytes consumed so far for ``path`` (0 when never read)."""
        with self._lock:
            tail = self._tails.get(os.path.abspath(path))
            return tail.offset if tail else 0


LIVE_METRICS = MetricsTail()


def metrics_frame(rows: Sequence[dict], steps_per_epoch: int | None = None) -> pd.DataFrame:
    """Rows of metrics.jsonl as a table with an ``x_epoch`` column (fractional epochs for step lines).

    Step lines sit at ``step / steps_per_epoch`` so that step and epoch lines share one epoch axis. When
    the status does not say how many steps an epoch has, it is taken from the last epoch line.
    """
    frame = pd.DataFrame([r for r in rows if r.get("kind") in ("step", "epoch")])
    if frame.empty:
        return pd.DataFrame(columns=["kind", "epoch", "step", "x_epoch"])
    for column in ("epoch", "step"):
        if column not in frame:
            frame[column] = math.nan
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    for column in set(STEP_METRICS + EPOCH_METRICS) & set(frame.columns):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    epochs = frame[frame["kind"] == "epoch"].dropna(subset=["epoch", "step"])
    if not steps_per_epoch and not epochs.empty and epochs["epoch"].iloc[-1] > 0:
        steps_per_epoch = epochs["step"].iloc[-1] / epochs["epoch"].iloc[-1]
    is_epoch = frame["kind"] == "epoch"
    frame["x_epoch"] = frame["epoch"].where(is_epoch, frame["step"] / steps_per_epoch if steps_per_epoch else math.nan)
    return frame.reset_index(drop=True)


def ema(values: Iterable[float], weight: float) -> list[float]:
    """Exponential moving average as TensorBoard draws it: s_t = w * s_(t-1) + (1 - w) * v_t, s_0 = v_0.

    ``weight`` 0 returns the values unchanged; missing values (NaN/None) stay missing and do not reset
    the average.
    """
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"Smoothing weight {weight} must be in [0, 1).")
    smoothed, last = [], None
    for value in values:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            smoothed.append(math.nan)
            continue
        last = value if last is None else weight * last + (1.0 - weight) * value
        smoothed.append(last)
    return smoothed


# --------------------------------------------------------------------------------------------- runs

@dataclass
class RunInfo:
    """One row of the Runs page: what status.json (or the launch record) says, with the state readers report."""

    key: str  # what the pages select by: the run id, or "shipped/<name>"
    path: Path
    source: str  # "run" | "shipped"
    state: str  # contract states, "died", plus "starting" (launched, nothing written yet), "refused", "unknown"
    model: str | None = None
    dataset: str | None = None
    epoch: int | None = None
    epochs: int | None = None
    step: int | None = None
    steps_per_epoch: int | None = None
    started_at: float | None = None
    updated_at: float | None = None
    elapsed_s: float | None = None
    best_metric: str | None = None
    best_value: float | None = None
    best_epoch: int | None = None
    images_per_s: float | None = None
    params: int | None = None
    macs: int | None = None
    error: str | None = None
    pid: int | None = None
    owner: dict = field(default_factory=dict)  # pid, pid_start, host: whom to ask whether it still runs
    stop_requested_at: float | None = None
    problem: str | None = None  # something wrong with the folder itself (e.g. corrupt status.json)
    log_path: Path | None = None
    tags: tuple[str, ...] = ()
    note: str = ""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def shown_state(self) -> str:
        """The state a page shows: ``stopping...`` while an active run has been asked to stop."""
        return STOPPING if self.active and self.stop_requested_at is not None else self.state

    @property
    def best(self) -> Best:
        """The contract's best (``regnet.runs.best_of``): the checkpointed best, whatever its metric."""
        return Best(self.best_metric, self.best_value, self.best_epoch)

    @property
    def refused(self) -> bool:
        return self.state == REFUSED

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS


def _number(value, kind=float):
    if isinstance(value, bool):
        return None
    try:
        number = None if value is None else kind(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if number is None or math.isfinite(number) else None


def _text(value) -> str | None:
    return value if isinstance(value, str) else None


def _stop_time(run_dir: Path) -> float | None:
    try:
        return (run_dir / STOP).stat().st_mtime
    except OSError:
        return None


def _read_recorded(run_dir: Path, key: str, source: str, launch: dict | None) -> RunInfo | None:
    """A RunInfo with what the files say, before asking whether its process lives; None if nothing is there."""
    status, problem = None, None
    try:
        status = read_status(run_dir)
    except FileNotFoundError:
        pass
    except ValueError as error:
        problem = str(error) if os.path.lexists(run_dir / STATUS) else None
    info = RunInfo(key=key, path=run_dir, source=source, state="unknown", problem=problem, log_path=run_dir / LOG,
                   tags=tuple(read_tags(run_dir)), note=read_note(run_dir))
    if status is None:
        try:
            config = read_config_dict(run_dir)
        except ValueError:
            config = None
        if config is None and problem is None and launch is None:
            return None
        sections = config or {}
        model, data = sections.get("model"), sections.get("data")
        info.model = _text(model.get("name")) if isinstance(model, dict) else None
        info.dataset = _text(data.get("name")) if isinstance(data, dict) else None
    else:
        _fill_from_status(info, status)
    if launch is not None:
        info.pid = info.pid or _number(launch.get("pid"), int)
        info.owner = info.owner or {"pid": info.pid, "pid_start": launch.get("pid_start")}
        info.started_at = info.started_at or _number(launch.get("started_at"), float)
        info.model = info.model or _text(launch.get("model"))
        info.dataset = info.dataset or _text(launch.get("dataset"))
        if status is None:
            info.state, info.problem = "starting", None
        elif _resumed_since(launch, status):
            info.state, info.pid = "starting", _number(launch.get("pid"), int)
            info.owner = {"pid": info.pid, "pid_start": launch.get("pid_start")}
    return info


def _resumed_since(launch: dict, status: dict) -> bool:
    """Whether the dashboard resumed this run after its status was last written (the new process has not yet)."""
    launched, updated = _number(launch.get("started_at")), _number(status.get("updated_at"))
    return (bool(launch.get("resumed")) and launched is not None and updated is not None and launched > updated
            and status.get("state") not in CONTRACT_ACTIVE)


def _fill_from_status(info: RunInfo, status: dict) -> None:
    info.state = _text(status.get("state")) or "unknown"
    info.model = _text(status.get("model"))
    info.dataset = _text(status.get("dataset"))
    for name, kind in (("epoch", int), ("epochs", int), ("step", int), ("steps_per_epoch", int), ("params", int),
                       ("macs", int), ("pid", int), ("started_at", float), ("updated_at", float),
                       ("elapsed_s", float), ("images_per_s", float)):
        setattr(info, name, _number(status.get(name), kind))
    best = best_of(status)
    info.best_metric, info.best_value, info.best_epoch = best.metric, best.value, best.epoch
    info.error = _text(status.get("error"))
    info.owner = {k: status.get(k) for k in ("pid", "pid_start", "host")}
    if not info.model or not info.dataset:
        try:
            config = read_config_dict(info.path)
        except ValueError:
            return
        for attr, section in (("model", "model"), ("dataset", "data")):
            if not getattr(info, attr) and isinstance(config.get(section), dict):
                setattr(info, attr, _text(config[section].get("name")))


def _settle(info: RunInfo, launch: dict | None) -> RunInfo:
    """The state to show now: an active run whose process is gone has died (or, never started, failed)."""
    if info.source != "run" or not info.active:
        return info
    stop_at = _stop_time(info.path)
    launched = _number(launch.get("started_at")) if launch else None
    if stop_at is not None and launched is not None and stop_at < launched:
        stop_at = None  # a request older than this process (the stop before a resume) is not meant for it
    info = dataclasses.replace(info, stop_requested_at=stop_at)
    state = "starting" if owner_alive(info.owner) else "failed"
    if info.state != "starting":
        state = reported_state({**info.owner, "state": info.state})
    if state == info.state:
        return info
    log = Path(launch["log"]) if launch and isinstance(launch.get("log"), str) else None
    last_line = next((line for line in reversed(tail_text(log).splitlines()) if line.strip()), "") if log else ""
    pid = f" (pid {info.pid})" if info.pid else ""
    asked = " after it was asked to stop" if info.stop_requested_at is not None else ""
    if state == "failed":
        info.error = last_line or f"Its process{pid} ended before it wrote a status."
    else:
        info.error = info.error or (f"Its process{pid} ended{asked} without writing a final status; continue it "
                                    f"with python -m regnet train --resume {info.path}.")
    info.state = state
    if log is not None and not (info.path / LOG).exists():
        info.log_path = log
    return info


def read_run(run_dir: Path, key: str, source: str = "run", launch: dict | None = None) -> RunInfo | None:
    """A RunInfo for ``run_dir`` as it is now; None when the folder holds nothing a run writes."""
    info = _read_recorded(Path(run_dir), key, source, launch)
    return None if info is None else _settle(info, launch)


def _stamp(path: str) -> tuple | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


class RunIndex:
    """RunInfo rows cached per folder and re-read only when the folder's status.json (or launch record) changed.

    One process-wide instance (``RUN_INDEX``) serves every session: a listing of 10,000 unchanged runs
    costs a directory scan and one ``stat`` per run. Liveness is asked again at every listing, for
    active runs only, because a process can die without writing anything.
    """

    def __init__(self) -> None:
        self._rows: dict[str, tuple[tuple, RunInfo | None]] = {}
        self._launches: dict[str, tuple[tuple, dict | None]] = {}
        self._summaries: dict[str, tuple[tuple, MetricsSummary]] = {}
        self._lock = threading.Lock()

    def run(self, run_dir: Path, key: str, source: str, launch: dict | None) -> RunInfo | None:
        folder = os.fspath(run_dir)
        status_stamp = _stamp(os.path.join(folder, STATUS))
        # The folder's own stamp changes when tags.json or note.md is replaced (atomic writes are renames).
        signature = (status_stamp, None if status_stamp else _stamp(os.path.join(folder, CONFIG)),
                     None if launch is None else id(launch), _stamp(folder))
        cache_key = f"{source}:{folder}"
        with self._lock:
            cached = self._rows.get(cache_key)
        if cached is None or cached[0] != signature:
            info = _read_recorded(run_dir, key, source, launch)
            cached = (signature, info if info is None else self._summarised(cache_key, info))
            with self._lock:
                self._rows[cache_key] = cached
        return None if cached[1] is None else _settle(cached[1], launch)

    def _summarised(self, cache_key: str, info: RunInfo) -> RunInfo:
        """``info`` with the run's average images/s and, without a recorded start, its first metric's time.

        metrics.jsonl is read again only when the completed epochs change (what the average is taken over),
        not on every status write of a running run.
        """
        summary_key = (info.epoch, info.started_at is None)
        with self._lock:
            cached = self._summaries.get(cache_key)
        if cached is None or cached[0] != summary_key:
            cached = (summary_key, summarise_metrics(read_all_metrics(info.path).rows))
            with self._lock:
                self._summaries[cache_key] = cached
        summary = cached[1]
        return dataclasses.replace(info, images_per_s=summary.images_per_s or info.images_per_s,
                                   started_at=info.started_at or summary.first_time)

    def launch(self, record: Path) -> dict | None:
        """A launch record's JSON object (None if damaged), re-read only when the file changed."""
        signature = _stamp(record)
        with self._lock:
            cached = self._launches.get(str(record))
        if cached is None or cached[0] != signature:
            try:
                data = json.loads(read_regular(record).decode("utf-8"))
            except (OSError, ValueError):  # missing, damaged, not UTF-8, not a regular file
                data = None
            cached = (signature, data if isinstance(data, dict) and is_run_id(data.get("run_id")) else None)
            with self._lock:
                self._launches[str(record)] = cached
        return cached[1]


@dataclass(frozen=True)
class MetricsSummary:
    images_per_s: float | None  # the run's average over its completed epochs
    first_time: float | None  # when its first metric line was written


def summarise_metrics(rows: Sequence[dict]) -> MetricsSummary:
    """The run's average training speed and its first line's time, from its metrics lines.

    Each epoch line's images/s is that epoch's training images over its training seconds; epochs hold the
    same number of images, so the run's average (all images over all training seconds) is their harmonic
    mean. Not the last step's value, which is one window of a few steps and swings with the machine's load.
    """
    speeds = [_number(row.get("images_per_s")) for row in rows if row.get("kind") == "epoch"]
    speeds = [speed for speed in speeds if speed and speed > 0]
    times = [time_ for time_ in (_number(row.get("time")) for row in rows) if time_]
    average = len(speeds) / sum(1.0 / speed for speed in speeds) if speeds else None
    return MetricsSummary(average, min(times) if times else None)


RUN_INDEX = RunIndex()


def read_launches(runs_root: Path, index: RunIndex = RUN_INDEX) -> dict[str, dict]:
    """Launch records written by the dashboard's launcher, by run id."""
    launches = {}
    try:
        records = sorted(entry.path for entry in os.scandir(Path(runs_root, LAUNCHES)) if entry.name.endswith(".json"))
    except OSError:
        return launches
    for record in records:
        data = index.launch(Path(record))
        if data is not None:
            launches[data["run_id"]] = data
    return launches


def _refused_row(path: Path, key: str, source: str) -> RunInfo:
    return RunInfo(key=key, path=path, source=source, state=REFUSED, started_at=0.0,
                   problem=f"{path.name} resolves outside its folder (a symlink?) and is refused: it is never read.")


def discover_runs(runs_root: Path, checkpoints_root: Path | None = None, index: RunIndex = RUN_INDEX) -> list[RunInfo]:
    """Every run under ``runs_root`` (the CLI's rule) and every shipped run under ``checkpoints_root``, newest first.

    Folders that resolve outside their root are listed as refused, and never read.
    """
    runs_root = Path(runs_root)
    runs: list[RunInfo] = []
    if runs_root.is_dir():
        launches = read_launches(runs_root, index)
        folders, refused = scan_runs(runs_root)
        runs += [_refused_row(path, path.name, "run") for path in refused]
        for folder in folders:
            info = index.run(folder, folder.name, "run", launches.pop(folder.name, None))
            if info is not None:
                runs.append(info)
        for run_id, launch in launches.items():  # launched, no run folder yet (or it never came)
            if run_id not in {path.name for path in refused}:
                info = index.run(runs_root / run_id, run_id, "run", launch)
                if info is not None:
                    runs.append(info)
    shipped = []
    if checkpoints_root is not None and Path(checkpoints_root).is_dir():
        folders, refused = scan_runs(checkpoints_root)
        shipped += [_refused_row(path, SHIPPED_PREFIX + path.name, "shipped") for path in refused]
        for folder in folders:
            info = index.run(folder, SHIPPED_PREFIX + folder.name, "shipped", None)
            if info is not None:
                shipped.append(info)
    runs.sort(key=lambda r: r.started_at or 0.0, reverse=True)
    return runs + shipped


# --------------------------------------------------------------------------------------------- summaries

def format_duration(seconds: float | None) -> str:
    """'1h 02m', '3m 05s', '42s'; '' when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return ""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


@dataclass
class Progress:
    fraction: float
    text: str
    eta_s: float | None


def progress(run: RunInfo) -> Progress:
    """How far a run is, as a bar fraction and one line: state, epoch, step, ETA."""
    total_steps = (run.steps_per_epoch or 0) * (run.epochs or 0)
    if total_steps and run.step is not None:
        fraction = run.step / total_steps
    elif run.epochs:
        fraction = (run.epoch or 0) / run.epochs
    else:
        fraction = 0.0
    if run.state == "finished":
        fraction = 1.0
    fraction = min(max(fraction, 0.0), 1.0)
    eta = None
    stopping = run.shown_state == STOPPING
    if run.active and not stopping and fraction > 0 and run.elapsed_s:
        eta = run.elapsed_s * (1.0 - fraction) / fraction
    parts = [run.shown_state]
    if run.epochs:
        parts.append(f"{epochs_done(run)} epochs done")
    if run.step is not None:
        parts.append(f"step {run.step}" + (f"/{total_steps}" if total_steps else ""))
    if run.elapsed_s:
        parts.append(f"elapsed {format_duration(run.elapsed_s)}")
    if eta is not None:
        parts.append(f"ETA {format_duration(eta)}")
    return Progress(fraction, " · ".join(parts), eta)


def epochs_done(run: RunInfo) -> str:
    """'1/3': completed epochs of all, as status.json counts them and train.log says when a run stops."""
    return f"{run.epoch or 0}/{run.epochs}" if run.epochs else ""


# Metrics whose values are fractions in [0, 1] (docs/run-folder.md), shown as percentages.
FRACTION_METRICS = ("train_top1", "val_top1", "val_top5", "val_macro_f1")


def format_best(best: Best) -> str:
    """'98.75% val_top1 @ 4' or '0.1234 val_loss @ 2': the checkpointed best, its metric and its epoch."""
    if best.value is None:
        return ""
    value = f"{100 * best.value:.2f}%" if best.metric in FRACTION_METRICS else f"{best.value:.4g}"
    epoch = f" @ {best.epoch}" if best.epoch is not None else ""
    return f"{value} {best.metric or ''}".strip() + epoch


def format_started(started_at: float | None) -> str:
    """Local start time of a run, or '-' when the run itself does not say (never a folder's mtime)."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(started_at)) if started_at else "-"


RUNS_COLUMNS = ["run", "tags", "model", "dataset", "status", "epochs done", "best", "images/s", "elapsed", "started",
                "source"]


def runs_table(runs: Sequence[RunInfo]) -> pd.DataFrame:
    """The Runs page table (one row a run, newest first, shipped runs marked).

    "images/s" is the run's average (see ``summarise_metrics``), "best" the contract's checkpointed best.
    """
    rows = [{
        "run": run.key,
        "source": "shipped" if run.source == "shipped" else "run",
        "model": run.model or "",
        "dataset": run.dataset or "",
        "status": run.shown_state,
        "epochs done": epochs_done(run),
        "best": format_best(run.best),
        "elapsed": format_duration(run.elapsed_s),
        "images/s": None if run.images_per_s is None else round(run.images_per_s, 1),
        "started": format_started(run.started_at),
        "tags": ", ".join(run.tags),
    } for run in runs]
    return pd.DataFrame(rows, columns=RUNS_COLUMNS)


@dataclass(frozen=True)
class RunFilter:
    """What the Runs page narrows the list to; empty fields match every run."""

    text: str = ""
    models: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    states: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()

    def matches(self, run: RunInfo) -> bool:
        """All chosen facets match, and every word of ``text`` is in the run's id, model, data set, tags or note."""
        if ((self.models and run.model not in self.models) or (self.datasets and run.dataset not in self.datasets)
                or (self.states and run.shown_state not in self.states)
                or (self.tags and not set(self.tags) & set(run.tags))):
            return False
        haystack = " ".join([run.key, run.model or "", run.dataset or "", run.shown_state, *run.tags, run.note]).lower()
        return all(word in haystack for word in self.text.lower().split())


def filter_runs(runs: Sequence[RunInfo], wanted: RunFilter) -> list[RunInfo]:
    return [run for run in runs if wanted.matches(run)]


def _last(frame: pd.DataFrame, column: str):
    if column not in frame:
        return None
    values = frame[column].dropna()
    return None if values.empty else float(values.iloc[-1])


def compare_table(runs: Sequence[RunInfo], frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row a run: size, best and final validation results, time and speed (for the Compare page).

    "best" is the checkpointed best (status.json, the model in best.pt), as on the Runs page and in
    ``regnet compare``; "final" is the last epoch line.
    """
    rows = []
    for run in runs:
        frame = frames.get(run.key, pd.DataFrame())
        epochs = frame[frame["kind"] == "epoch"] if "kind" in frame else frame
        best = run.best_value if run.best_metric in (None, "val_top1") else None  # the checkpointed best
        rows.append({
            "run": run.key,
            "model": run.model or "",
            "dataset": run.dataset or "",
            "status": run.state,
            "params": run.params,
            "MACs": run.macs,
            "epochs": run.epoch,
            "best val top-1": best,
            "final val top-1": _last(epochs, "val_top1"),
            "final val top-5": _last(epochs, "val_top5"),
            "final val macro-F1": _last(epochs, "val_macro_f1"),
            "final val loss": _last(epochs, "val_loss"),
            "final train loss": _last(epochs, "train_loss"),
            "training time s": run.elapsed_s,
            "images/s": run.images_per_s if run.images_per_s is not None else _last(epochs, "images_per_s"),
        })
    return pd.DataFrame(rows)


def curves_long(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Every metric of every run in one long table (run, kind, epoch, step, x_epoch, metric, value) for CSV."""
    parts = []
    for key, frame in frames.items():
        if frame.empty:
            continue
        metrics = [c for c in frame.columns if c in set(STEP_METRICS + EPOCH_METRICS)]
        long = frame.melt(id_vars=[c for c in ("kind", "epoch", "step", "x_epoch") if c in frame],
                          value_vars=metrics, var_name="metric", value_name="value").dropna(subset=["value"])
        long.insert(0, "run", key)
        parts.append(long)
    if not parts:
        return pd.DataFrame(columns=["run", "kind", "epoch", "step", "x_epoch", "metric", "value"])
    return pd.concat(parts, ignore_index=True)
