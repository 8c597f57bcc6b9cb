"""What the dashboard's pages list about runs: run rows, live metric tails, the Runs table.

A run folder (docs/run-folder.md) is written by ``python -m regnet train`` whoever started it, and read here
only through the contract (``regnet.runs``): its summary of a run (``read_summary``: identity, state, best
and final metrics, timing), and its run states. This module keeps what is shaped for
pages: a row per run (``RunInfo``: the contract's summary with the key a page selects by and what the
dashboard's own launch records add), a listing that re-reads a folder only when its status changed (so
10,000 runs list in a fraction of a second once scanned), per-file metric tails, and the Runs table as a pandas
frame. Nothing here keeps state that a browser refresh or a server restart could lose; damaged files
become facts on the page, never exceptions.
"""
from __future__ import annotations

import json
import math
import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from stat import S_ISREG
from typing import Iterable, Sequence

import pandas as pd

from regnet.runs import (CONFIG, LAUNCHES, LOG, REFUSED, STARTING, STARTING_OR_ACTIVE, STATUS, STOPPING, Best,
                         EpochMetrics, MetricsChunk, RunSummary, clean_tags, finite, is_run_id,
                         owner_alive, read_epoch_metrics, read_metrics_since, read_regular, recorded_summary,
                         scan_runs, settle, tail_text)

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


class MetricsTail:
    """Per-file byte offsets and parsed rows, so a refresh of a live chart reads only what is new.

    Shared by every browser session of the server (module-level instance below): reading is idempotent,
    and a lock keeps two sessions from appending the same lines twice. A file that shrank or was
    replaced (another inode) is read again from the start.
    """

    def __init__(self) -> None:
        self._tails: dict[str, _Tail] = {}
        self._lock = threading.Lock()

    def read(self, path: Path) -> MetricsChunk:
        """Every row of ``path`` so far (new bytes only are read), the damaged lines counted, and its problem."""
        key = os.path.abspath(path)
        with self._lock:
            tail = self._tails.setdefault(key, _Tail())
            try:
                stat = os.stat(key)
            except OSError:
                self._tails[key] = _Tail()
                return MetricsChunk()
            if (tail.identity and tail.identity != (stat.st_ino,)) or stat.st_size < tail.offset:
                tail = self._tails[key] = _Tail()
            tail.identity = (stat.st_ino,)
            problem = None
            if stat.st_size > tail.offset or not S_ISREG(stat.st_mode):  # a folder or device: say why, read nothing
                chunk = read_metrics_since(key, tail.offset)
                tail.rows.extend(chunk.rows)
                tail.offset, tail.damaged, problem = chunk.offset, tail.damaged + chunk.damaged, chunk.problem
            return MetricsChunk(list(tail.rows), tail.offset, tail.damaged, problem)

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


def system_rows(rows: Sequence[dict]) -> list[dict]:
    """A run's system lines (one per completed epoch), the later line winning for an epoch seen twice."""
    by_epoch = {row["epoch"]: row for row in rows if row.get("kind") == "system" and isinstance(row.get("epoch"), int)}
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


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
class RunInfo(RunSummary):
    """One row of the pages: the contract's summary of a run, the key pages select it by, and where it came from.

    ``state`` is the contract's (``regnet.runs.state``), with the dashboard's launch records adding
    ``starting`` (launched, nothing written yet) and ``refused`` (a folder outside its root, never read).
    """

    key: str = ""  # the run id, or "shipped/<name>"
    source: str = "run"  # "run" | "shipped"
    log_path: Path | None = None

    @property
    def active(self) -> bool:
        return self.state in STARTING_OR_ACTIVE

    @property
    def shown_state(self) -> str:
        """The state a page shows: ``stopping...`` while an active run has been asked to stop."""
        return STOPPING if self.active and self.stop_requested_at is not None else self.state

    @property
    def refused(self) -> bool:
        return self.state == REFUSED


def _read_recorded(run_dir: Path, key: str, source: str, launch: dict | None,
                   metrics_of=read_epoch_metrics) -> RunInfo | None:
    """A RunInfo with what the files (and the launch record) say, before asking whether its process lives;
    None if nothing is there."""
    summary = recorded_summary(run_dir, metrics_of, with_config=False)  # the pages that show configs read them
    if not summary.recorded and launch is None:
        return None
    info = RunInfo(**{name: getattr(summary, name) for name in RunSummary.__dataclass_fields__}, key=key,
                   source=source, log_path=run_dir / LOG)
    if launch is None:
        return info
    no_status = summary.problem is not None or not (run_dir / STATUS).is_file()
    launched = {"pid": finite(launch.get("pid"), int), "pid_start": launch.get("pid_start")}
    info = replace(info, owner=launched if no_status else info.owner,
                   started_at=info.started_at or finite(launch.get("started_at")),
                   model=info.model or _text(launch.get("model")), dataset=info.dataset or _text(launch.get("dataset")),
                   tags=info.tags or _launch_tags(launch), note=info.note or _text(launch.get("note")) or "")
    if no_status:
        return replace(info, state=STARTING, problem=None)
    if _resumed_since(launch, info):
        return replace(info, state=STARTING, owner=launched)
    return info


def _text(value) -> str | None:
    return value if isinstance(value, str) else None


def _launch_tags(launch: dict) -> tuple[str, ...]:
    """The tags a launch gave its run, shown before the run folder (which gets them) exists; () if damaged."""
    try:
        return tuple(clean_tags(launch.get("tags") or ()))
    except (TypeError, ValueError):
        return ()


def _resumed_since(launch: dict, info: RunInfo) -> bool:
    """Whether the dashboard resumed this run after its status was last written (the new process has not yet)."""
    launched, updated = finite(launch.get("started_at")), info.updated_at
    return (bool(launch.get("resumed")) and launched is not None and updated is not None and launched > updated
            and info.state not in STARTING_OR_ACTIVE)


def _settle(info: RunInfo, launch: dict | None) -> RunInfo:
    """The state to show now: the contract's (``regnet.runs.settle``: died, or stopped when asked to), and a
    launched run whose process ended before it wrote anything has failed, with its log's last line."""
    if info.source != "run" or not info.active:
        return info
    launched = finite(launch.get("started_at")) if launch else None
    if info.stop_requested_at is not None and launched is not None and info.stop_requested_at < launched:
        info = replace(info, stop_requested_at=None)  # the stop before a resume is not meant for this process
    if info.state != STARTING:
        settled = settle(info)
    elif owner_alive(info.owner):
        return info
    else:
        pid = f" (pid {info.pid})" if info.pid else ""
        settled = replace(info, state="failed", error=_last_line(launch) or f"Its process{pid} ended before it "
                                                                             f"wrote a status.")
    if settled.state == info.state:
        return info
    log = _launch_log(launch)
    if log is not None and not (info.path / LOG).exists():
        settled = replace(settled, log_path=log)
    return settled


def _launch_log(launch: dict | None) -> Path | None:
    return Path(launch["log"]) if launch and isinstance(launch.get("log"), str) else None


def _last_line(launch: dict | None) -> str:
    log = _launch_log(launch)
    return next((line for line in reversed(tail_text(log).splitlines()) if line.strip()), "") if log else ""


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
        self._epochs: dict[str, tuple[int | None, EpochMetrics]] = {}
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
            cached = (signature, _read_recorded(run_dir, key, source, launch,
                                                lambda path, epochs: self._metrics(cache_key, path, epochs)))
            with self._lock:
                self._rows[cache_key] = cached
        return None if cached[1] is None else _settle(cached[1], launch)

    def _metrics(self, cache_key: str, run_dir: Path, completed_epochs: int | None) -> EpochMetrics:
        """The run's epoch metrics, read again only when its completed epochs change (what the best, the final
        and the average speed are taken over), not on every status write of a running run."""
        with self._lock:
            cached = self._epochs.get(cache_key)
        if cached is None or cached[0] != completed_epochs:
            cached = (completed_epochs, read_epoch_metrics(run_dir))
            with self._lock:
                self._epochs[cache_key] = cached
        return cached[1]

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


RUNS_COLUMNS = ["run", "tags", "model", "dataset", "status", "epochs done", "best", "images/s", "elapsed", "started"]


def runs_table(runs: Sequence[RunInfo]) -> pd.DataFrame:
    """The Runs page table (one row a run, newest first; a shipped run's key says so: ``shipped/<name>``).

    "images/s" is the run's average (``regnet.runs.epoch_metrics``), "best" the contract's checkpointed best.
    """
    rows = [{
        "run": run.key,
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
