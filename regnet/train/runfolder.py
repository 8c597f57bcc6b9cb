"""The run folder: the only contract between a training process and whoever watches it (CLI, dashboard, TensorBoard).

Everything a reader may see half-written is written atomically (a temp file in
the same folder, then ``os.replace``), and ``metrics.jsonl`` is only ever
appended to and flushed line by line, so a reader polling the folder never
sees a torn file. A run folder is never reused: creating one that exists is an
error, whatever is in it.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

CONFIG = "config.yaml"
STATUS = "status.json"
METRICS = "metrics.jsonl"
LOG = "train.log"
STOP = "STOP"
CHECKPOINTS = "checkpoints"
ARTIFACTS = "artifacts"
FINAL_EVAL = "final_eval.json"


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes it private; readers (dashboard, TensorBoard) need to read it
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def default_run_id(model: str, dataset: str, now: float | None = None) -> str:
    """``<timestamp>-<model>-<dataset>``: sorts by start time and says what ran."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return f"{stamp}-{model}-{dataset}"


def create_run_folder(runs_root: str | Path, run_id: str | None, model: str, dataset: str) -> Path:
    """Make a new, empty run folder; an explicit ``run_id`` that exists is an error, a default one gets a suffix.

    ``os.mkdir`` fails if the folder exists, so two processes can never claim
    the same folder, even racing.
    """
    root = Path(runs_root)
    if run_id is not None and (not run_id or "/" in run_id or run_id in (".", "..")):
        raise ValueError(f"Run id {run_id!r} is not a plain folder name; use letters, digits, '-' and '_'.")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(f"Cannot create the runs folder {root} ({error.strerror}); "
                      f"pass a writable --runs-root.") from None
    if run_id is not None:
        path = root / run_id
        try:
            path.mkdir()
        except FileExistsError:
            raise ValueError(f"Run folder {path} already exists and is never overwritten; choose another --run-id "
                             f"or continue it with --resume {path}.") from None
        return path
    base = default_run_id(model, dataset)
    for attempt in range(1, 1000):
        path = root / (base if attempt == 1 else f"{base}-{attempt}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise ValueError(f"Too many runs named {base}-* in {root}; pass --run-id.")


class RunFolder:
    """Paths and writers of one run folder; only the process that owns the run (rank 0) writes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.status: dict = {}

    config_path = property(lambda self: self.path / CONFIG)
    status_path = property(lambda self: self.path / STATUS)
    metrics_path = property(lambda self: self.path / METRICS)
    log_path = property(lambda self: self.path / LOG)
    stop_path = property(lambda self: self.path / STOP)
    checkpoints = property(lambda self: self.path / CHECKPOINTS)
    artifacts = property(lambda self: self.path / ARTIFACTS)

    def checkpoint(self, which: str) -> Path:
        return self.checkpoints / f"{which}.pt"

    def make_subfolders(self) -> None:
        self.checkpoints.mkdir(exist_ok=True)
        self.artifacts.mkdir(exist_ok=True)

    def write_status(self, **changes) -> dict:
        """Merge ``changes`` into the status and rewrite status.json atomically, stamping ``updated_at``."""
        self.status.update(changes)
        self.status["updated_at"] = time.time()
        atomic_write_json(self.status_path, self.status)
        return self.status

    def append_metrics(self, record: dict) -> None:
        """One JSON object per line, flushed at once so that a dashboard sees it immediately."""
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def truncate_metrics(self, after_step: int) -> None:
        """Drop lines logged after the checkpoint a resumed run restarts from, so no step appears twice."""
        if not self.metrics_path.exists():
            return
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= after_step]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))

    def stop_requested(self) -> bool:
        return self.stop_path.exists()


def read_status(run_dir: str | Path) -> dict:
    """The run's status.json, or a one-sentence ValueError if the folder is not a run."""
    path = Path(run_dir) / STATUS
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{run_dir} is not a run folder (no {STATUS}); pass a folder under runs/.") from None
    except json.JSONDecodeError:
        raise ValueError(f"{path} is not valid JSON; the run folder is damaged.") from None


def read_metrics(run_dir: str | Path) -> list[dict]:
    """Every complete line of metrics.jsonl (a line still being written is skipped)."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
