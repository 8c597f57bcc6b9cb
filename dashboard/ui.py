"""Streamlit glue shared by the pages: where runs live, which runs are selected, cached reading.

Only what the user chose (the runs root, the selected runs) lives in ``st.session_state``; everything else
is read from disk on each rerun, so a refresh, a second tab or a server restart shows the same thing.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import launcher
from dashboard.runs import (
    LIVE_METRICS, STATUS_FILE, STOP_FILE, RunInfo, discover_runs, metrics_frame, process_alive, read_new_metrics,
    tail_text,
)

RUNS_ROOT_ENV = "REGNET_RUNS_ROOT"
CHECKPOINTS_ROOT_ENV = "REGNET_CHECKPOINTS_ROOT"
LIVE_REFRESH_ENV = "REGNET_LIVE_REFRESH_S"
SELECTED = "selected_runs"


def runs_root() -> Path:
    """The runs folder chosen in the sidebar (default: $REGNET_RUNS_ROOT or ``runs``, as the CLI)."""
    return Path(st.session_state.get("runs_root") or os.environ.get(RUNS_ROOT_ENV) or "runs").expanduser()


def checkpoints_root() -> Path:
    """Where the shipped runs live: $REGNET_CHECKPOINTS_ROOT or the repository's checkpoints/."""
    return Path(os.environ.get(CHECKPOINTS_ROOT_ENV) or launcher.REPO_ROOT / "checkpoints")


def live_refresh_s() -> float:
    """Seconds between checks for new run output (env override for tests and slow machines).

    5 s by default: each check that finds new lines redraws charts, and on a 2-core machine the browser's
    and the server's share of that work is taken from the training being watched.
    """
    try:
        return max(0.5, float(os.environ.get(LIVE_REFRESH_ENV, "5")))
    except ValueError:
        return 5.0


def all_runs() -> list[RunInfo]:
    """Every run and shipped run, read from disk now, with overdue stop requests enforced."""
    launcher.reap()
    try:
        runs = discover_runs(runs_root(), checkpoints_root())
    except OSError as error:  # e.g. a runs folder we may not read
        st.error(f"Could not read the runs folder {runs_root()} ({error.strerror or error}); "
                 "choose another folder in the sidebar.")
        return []
    launcher.enforce_stops(runs)
    return runs


def sidebar() -> None:
    """The runs-root box and the running count, on every page."""
    with st.sidebar:
        st.text_input("Runs folder", value=os.environ.get(RUNS_ROOT_ENV) or "runs", key="runs_root",
                      help="Folder holding one sub-folder per run (the CLI's --runs-root).")
        root = runs_root()
        if not root.is_dir():
            st.caption(f"`{root}` is not a folder yet; the first run creates it.")
            return
        try:
            running = launcher.count_running(discover_runs(root))
        except OSError:
            return  # the page says what is wrong with the folder
        st.caption(f"{running} run{'s' if running != 1 else ''} running" if running else "No run is running.")


def selected_keys(runs: list[RunInfo]) -> list[str]:
    """The selected run keys that still exist.

    A fresh session (a new tab, a bookmark) starts from ``?run=<key>&run=<key>`` in the URL, if given.
    Keys are only ever matched against the runs found on disk, never used as paths.
    """
    known = {run.key for run in runs}
    if SELECTED not in st.session_state and st.query_params.get_all("run"):
        st.session_state[SELECTED] = st.query_params.get_all("run")
    return [key for key in st.session_state.get(SELECTED, []) if key in known]


def run_picker(runs: list[RunInfo], label: str = "Runs", key: str = "picker") -> list[RunInfo]:
    """A multiselect bound to the shared selection (kept outside the widget so it survives page changes)."""
    keys = [run.key for run in runs]
    widget_key = f"_select_{key}"
    st.session_state[widget_key] = selected_keys(runs)

    def copy_selection() -> None:
        st.session_state[SELECTED] = list(st.session_state[widget_key])

    chosen = st.multiselect(label, keys, key=widget_key, on_change=copy_selection,
                            placeholder="Choose runs (newest first)")
    by_key = {run.key: run for run in runs}
    return [by_key[k] for k in chosen]


def change_signature(runs: list[RunInfo]) -> tuple:
    """What a live view of ``runs`` shows, in a few ``stat`` calls: its files' sizes and times, and its process.

    Cheap on purpose: a page polls it every refresh, on the machine that trains.
    """

    def stamp(path: Path) -> tuple[int, int] | None:
        try:
            stat = path.stat()
        except OSError:
            return None
        return stat.st_size, stat.st_mtime_ns

    return tuple((run.key, stamp(run.path / STATUS_FILE), stamp(run.metrics_path), stamp(run.path / STOP_FILE),
                  process_alive(run.pid)) for run in runs)


@st.cache_data(show_spinner=False, max_entries=512)
def _finished_metrics(path: str, size: int, mtime_ns: int) -> tuple[list[dict], int]:
    """A finished run's rows, cached on (path, size, mtime): the file only changes if the run resumes."""
    bad: list = []
    rows, _ = read_new_metrics(Path(path), 0, bad_lines=bad)
    return rows, len(bad)


def metrics_of(run: RunInfo) -> tuple[pd.DataFrame, int]:
    """(metrics table, corrupt lines skipped) for a run: incremental while active, cached once finished."""
    path = run.metrics_path
    if run.active:
        rows, corrupt = LIVE_METRICS.read(path)
    else:
        try:
            stat = path.stat()
        except OSError:
            return metrics_frame([]), 0
        rows, corrupt = _finished_metrics(str(path), stat.st_size, stat.st_mtime_ns)
    return metrics_frame(rows, run.steps_per_epoch), corrupt


def show_run_problems(run: RunInfo, corrupt: int = 0) -> None:
    """A failed run's error and log tail in a red box; a corrupt file's problem as a warning."""
    if run.state == "failed":
        log = tail_text(run.log_path, max_lines=25) if run.log_path else ""
        body = f"**{run.key} failed:** {run.error or 'no error was recorded.'}"
        if log:
            body += f"\n\n```text\n{log}\n```"
        st.error(body)
    if run.problem:
        st.warning(f"{run.key}: {run.problem}")
    if corrupt:
        st.warning(f"{run.key}: skipped {corrupt} corrupt line{'s' if corrupt != 1 else ''} in metrics.jsonl.")
