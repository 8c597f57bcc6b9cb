"""Starting and stopping training runs as separate processes.

A run is ``python -m regnet train`` in its own session (process group), never a thread of the Streamlit
server: it survives a browser refresh or a server restart, and a run started here is the same as one
started from a terminal. Nothing here waits: ``request_stop`` only creates the STOP file, and
``enforce_stops`` (called on every rerun) kills the process group of a run that ignored it for longer than
the grace period.
"""
from __future__ import annotations

import copy
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import yaml

from dashboard.runs import LAUNCH_DIR, STOP_FILE, RunInfo, process_alive, resolve_under

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIGS_DIR = REPO_ROOT / "configs"
STOP_GRACE_S = 30.0

# The contract's config (docs/run-folder.md, "Config"); the New-run form starts from it or from a ready config.
DEFAULT_CONFIG = {
    "model": {"name": "regnet20", "options": {"cell": "lstm", "gates": "efficient", "se": False}},
    "data": {"name": "shapes", "root": "data", "val_ratio": 0.1, "split_seed": 0, "augment": True,
             "color_jitter": False, "workers": 2, "size": None},
    "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0001,
              "betas": [0.9, 0.999]},
    "schedule": {"name": "multistep", "milestones": [0.5, 0.75], "gamma": 0.1, "warmup_epochs": 0},
    "train": {"epochs": 10, "batch_size": 128, "device": "auto", "seed": 0, "amp": False, "channels_last": False,
              "grad_clip": None, "label_smoothing": 0.0, "early_stop_metric": "val_top1",
              "early_stop_patience": None, "log_every": 20},
    "run": {"runs_root": "runs", "run_id": None},
}
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("multistep", "cosine", "warmup_cosine", "onecycle", "constant")

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


def merge_config(base: dict, override: dict) -> dict:
    """``base`` with ``override``'s keys replaced, recursively (a ready config over the defaults)."""
    merged = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_config(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def ready_configs(configs_dir: Path = CONFIGS_DIR) -> dict[str, Path]:
    """The ready configs shipped in configs/*.yaml, by file stem."""
    return {path.stem: path for path in sorted(Path(configs_dir).glob("*.yaml"))}


def load_ready_config(path: Path) -> dict:
    """A ready config merged over the defaults; ValueError with one sentence when it is not readable."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"Config {Path(path).name} could not be read ({type(error).__name__}); fix or remove it.")
    if not isinstance(data, dict):
        raise ValueError(f"Config {Path(path).name} is not a YAML mapping; fix or remove it.")
    config = merge_config(DEFAULT_CONFIG, data)
    # Options belong to a model: the default model's (cell, gates) must not leak into, say, resnet20.
    config["model"]["options"] = dict((data.get("model") or {}).get("options") or {})
    return config


def new_run_id(model: str, dataset: str) -> str:
    """A sortable, unique, path-safe run id: time, model, data set and a random suffix."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    safe = lambda text: "".join(c if c.isalnum() or c in "._-" else "-" for c in str(text))[:40]
    return f"{stamp}-{safe(model)}-{safe(dataset)}-{secrets.token_hex(2)}"


def build_command(config_path: Path, runs_root: Path, run_id: str) -> list[str]:
    """The command line of a run: the same CLI a user would type."""
    return [sys.executable, "-m", "regnet", "train", "--config", str(config_path),
            "--runs-root", str(runs_root), "--run-id", run_id]


def start_run(config: dict, runs_root: Path, run_id: str | None = None) -> Launch:
    """Launch ``python -m regnet train`` for ``config`` in a new session and return at once.

    The resolved config is written next to the launch record (runs_root/.launches/<run_id>.yaml) and the
    child's stdout and stderr go to <run_id>.log there, so an error before the run folder exists is
    still on disk for the Runs and Live pages.
    """
    runs_root = Path(runs_root).resolve()
    run_id = run_id or new_run_id(config["model"]["name"], config["data"]["name"])
    run_dir = resolve_under(runs_root, run_id)
    if run_dir.exists():
        raise ValueError(f"Run {run_id!r} already exists in {runs_root}; choose another run id.")
    launches = runs_root / LAUNCH_DIR
    launches.mkdir(parents=True, exist_ok=True)
    config = merge_config(config, {"run": {"runs_root": str(runs_root), "run_id": run_id}})
    config_path = launches / f"{run_id}.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    log_path = launches / f"{run_id}.log"
    command = build_command(config_path, runs_root, run_id)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True, env=env, close_fds=True)
    _CHILDREN[process.pid] = process
    record = {"run_id": run_id, "pid": process.pid, "started_at": time.time(), "command": command,
              "log": str(log_path), "config": str(config_path), "model": config["model"]["name"],
              "dataset": config["data"]["name"]}
    temporary = launches / f".{run_id}.json.tmp"
    temporary.write_text(json.dumps(record, indent=1))
    os.replace(temporary, launches / f"{run_id}.json")
    return Launch(run_id, process.pid, run_dir, log_path, command)


def reap() -> None:
    """Collect the exit status of finished children so they do not linger as zombies."""
    for pid, process in list(_CHILDREN.items()):
        if process.poll() is not None:
            del _CHILDREN[pid]


def request_stop(run_dir: Path) -> None:
    """Ask a run to stop cleanly: create its STOP file (its mtime is the time of the first request)."""
    stop = Path(run_dir) / STOP_FILE
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
        if run.source != "run" or run.stop_requested_at is None or not run.active or not process_alive(run.pid):
            continue
        waited = now - run.stop_requested_at
        if waited >= grace_s:
            _signal(run.pid, signal.SIGKILL if waited >= 2 * grace_s else signal.SIGTERM)
            killed.append(run.key)
    return killed


def count_running(runs: Sequence[RunInfo]) -> int:
    """How many runs (not shipped ones) are starting, queued or running."""
    return sum(1 for run in runs if run.source == "run" and run.active)
