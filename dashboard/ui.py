"""Streamlit glue shared by the pages: where runs live, which runs are selected, cached reading.

Only what the user chose (the runs root, the selected runs) lives in ``st.session_state``; everything else
is read from disk on each rerun, so a refresh, a second tab or a server restart shows the same thing. The
chosen runs and each page's settings are also in the URL (``?run=...``, and widgets bound to query
parameters), so a refresh, a bookmark or a shared link opens the same view.
"""
from __future__ import annotations

import ipaddress
import os
from functools import lru_cache
from pathlib import Path

import pandas as pd
import streamlit as st

from regnet.dashboard import launcher
from regnet.dashboard.run_listing import LIVE_METRICS, RunInfo, discover_runs, metrics_frame, system_rows
from regnet.runs import FAILED_STATES, STATUS, STOP, owner_alive, tail_text
from regnet.shipped import shipped_runs_dir

RUNS_ROOT_ENV = "REGNET_RUNS_ROOT"
CHECKPOINTS_ROOT_ENV = "REGNET_CHECKPOINTS_ROOT"
LIVE_REFRESH_ENV = "REGNET_LIVE_REFRESH_S"
SELECTED = "selected_runs"
RUNS_PARAM = "run"  # the chosen runs in a page's URL: ?run=<key>&run=<key>
CLONE_PARAM = "clone"  # New run?clone=<run key>: the form starts from that run's config
_FLASH = "_flash_message"


@lru_cache(maxsize=1)
def page_icon():
    """The browser tab's icon, drawn here (a hub: three nodes around a centre) so no page fetches one."""
    from PIL import Image, ImageDraw

    size, blue, white = 64, (46, 111, 219), (255, 255, 255)
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((0, 0, size - 1, size - 1), radius=14, fill=blue)
    centre, nodes = (32, 34), [(32, 12), (13, 46), (51, 46)]
    for node in nodes:
        draw.line((centre, node), fill=white, width=4)
    for x, y in [centre, *nodes]:
        draw.ellipse((x - 7, y - 7, x + 7, y + 7), fill=white)
    return image


def runs_root() -> Path:
    """The runs folder chosen in the sidebar (default: $REGNET_RUNS_ROOT or ``runs``, as the CLI)."""
    return Path(st.session_state.get("runs_root") or os.environ.get(RUNS_ROOT_ENV) or "runs").expanduser()


def checkpoints_root() -> Path:
    """Where the shipped runs live: $REGNET_CHECKPOINTS_ROOT or the package's (``regnet.shipped``)."""
    return Path(os.environ.get(CHECKPOINTS_ROOT_ENV) or shipped_runs_dir())


def live_refresh_s() -> float:
    """Seconds between checks for new run output (env override for tests and slow machines).

    4 s by default: a new line shows about 2 s after it is written (median; W&B users see points within
    seconds). Each check re-runs only the Live page's fragment, and costs the server and the browser about
    0.1-0.2 CPU-s whatever it finds (a Streamlit run re-renders the page's tree; a trivial fragment alone
    costs about half of that), so the check interval sets the page's cost: at 4 s it is about 0.06 CPU-s per
    second of watching (bench/dashboard_overhead.py). The Live page offers 1, 2, 5, 10 and 30 s too.
    """
    try:
        return max(0.5, float(os.environ.get(LIVE_REFRESH_ENV, "4")))
    except ValueError:
        return 4.0


def is_local_client(ip: str | None) -> bool:
    """Whether a client address is this machine: Streamlit gives None for a loopback connection (and in tests)."""
    if ip is None:
        return True
    try:
        return ipaddress.ip_address(ip.split("%")[0]).is_loopback
    except ValueError:
        return False


def client_ip() -> str | None:
    """The connection's address as Streamlit reports it (None for loopback, or where there is no connection)."""
    ip = getattr(st.context, "ip_address", None)
    return ip if isinstance(ip, str) else None


def refuse_remote_client() -> None:
    """Stop the page for a client that is not on the loopback address: the lab serves the local machine only.

    The server binds localhost (.streamlit/config.toml); this holds even when a flag or an
    environment variable made it listen elsewhere.
    """
    ip = client_ip()
    if not is_local_client(ip):
        st.error(f"RegNet Lab serves only the machine it runs on; this connection comes from {ip} and is refused.")
        st.stop()


def all_runs(include_refused: bool = False) -> list[RunInfo]:
    """Every run and shipped run, read from disk now (each folder re-read only if it changed), stops enforced.

    Folders that resolve outside their root (symlinks) are refused: only the Runs page asks for them, to say
    so; every other page never sees them, so nothing ever reads or writes through them.
    """
    launcher.reap()
    try:
        runs = discover_runs(runs_root(), checkpoints_root())
    except OSError as error:  # e.g. a runs folder we may not read
        st.error(f"Could not read the runs folder {runs_root()} ({error.strerror or error}); "
                 "choose another folder in the sidebar.")
        return []
    launcher.enforce_stops(runs)
    return runs if include_refused else [run for run in runs if not run.refused]


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
    if SELECTED not in st.session_state and st.query_params.get_all(RUNS_PARAM):
        st.session_state[SELECTED] = st.query_params.get_all(RUNS_PARAM)
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
    show_in_url(RUNS_PARAM, chosen)
    by_key = {run.key: run for run in runs}
    return [by_key[k] for k in chosen]


def show_in_url(name: str, values: list[str]) -> None:
    """Put ``values`` in the page's URL as ``?name=a&name=b`` (removed when empty), so that a refresh, a
    second tab, a bookmark or a shared link opens the same view. Written only when it changed: each write
    is a message to the browser.
    """
    if st.query_params.get_all(name) == list(values):
        return
    if values:
        st.query_params[name] = list(values)
    else:
        del st.query_params[name]


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

    return tuple((run.key, stamp(run.path / STATUS), stamp(run.metrics_path), stamp(run.path / STOP),
                  owner_alive(run.owner) if run.active else None) for run in runs)


def metrics_of(run: RunInfo) -> tuple[pd.DataFrame, list[str]]:
    """(metrics table, sentences about a damaged file) for a run; only new bytes are read on each rerun.

    A refused run (outside its root) is never read.
    """
    if run.refused:
        return metrics_frame([]), []
    read = LIVE_METRICS.read(run.metrics_path)
    notes = [read.problem] if read.problem else []
    if read.damaged:
        notes.append(f"skipped {read.damaged} corrupt line{'s' if read.damaged != 1 else ''} in metrics.jsonl.")
    return _frame(str(run.metrics_path), read.rows, run.steps_per_epoch), notes


_FRAMES: dict[str, tuple[tuple, pd.DataFrame]] = {}  # metrics path -> (what it was built from, the table)


def _frame(path: str, rows: list[dict], steps_per_epoch: int | None) -> pd.DataFrame:
    """The metrics table of ``rows``, rebuilt only when the file gained lines: a page that checks a run every
    second builds it once per new line, not once per check (tables are read, never changed, by the pages)."""
    key = (len(rows), steps_per_epoch)
    cached = _FRAMES.get(path)
    if cached is None or cached[0] != key:
        cached = _FRAMES[path] = (key, metrics_frame(rows, steps_per_epoch))
    return cached[1]


def system_of(run: RunInfo) -> list[dict]:
    """The run's system lines (where each epoch's time went), from the same tail reader as its metrics."""
    return [] if run.refused else system_rows(LIVE_METRICS.read(run.metrics_path).rows)


def show_run_problems(run: RunInfo, notes: list[str] = ()) -> None:
    """A failed or died run's error and log tail in a red box; a damaged file's problem as a warning."""
    if run.state in FAILED_STATES:
        log = tail_text(run.log_path, max_lines=25) if run.log_path else ""
        body = f"**{run.key} {run.state}:** {run.error or 'no error was recorded.'}"
        if log:
            body += f"\n\n```text\n{log}\n```"
        st.error(body)
    for note in ([run.problem] if run.problem else []) + list(notes):
        st.warning(f"{run.key}: {note}")


def flash(message: str) -> None:
    """A success message for the next rerun (an action's result, shown after the rerun that reflects it)."""
    st.session_state[_FLASH] = message


def show_flash() -> None:
    message = st.session_state.pop(_FLASH, None)
    if message:
        st.success(message)


def clone_source() -> tuple[str, dict] | None:
    """(label, config) of the run named by ``?clone=<run key>``, or None; the key is matched against the listing.

    A key that names no listed run, or a run without a readable config, is one warning on the page.
    """
    key = st.query_params.get(CLONE_PARAM)
    if not key:
        return None
    run = next((run for run in all_runs() if run.key == key), None)
    if run is None:
        st.warning(f"There is no run {key!r} to clone in the runs folder; the form starts from the defaults.")
        return None
    try:
        return f"clone of {run.key}", launcher.config_of_run(run.path)
    except ValueError as error:
        st.warning(f"Cannot clone {run.key}: {error}")
        return None
