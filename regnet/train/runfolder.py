"""The engine's side of the run folder: claiming a folder and writing status.json and metrics.jsonl.

File names, the run-id rule, the atomic write and the readers are the contract's (``regnet.runs``); this
module only writes, and only the process that owns the run (rank 0) uses it. ``metrics.jsonl`` is appended
line by line and flushed, everything else is written atomically, so a reader polling the folder never sees
a torn file and a SIGKILL at any write leaves a folder that ``--resume`` continues.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

from regnet.runs import (ARTIFACTS, CHECKPOINTS, CONFIG, LOG, METRICS, STATUS, STOP, atomic_write_json,
                         atomic_write_text, check_run_id, checkpoint_file, new_run_id, process_alive, read_all_metrics,
                         read_metrics, read_status, remove_stale_temps, write_annotations)

CREATING = ".creating-"  # a run folder being assembled: ".<run_id>.creating-<pid>" in the runs root

# read_metrics and read_status are the contract's readers, importable from here as they always were.
__all__ = ["RunFolder", "create_run_folder", "read_metrics", "read_status"]


def create_run_folder(runs_root: str | Path, run_id: str | None, model: str, dataset: str,
                      config_text: Callable[[str], str], tags: Sequence[str] = (), note: str = "") -> Path:
    """Claim a new run folder that already holds its config.yaml (``config_text(run_id)``), and the ``tags``
    and ``note`` its user gave at launch, so a listing never sees the run without them.

    The folder is assembled under a hidden temp name and renamed into place, so a run folder never exists
    without its config: a process killed while writing it leaves no run behind, and the same run id can be
    started again. ``rename`` onto an existing non-empty folder fails, so two processes never share one;
    an explicit ``run_id`` that exists is an error, a default one gets a numbered suffix.
    """
    root = Path(runs_root)
    if run_id is not None:
        check_run_id(run_id)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(f"Cannot create the runs folder {root} ({error.strerror}); "
                      f"pass a writable --runs-root.") from None
    _remove_abandoned(root)
    base = run_id or new_run_id(model, dataset)
    staging = root / f".{base}{CREATING}{os.getpid()}"
    staging.mkdir()
    try:
        write_annotations(staging, tags, note)
        for name in [base] if run_id is not None else [base, *(f"{base}-{n}" for n in range(2, 1000))]:
            atomic_write_text(staging / CONFIG, config_text(name))
            try:
                os.rename(staging, root / name)
                return root / name
            except OSError:
                if not (root / name).exists():
                    raise
        if run_id is not None:
            raise ValueError(f"Run folder {root / base} already exists and is never overwritten; choose "
                             f"another --run-id or continue it with --resume {root / base}.")
        raise ValueError(f"Too many runs named {base}-* in {root}; pass --run-id.")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _remove_abandoned(root: Path) -> None:
    """Run folders whose creator was killed while assembling them (their pid is gone)."""
    for entry in os.scandir(root):
        name, _, pid = entry.name.rpartition(CREATING)
        abandoned = name.startswith(".") and pid.isdigit() and not process_alive(int(pid))
        if abandoned and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)


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
        return checkpoint_file(self.path, which)

    def take_over(self) -> None:
        """Make the sub-folders and clear the temp files a killed writer left: called by the run's owner only."""
        self.checkpoints.mkdir(exist_ok=True)
        self.artifacts.mkdir(exist_ok=True)
        remove_stale_temps(self.path, self.checkpoints, self.artifacts)

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
        """Drop lines logged after the checkpoint a resumed run restarts from (and damaged ones): no step repeats."""
        if not os.path.lexists(self.metrics_path):
            return
        metrics = read_all_metrics(self.path)
        if metrics.problem:
            raise ValueError(metrics.problem)
        kept = [r for r in metrics.rows if isinstance(r.get("step", 0), int) and r.get("step", 0) <= after_step]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))

    def stop_requested(self) -> bool:
        return self.stop_path.exists()
