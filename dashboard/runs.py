"""Finding and reading run folders: the only way the dashboard learns about training.

A run folder (see docs/run-folder.md) is written by ``python -m regnet train`` whoever started it, so everything
here reads from disk and keeps nothing that a browser refresh or a server restart could lose. Reading
is forgiving on purpose: a half-written last line, a corrupt line, a missing status.json or a dead
process become facts on the page, never exceptions.
"""
from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd
import yaml

STATUS_FILE = "status.json"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "train.log"
STOP_FILE = "STOP"
# The launcher keeps its own records (command, pid, stdout/stderr log) here, outside the run folder the
# engine creates, so a run that dies before it writes anything still shows up with its error.
LAUNCH_DIR = ".launches"

ACTIVE_STATES = ("starting", "queued", "running")
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SHIPPED_PREFIX = "shipped/"

# Metrics logged on every step line: dense, so they are smoothed and read from step lines when present.
STEP_METRICS = ("train_loss", "lr", "images_per_s")
EPOCH_METRICS = ("train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "val_macro_f1", "lr",
                 "epoch_time_s", "images_per_s")


# --------------------------------------------------------------------------------------------- run ids

def validate_run_id(run_id: str) -> str:
    """Return ``run_id`` if it is a plain folder name; a browser-supplied id must never name a path."""
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.match(run_id) or ".." in run_id:
        raise ValueError(f"{run_id!r} is not a valid run id; use letters, digits, '.', '_' and '-' only.")
    return run_id


def resolve_under(root: Path, name: str) -> Path:
    """``root/name`` after checking that it stays inside ``root`` (symlinks resolved)."""
    validate_run_id(name)
    base = Path(root).resolve()
    path = (base / name).resolve()
    if path.parent != base:
        raise ValueError(f"Run {name!r} points outside {base}; pick a run listed on the Runs page.")
    return path


# --------------------------------------------------------------------------------------------- processes

def process_alive(pid: int | None) -> bool:
    """Whether ``pid`` is a live (not zombie) process that looks like ours.

    A pid from an old status.json may have been reused by an unrelated program, so on Linux the command
    line must mention ``regnet``.
    """
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by someone else
    proc = Path(f"/proc/{pid}")
    if not proc.exists():
        return True  # no /proc (not Linux): os.kill is all we can know
    try:
        stat = (proc / "stat").read_text()
        if stat[stat.rindex(")") + 2] in "ZX":
            return False
        return b"regnet" in (proc / "cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return False


# --------------------------------------------------------------------------------------------- reading files

def read_json(path: Path) -> tuple[dict | None, str | None]:
    """(object, None) or (None, one sentence saying what is wrong with the file)."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None, f"{Path(path).name} is missing."
    except (OSError, ValueError) as error:
        return None, f"{Path(path).name} could not be read ({type(error).__name__})."
    if not isinstance(data, dict):
        return None, f"{Path(path).name} does not hold a JSON object."
    return data, None


def read_config(run_dir: Path) -> dict | None:
    """The run's config.yaml as a dict, or None when it is missing or not valid YAML."""
    try:
        data = yaml.safe_load((Path(run_dir) / CONFIG_FILE).read_text())
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def tail_text(path: Path, max_lines: int = 40, max_bytes: int = 32_000) -> str:
    """The last lines of a text file (a log), or '' when there is none."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except OSError:
        return ""
    lines = data.decode("utf-8", errors="replace").splitlines()
    return "\n".join(lines[-max_lines:])


# --------------------------------------------------------------------------------------------- metrics.jsonl

def read_new_metrics(path: Path, offset: int, *, bad_lines: list | None = None) -> tuple[list[dict], int]:
    """Rows appended to metrics.jsonl since byte ``offset``, and the offset to read from next time.

    Only complete lines (ending in a newline) are consumed: the trainer may be half-way through writing
    the last one, which is read again, whole, next time. Complete lines that are not a JSON object are
    skipped; when ``bad_lines`` is given each skipped line's text is appended to it so the page can say
    how many there were.
    """
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except (FileNotFoundError, NotADirectoryError):
        return [], offset
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    rows = []
    for raw in data[: end + 1].splitlines():
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except ValueError:
            row = None
        if isinstance(row, dict):
            rows.append(row)
        elif bad_lines is not None:
            bad_lines.append(raw.decode("utf-8", errors="replace")[:200])
    return rows, offset + end + 1


@dataclass
class _Tail:
    offset: int = 0
    rows: list = field(default_factory=list)
    corrupt: int = 0
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

    def read(self, path: Path) -> tuple[list[dict], int]:
        """(all rows so far, number of corrupt lines skipped) for the metrics file at ``path``."""
        key = str(Path(path).resolve())
        with self._lock:
            tail = self._tails.setdefault(key, _Tail())
            try:
                stat = os.stat(key)
            except OSError:
                self._tails[key] = _Tail()
                return [], 0
            if (tail.identity and tail.identity != (stat.st_ino,)) or stat.st_size < tail.offset:
                tail = self._tails[key] = _Tail()
            tail.identity = (stat.st_ino,)
            if stat.st_size > tail.offset:
                bad: list = []
                rows, tail.offset = read_new_metrics(Path(key), tail.offset, bad_lines=bad)
                tail.rows.extend(rows)
                tail.corrupt += len(bad)
            return list(tail.rows), tail.corrupt

    def offset(self, path: Path) -> int:
        """Bytes consumed so far for ``path`` (0 when never read)."""
        with self._lock:
            tail = self._tails.get(str(Path(path).resolve()))
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
    """One row of the Runs page: what status.json (or the launch record) says, with a derived state."""

    key: str  # what the pages select by: the run id, or "shipped/<name>"
    path: Path
    source: str  # "run" | "shipped"
    state: str  # contract states plus "starting" (launched, nothing written yet) and "unknown"
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
    stop_requested_at: float | None = None
    problem: str | None = None  # something wrong with the folder itself (e.g. corrupt status.json)
    log_path: Path | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE


def _number(value, kind=float):
    try:
        return None if value is None else kind(value)
    except (TypeError, ValueError):
        return None


def _stop_time(run_dir: Path) -> float | None:
    try:
        return (run_dir / STOP_FILE).stat().st_mtime
    except OSError:
        return None


def read_run(run_dir: Path, key: str, source: str = "run", launch: dict | None = None) -> RunInfo | None:
    """A RunInfo for ``run_dir``; None when the folder holds nothing a run writes."""
    run_dir = Path(run_dir)
    has_files = any((run_dir / name).exists() for name in (STATUS_FILE, CONFIG_FILE, METRICS_FILE))
    if not has_files and launch is None:
        return None
    status, problem = read_json(run_dir / STATUS_FILE)
    config = read_config(run_dir) or {}
    info = RunInfo(key=key, path=run_dir, source=source, state="unknown", problem=problem if has_files else None,
                   log_path=run_dir / LOG_FILE, stop_requested_at=_stop_time(run_dir))
    info.model = (config.get("model") or {}).get("name") if isinstance(config.get("model"), dict) else None
    info.dataset = (config.get("data") or {}).get("name") if isinstance(config.get("data"), dict) else None
    if status is not None:
        info.state = str(status.get("state") or "unknown")
        info.model = status.get("model") or info.model
        info.dataset = status.get("dataset") or info.dataset
        for name, kind in (("epoch", int), ("epochs", int), ("step", int), ("steps_per_epoch", int),
                           ("best_epoch", int), ("params", int), ("macs", int), ("pid", int),
                           ("started_at", float), ("updated_at", float), ("elapsed_s", float),
                           ("best_value", float), ("images_per_s", float)):
            setattr(info, name, _number(status.get(name), kind))
        info.best_metric = status.get("best_metric")
        info.error = status.get("error")
    if launch is not None:
        info.pid = info.pid or _number(launch.get("pid"), int)
        info.started_at = info.started_at or _number(launch.get("started_at"), float)
        info.model = info.model or launch.get("model")
        info.dataset = info.dataset or launch.get("dataset")
        if status is None:
            info.state, info.problem = "starting", None
    if source == "run" and info.state in ACTIVE_STATES and not process_alive(info.pid):
        _settle_dead_run(info, launch)
    if info.started_at is None:
        try:
            info.started_at = run_dir.stat().st_mtime
        except OSError:
            info.started_at = 0.0
    return info


def _settle_dead_run(info: RunInfo, launch: dict | None) -> None:
    """A run whose status still says it is active but whose process is gone: say what happened."""
    log = Path(launch["log"]) if launch and launch.get("log") else None
    if info.stop_requested_at is not None:
        info.state = "stopped"
        return
    info.state = "failed"
    last_line = next((line for line in reversed(tail_text(log).splitlines()) if line.strip()), "") if log else ""
    pid = f" (pid {info.pid})" if info.pid else ""
    info.error = info.error or last_line or f"Its process{pid} ended without writing a final status; see train.log."
    if log is not None and not (info.path / LOG_FILE).exists():
        info.log_path = log


def read_launches(runs_root: Path) -> dict[str, dict]:
    """Launch records written by the dashboard's launcher, by run id."""
    launches = {}
    for record in sorted(Path(runs_root, LAUNCH_DIR).glob("*.json")):
        data, _ = read_json(record)
        if data and RUN_ID_PATTERN.match(str(data.get("run_id", ""))):
            launches[data["run_id"]] = data
    return launches


def discover_runs(runs_root: Path, checkpoints_root: Path | None = None) -> list[RunInfo]:
    """Every run under ``runs_root`` (and every shipped run under ``checkpoints_root``), newest first."""
    runs: list[RunInfo] = []
    runs_root = Path(runs_root)
    launches = read_launches(runs_root) if runs_root.is_dir() else {}
    seen = set()
    if runs_root.is_dir():
        for folder in runs_root.iterdir():
            if folder.name.startswith(".") or not folder.is_dir() or not RUN_ID_PATTERN.match(folder.name):
                continue
            info = read_run(folder, folder.name, "run", launches.get(folder.name))
            if info is not None:
                runs.append(info)
                seen.add(folder.name)
        for run_id, launch in launches.items():
            if run_id not in seen:
                runs.append(read_run(runs_root / run_id, run_id, "run", launch))
    shipped = []
    if checkpoints_root is not None and Path(checkpoints_root).is_dir():
        for folder in sorted(Path(checkpoints_root).iterdir()):
            if folder.is_dir() and RUN_ID_PATTERN.match(folder.name):
                info = read_run(folder, SHIPPED_PREFIX + folder.name, "shipped")
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
    if run.active and fraction > 0 and run.elapsed_s:
        eta = run.elapsed_s * (1.0 - fraction) / fraction
    parts = [run.state]
    if run.epochs:
        parts.append(f"epoch {run.epoch or 0}/{run.epochs}")
    if run.step is not None:
        parts.append(f"step {run.step}" + (f"/{total_steps}" if total_steps else ""))
    if run.elapsed_s:
        parts.append(f"elapsed {format_duration(run.elapsed_s)}")
    if eta is not None:
        parts.append(f"ETA {format_duration(eta)}")
    return Progress(fraction, " · ".join(parts), eta)


def runs_table(runs: Sequence[RunInfo]) -> pd.DataFrame:
    """The Runs page table (one row a run, newest first, shipped runs marked)."""
    rows = []
    for run in runs:
        best = run.best_value if run.best_metric in (None, "val_top1") else None
        rows.append({
            "run": run.key,
            "source": "shipped" if run.source == "shipped" else "run",
            "model": run.model or "",
            "dataset": run.dataset or "",
            "status": run.state,
            "epoch": f"{run.epoch or 0}/{run.epochs}" if run.epochs else "",
            "best val top-1 %": None if best is None else round(100 * best, 2),
            "elapsed": format_duration(run.elapsed_s),
            "images/s": None if run.images_per_s is None else round(run.images_per_s, 1),
            "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(run.started_at)) if run.started_at else "",
        })
    return pd.DataFrame(rows, columns=["run", "source", "model", "dataset", "status", "epoch", "best val top-1 %",
                                       "elapsed", "images/s", "started"])


def _last(frame: pd.DataFrame, column: str):
    if column not in frame:
        return None
    values = frame[column].dropna()
    return None if values.empty else float(values.iloc[-1])


def compare_table(runs: Sequence[RunInfo], frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row a run: size, best and final validation results, time and speed (for the Compare page)."""
    rows = []
    for run in runs:
        frame = frames.get(run.key, pd.DataFrame())
        epochs = frame[frame["kind"] == "epoch"] if "kind" in frame else frame
        top1 = epochs["val_top1"].dropna() if "val_top1" in epochs else pd.Series(dtype=float)
        best = float(top1.max()) if not top1.empty else (run.best_value if run.best_metric in (None, "val_top1")
                                                          else None)
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
