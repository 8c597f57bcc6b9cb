"""Deleting a run without losing it: the run folder moves into ``<runs root>/.trash/<deletion>/``, restorably.

A deletion is one rename on the same file system (no copy, nothing half-deleted) into a sub-folder named
after the time of deletion, which also takes the run's launch records (``.launches/<run_id>.*``) so that a
deleted run does not come back as a launched-but-missing one. Restoring renames it back when its name is
free. Nothing here ever removes a file: emptying the trash is left to the user (``rm -r runs/.trash``).
Every name is checked by the run-id rule and every folder against the runs root, so a request from a
browser can only move runs that lie inside it.
"""
from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from .layout import LAUNCH_SUFFIXES, LAUNCHES, TRASH, check_inside, check_run_id, is_run_id, run_dir_in
from .read import read_status
from .state import ACTIVE_STATES, reported_state


@dataclass(frozen=True)
class Trashed:
    """A deleted run: the deletion's folder name (what restore takes), the run id and when it was deleted."""

    deletion: str
    run_id: str
    deleted_at: float
    path: Path


def _move_launches(source: Path, target: Path, run_id: str) -> None:
    """Move a run's launch records (if any) from the ``source`` records folder to ``target``'s."""
    for suffix in LAUNCH_SUFFIXES:
        record = source / f"{run_id}{suffix}"
        if record.is_file() and not record.is_symlink():
            target.mkdir(parents=True, exist_ok=True)
            os.replace(record, target / record.name)


def trash_run(runs_root: str | Path, run_id: str) -> Trashed:
    """Move run ``run_id`` into the trash; ValueError (one sentence) for a live, missing or outside run."""
    root = Path(runs_root)
    run_dir = run_dir_in(root, run_id)
    if run_dir.is_symlink() or not run_dir.is_dir():
        raise ValueError(f"There is no run folder {run_id!r} in {root} to delete.")
    try:
        state = reported_state(read_status(run_dir))
    except ValueError:
        state = None  # no status (or a damaged one): nothing claims the run is alive
    if state in ACTIVE_STATES:
        raise ValueError(f"Run {run_id!r} is {state}; stop it before deleting it.")
    deletion = check_run_id(f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}")
    slot = check_inside(root, root / TRASH / deletion)
    slot.mkdir(parents=True)
    os.replace(run_dir, slot / run_id)
    _move_launches(root / LAUNCHES, slot / LAUNCHES, run_id)
    return Trashed(deletion, run_id, time.time(), slot / run_id)


def trashed_runs(runs_root: str | Path) -> list[Trashed]:
    """The deleted runs under ``runs_root``, newest deletion first (only names that follow the run-id rule)."""
    trash = Path(runs_root) / TRASH
    found = []
    try:
        slots = list(os.scandir(trash))
    except OSError:  # no trash yet, or not a folder
        return []
    for slot in slots:
        if not (is_run_id(slot.name) and slot.is_dir(follow_symlinks=False)):
            continue
        for entry in os.scandir(slot.path):
            if is_run_id(entry.name) and entry.is_dir(follow_symlinks=False):
                found.append(Trashed(slot.name, entry.name, slot.stat().st_mtime, Path(entry.path)))
    return sorted(found, key=lambda item: item.deleted_at, reverse=True)


def restore_run(runs_root: str | Path, deletion: str, run_id: str) -> Path:
    """Move a deleted run back to ``<runs_root>/<run_id>``; ValueError when it is gone or the name is taken."""
    root = Path(runs_root)
    slot = check_inside(root, root / TRASH / check_run_id(deletion))
    source = check_inside(root, slot / check_run_id(run_id))
    if source.is_symlink() or not source.is_dir():
        raise ValueError(f"Run {run_id!r} is not in the trash (deletion {deletion}); nothing to restore.")
    target = run_dir_in(root, run_id)
    if os.path.lexists(target):
        raise ValueError(f"A run named {run_id!r} exists again in {root}; rename or delete it before restoring.")
    os.replace(source, target)
    _move_launches(slot / LAUNCHES, root / LAUNCHES, run_id)
    for leftover in (slot / LAUNCHES, slot):
        try:
            leftover.rmdir()  # only when empty
        except OSError:
            pass
    return target
