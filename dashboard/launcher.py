"""Starting and stopping training runs as separate processes.

A run is ``python -m regnet train`` in its own session (process group), never a thread of the Streamlit
server: it survives a browser refresh or a server restart, and a run started here is the same as one
started from a terminal. Nothing here waits: ``request_stop`` only creates the STOP file, and
``enforce_stops`` (called on every rerun) kills the process group of a run that ignored it for longer than
the grace period.
"""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


from regnet.dashboard.run_listing import RunInfo
from regnet.runs import (LAUNCHES, RESUMABLE_STATES, STOP, atomic_write_json, atomic_write_text, check_note,
                         clean_tags, new_run_id as contract_run_id, process_alive, process_start, read_config_dict,
                         read_yaml_mapping, run_dir_in)
from regnet.shipped import ready_configs  # noqa: F401 (the New-run form's list)
from regnet.train.config import OPTIMIZERS, SCHEDULES  # noqa: F401 (the form's choices)
from regnet.train.config import Config, build_config, config_to_dict, dump_config, merge_layers

STOP_GRACE_S = 30.0

# The engine's own defaults (regnet.train.config); the New-run form starts from them or from a ready config.
DEFAULT_CONFIG = config_to_dict(Config())
DATA_FILLED = ("num_classes", "in_channels", "class_names", "input_side")  # model keys a run fills from its data

# Popen objects of the runs this server started, so finished children are reaped instead of lingering
# as zombies (which would look alive to ``process_alive``'s kill(pid, 0)).
_CHILDREN: dict[int, subprocess.Popen] = {}


@dataclass
class Launch:
    run_id: str
    pid: int
    run_dir: Path
    log_path: Path
    command: list[str]




def load_ready_config(path: Path) -> dict:
    """A ready config over the defaults (``merge_layers``: its own model's options only), for the form to show.

    Its values are checked where the form shows them; a file that cannot be read, or names a key the schema
    does not have, is a ``ValueError`` with one sentence.
    """
    try:
        return merge_layers(read_yaml_mapping(path))
    except (OSError, ValueError) as error:
        raise ValueError(f"Config {Path(path).name} could not be read ({error}); fix or remove it.") from None


def new_run_id(model: str, dataset: str) -> str:
    """The contract's run id (time, model, data set) with a random suffix, so two launches never collide."""
    return contract_run_id(model, dataset, suffix=secrets.token_hex(2))


def build_command(config_path: Path, runs_root: Path, run_id: str, tags: Sequence[str] = (),
                  note: str = "") -> list[str]:
    """The command line of a run: the same CLI a user would type."""
    annotations = [part for tag in tags for part in ("--tag", tag)] + (["--note", note] if note else [])
    return [sys.executable, "-m", "regnet", "train", "--config", str(config_path),
            "--runs-root", str(runs_root), "--run-id", run_id, *annotations]


def start_run(config: Config | dict, runs_root: Path, run_id: str | None = None, tags: Sequence[str] = (),
              note: str = "") -> Launch:
    """Check ``config`` (``build_config``), then launch ``python -m regnet train`` for it in a new session,
    the run named ``run_id`` (or a new id) and given ``tags`` and ``note`` (its folder appears with them).

    A config the engine would refuse, a run id against the rule, a bad tag or an overlong note raise
    (``ConfigError`` or ``ValueError``, one sentence) before anything is written. The resolved
    config is written next to the launch record (runs_root/.launches/<run_id>.yaml) and the child's stdout
    and stderr go to <run_id>.log there, so an error before the run folder exists is still on disk for the
    Runs and Live pages.
    """
    config = build_config(config)
    tags, note = clean_tags(tags), check_note(note)
    runs_root = Path(runs_root).resolve()
    run_id = run_id or new_run_id(config.model.name, config.data.name)
    run_dir = run_dir_in(runs_root, run_id)
    if os.path.lexists(run_dir):
        raise ValueError(f"Run {run_id!r} already exists in {runs_root}; choose another run id.")
    launches = runs_root / LAUNCHES
    launches.mkdir(parents=True, exist_ok=True)
    config = build_config({"run": {"runs_root": str(runs_root), "run_id": run_id}}, base=config)
    config_path = launches / f"{run_id}.yaml"
    atomic_write_text(config_path, dump_config(config))
    return _spawn(build_command(config_path, runs_root, run_id, tags, note), runs_root, run_id,
                  {"config": str(config_path), "model": config.model.name, "dataset": config.data.name,
                   "tags": tags, "note": note})


def _spawn(command: list[str], runs_root: Path, run_id: str, extra: dict) -> Launch:
    """Start ``command`` in its own session, its output appended to the launch log, and write its launch record."""
    launches = runs_root / LAUNCHES
    launches.mkdir(parents=True, exist_ok=True)
    log_path = launches / f"{run_id}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True, env=env, close_fds=True)
    _CHILDREN[process.pid] = process
    record = {"run_id": run_id, "pid": process.pid, "pid_start": process_start(process.pid), "started_at": time.time(),
              "command": command, "log": str(log_path), **extra}
    atomic_write_json(launches / f"{run_id}.json", record)
    return Launch(run_id, process.pid, run_dir_in(runs_root, run_id), log_path, command)


def resume_run(run: RunInfo, runs_root: Path) -> Launch:
    """Continue a stopped, failed or died run: ``python -m regnet train --resume <run>``, as from a terminal.

    The launch record is replaced (new pid), so the Runs and Live pages follow the resumed process; the
    engine itself refuses a run that is alive or finished, and that sentence lands in the launch log.
    """
    runs_root = Path(runs_root).resolve()
    if run.source != "run" or run.state not in RESUMABLE_STATES:
        raise ValueError(f"Run {run.key} is {run.state}; only a stopped, failed or died run can be resumed.")
    run_dir = run_dir_in(runs_root, run.key)
    # The STOP file of the stop that ended it would read as a request to stop the resumed process (and, older
    # than the grace period, get it killed at once); the engine removes it too, but only once it is up.
    (run_dir / STOP).unlink(missing_ok=True)
    command = [sys.executable, "-m", "regnet", "train", "--resume", str(run_dir)]
    return _spawn(command, runs_root, run.key, {"model": run.model, "dataset": run.dataset, "resumed": True})


def config_of_run(run_dir: Path) -> dict:
    """A run's config.yaml as the New-run form's starting point (``merge_layers``), as a new run would start it.

    No run id, and none of what the run filled in from its data set (classes, channels, class names, side),
    so the clone may train on other data. ValueError (one sentence) when the run has no readable config.
    """
    fresh = {"run": DEFAULT_CONFIG["run"], "model": {key: None for key in DATA_FILLED}}
    return merge_layers(read_config_dict(run_dir), fresh)


def reap() -> None:
    """Collect the exit status of finished children so they do not linger as zombies."""
    for pid, process in list(_CHILDREN.items()):
        if process.poll() is not None:
            del _CHILDREN[pid]


def request_stop(run_dir: Path) -> None:
    """Ask a run to stop cleanly: create its STOP file (its mtime is the time of the first request)."""
    stop = Path(run_dir) / STOP
    if not stop.exists():
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        stop.touch()


def _signal(pid: int, sig: int) -> None:
    # Only a process that leads its own group (as every run launched here does) has its group killed,
    # so a CLI run sharing a terminal's or a test runner's group never takes its parent down with it.
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def enforce_stops(runs: Sequence[RunInfo], grace_s: float = STOP_GRACE_S, now: float | None = None) -> list[str]:
    """Kill runs that were asked to stop more than ``grace_s`` ago and are still alive; return their keys.

    SIGTERM first; SIGKILL once twice the grace period has passed. Returns immediately either way.
    """
    now = time.time() if now is None else now
    killed = []
    for run in runs:
        if run.source != "run" or run.stop_requested_at is None or not run.active or not process_alive(
                run.pid, run.owner.get("pid_start")):
            continue
        waited = now - run.stop_requested_at
        if waited >= grace_s:
            _signal(run.pid, signal.SIGKILL if waited >= 2 * grace_s else signal.SIGTERM)
            killed.append(run.key)
    return killed


def count_running(runs: Sequence[RunInfo]) -> int:
    """How many runs (not shipped ones) are starting, queued or running."""
    return sum(1 for run in runs if run.source == "run" and run.active)
