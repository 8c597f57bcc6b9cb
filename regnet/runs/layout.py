"""Where things are in a run folder, which names a run may have, and which paths a reader may follow.

Every file name of the contract (docs/run-folder.md) is spelled here and only here; the engine, the CLI and
the dashboard import these names. A run id is a plain folder name (the one rule, checked when a run is
created and used again to list runs), and a run folder is only read or written when it resolves inside
its runs root, so a symlink in runs/ can never lead a reader (or an analysis cache) elsewhere.
"""
from __future__ import annotations

import os
import re
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
# The dashboard's launcher keeps its records (command, pid, output) here, beside the run folders, so a
# launch that dies before its run folder exists still shows up with its error.
LAUNCHES = ".launches"
LAUNCH_SUFFIXES = (".json", ".yaml", ".log")  # a launch's record, resolved config and output, per run id
# What a user adds to a run (the dashboard's Runs page): its tags (a JSON list) and a free-text note.
TAGS = "tags.json"
NOTE = "note.md"
# Deleted runs are moved here (one sub-folder per deletion), so they can be restored; a dot-folder, so
# no listing takes it for a run.
TRASH = ".trash"
# A study folder (``python -m regnet study``) holds its plan and table in study.json, its members' run
# folders beside it, and the members' configs and console output in .members/.
STUDY = "study.json"
STUDY_MEMBERS = ".members"
CHECKPOINT_NAMES = ("best", "last")
# Per-epoch regulator statistics of a RegNet run (one JSON object per epoch), in artifacts/.
REGULATOR = "regulator.jsonl"
# Linear probes and the regulator's channel index, cached per checkpoint and split in artifacts/ as
# <name>-<key>.pt (the key: checkpoint identity, split and options).
PROBE_FEATURES, PROBES, CHANNEL_INDEX = "probe-features", "probes", "channel-index"
# Weights-only snapshots kept every ``train.keep_every`` epochs: checkpoints/epoch-NNN.pt.
SNAPSHOT_PATTERN = re.compile(r"epoch-(\d{3,6})")

RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
RUN_ID_RULE = "1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit"


class RefusedPath(ValueError):
    """A run folder or file that resolves outside its runs root (a symlink): never read, never written."""


def is_run_id(name: str) -> bool:
    """Whether ``name`` may name a run folder (the same rule when creating a run and when listing runs)."""
    return isinstance(name, str) and RUN_ID_PATTERN.fullmatch(name) is not None and ".." not in name


def check_run_id(run_id: str) -> str:
    """``run_id`` itself if it follows the rule, else a one-sentence ValueError naming the rule."""
    if not is_run_id(run_id):
        raise ValueError(f"Run id {run_id!r} is not allowed; use {RUN_ID_RULE}.")
    return run_id


def new_run_id(model: str, dataset: str, now: float | None = None, suffix: str = "") -> str:
    """``<timestamp>-<model>-<dataset>[-<suffix>]``: sorts by start time, says what ran, and follows the rule."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    safe = "-".join(re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9._-]", "-", str(part)))[:40]
                    for part in (model, dataset, suffix) if part)
    return check_run_id(f"{stamp}-{safe}")


def is_inside(root: str | Path, path: str | Path) -> bool:
    """Whether ``path``, every symlink resolved, is ``root`` itself or lies under it."""
    base = Path(root).resolve()
    target = Path(path).resolve()
    return target == base or base in target.parents


def check_inside(root: str | Path, path: str | Path) -> Path:
    """``path`` unchanged if it resolves inside ``root``, else :class:`RefusedPath` with one sentence."""
    if not is_inside(root, path):
        raise RefusedPath(f"{path} resolves outside {root} (a symlink?) and is refused: it is never read or "
                          f"written; move the run into {root} instead of linking it.")
    return Path(path)


def run_dir_in(root: str | Path, run_id: str) -> Path:
    """The folder of run ``run_id`` under ``root``: the id checked by the rule, the folder checked to stay inside."""
    return check_inside(root, Path(root) / check_run_id(run_id))


def checkpoint_file(run_dir: str | Path, which: str) -> Path:
    """``checkpoints/<which>.pt`` of a run (``which`` is best, last, or a snapshot's ``epoch-NNN``)."""
    if which not in CHECKPOINT_NAMES and not SNAPSHOT_PATTERN.fullmatch(str(which)):
        raise ValueError(f"Unknown checkpoint {which!r}; choose best, last or an epoch snapshot (epoch-NNN).")
    return Path(run_dir) / CHECKPOINTS / f"{which}.pt"


def snapshot_name(epoch: int) -> str:
    """The checkpoint name of epoch ``epoch``'s snapshot (``epoch-007``): sorts by epoch up to 999."""
    return f"epoch-{int(epoch):03d}"


def snapshot_file(run_dir: str | Path, epoch: int) -> Path:
    """``checkpoints/epoch-NNN.pt``: the weights after epoch ``epoch`` (1-based), kept by ``train.keep_every``."""
    return checkpoint_file(run_dir, snapshot_name(epoch))


def snapshot_epochs(run_dir: str | Path) -> dict[int, Path]:
    """{epoch: snapshot file} of a run, by epoch; snapshots that resolve outside the run folder are left out."""
    try:
        entries = list(os.scandir(Path(run_dir) / CHECKPOINTS))
    except OSError:
        return {}
    found = {}
    for entry in entries:
        stem, dot, ext = entry.name.partition(".")
        match = SNAPSHOT_PATTERN.fullmatch(stem)
        if match and dot and ext == "pt" and entry.is_file() and is_inside(run_dir, entry.path):
            found[int(match.group(1))] = Path(entry.path)
    return dict(sorted(found.items()))


def checkpoint_path(run_dir: str | Path, which: str | None = None) -> Path | None:
    """The checkpoint a reader should load: ``which`` if given, else best.pt, else last.pt; None if neither exists.

    best.pt is the model the run's status names as best (see ``regnet.runs.state.best_of``); a run that has
    not finished an epoch has neither. A checkpoint that resolves outside the run folder is refused.
    """
    for name in (which,) if which else CHECKPOINT_NAMES:
        path = checkpoint_file(run_dir, name)
        if path.is_file():
            return check_inside(run_dir, path)
    return None


def scan_runs(root: str | Path) -> tuple[list[Path], list[Path]]:
    """(run folders, refused folders) under ``root``, by name.

    A run folder is a sub-folder whose name is a run id and that holds a config.yaml or a status.json: what
    ``python -m regnet train`` creates, and nothing else. A study folder (one holding study.json) is looked
    into, one level deep, by the same rule, so a study's members are listed with every other run. One that
    resolves outside ``root`` (a symlink to a folder elsewhere) is returned as refused and must not be read.
    A missing ``root`` is a ValueError.
    """
    root = Path(root)
    try:
        entries = sorted(os.scandir(root), key=lambda entry: entry.name)
    except FileNotFoundError:
        raise ValueError(f"Runs folder {root} does not exist; pass --runs-root or run folders.") from None
    except NotADirectoryError:
        raise ValueError(f"Runs folder {root} is not a folder; pass --runs-root or run folders.") from None
    runs, refused = [], []
    _scan_entries(root, entries, runs, refused, studies=True)
    return runs, refused


def _scan_entries(root: Path, entries, runs: list[Path], refused: list[Path], studies: bool) -> None:
    exists, join = os.path.exists, os.path.join  # plain strings: pathlib costs more than the stat on 10,000 runs
    for entry in entries:
        if not is_run_id(entry.name):
            continue
        if entry.is_symlink() and not is_inside(root, entry.path):
            refused.append(Path(entry.path))
        elif entry.is_dir() and (exists(join(entry.path, STATUS)) or exists(join(entry.path, CONFIG))):
            runs.append(Path(entry.path))
        elif studies and entry.is_dir() and exists(join(entry.path, STUDY)):
            members = sorted(os.scandir(entry.path), key=lambda member: member.name)
            _scan_entries(root, members, runs, refused, studies=False)
