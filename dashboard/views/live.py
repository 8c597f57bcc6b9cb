"""Live: the selected runs' curves, progress, errors and log tails, redrawn whenever an active run writes something.

The page's settings are widgets bound to the URL's query parameters, and the chosen runs are in it as
``?run=``: a refresh, a second tab or a shared link follows the same runs the same way.

Following a run must cost little (the machine that draws is the one that trains): only the part of the
page that metric lines move (progress and the charts) is re-run at each check, from the new lines of each
metrics.jsonl (the tail reader); a chart's spec is rebuilt only when its metrics gained values, and all
charts are one element that takes new points in place (``live_chart``). The regulator and the system
sections are sent again only when a regulator line or a system line arrived.
"""
import streamlit as st

from regnet.dashboard import charts, launcher, live_regulator, ui
from regnet.dashboard.live_chart import line_charts
from regnet.dashboard.run_listing import progress
from regnet.runs import FAILED_STATES, tail_text

LOG_LINES = 30
EPOCH_VERSION = "live_epoch_version"

st.title("Live")
runs = ui.all_runs()
if not runs:
    st.info("No runs yet. Start one on **New run**.")
    st.stop()

chosen = ui.run_picker(runs, "Runs to follow", key="live")
if not chosen:
    # Nothing selected: follow what is running, else the newest run.
    chosen = [run for run in runs if run.source == "run" and run.active] or runs[:1]
    st.caption(f"Following {', '.join(f'`{run.key}`' for run in chosen)}; choose runs above or on **Runs**.")

x_col, smooth_col, refresh_col = st.columns([2, 3, 1])
x_axis = x_col.radio("x axis", list(charts.X_AXES), horizontal=True, key="live_x",
                     bind="query-params")
smoothing = smooth_col.slider("Smoothing (EMA of per-step curves; never the LR)", 0.0, 0.99, 0.6, 0.01,
                              key="live_smooth", bind="query-params")
default_refresh_s = ui.live_refresh_s()
refresh_choices = sorted({1.0, 2.0, 5.0, 10.0, 30.0, default_refresh_s})
refresh_s = refresh_col.selectbox("Check every", refresh_choices, format_func=lambda s: f"{s:g} s",
                                  index=refresh_choices.index(default_refresh_s), key="live_refresh",
                                  bind="query-params", help="How often the page looks for new lines.")
log_scales = st.pills("Log scale", [panel.title for panel in charts.PANELS], selection_mode="multi",
                      key="live_log", bind="query-params") or []
keys = [run.key for run in chosen]


def read_frames(current: list) -> tuple[dict, dict]:
    """Each run's metrics table and the sentences about its damaged files (only new bytes are read)."""
    frames, notes = {}, {}
    for run in current:
        frames[run.key], notes[run.key] = ui.metrics_of(run)
    return frames, notes


def run_rows(current: list, notes: dict) -> None:
    """Each run's progress line, Stop button, problems, and (collapsed) the tail of its train.log."""
    for run in current:
        state = progress(run)
        text_col, button_col = st.columns([6, 1])
        text_col.progress(state.fraction, text=f"`{run.key}` · {run.model or '?'} on {run.dataset or '?'} · "
                                               f"{state.text}")
        if run.source == "run" and run.active:
            if run.stop_requested_at:
                button_col.caption("stop requested")
            elif button_col.button("Stop", key=f"live_stop_{run.key}"):
                launcher.request_stop(run.path)
                st.rerun()
        ui.show_run_problems(run, notes[run.key])
        # A failed run's log tail is in its error box already.
        log = tail_text(run.log_path, max_lines=LOG_LINES) if run.log_path and run.state not in FAILED_STATES else ""
        if log:
            with st.expander(f"train.log of `{run.key}` (last {LOG_LINES} lines)", expanded=False):
                st.code(log, language="text")


def chart_grid(frames: dict) -> None:
    """Every panel, two a row, in one element that takes new points in place (``live_chart``); a panel
    whose metrics got no new values keeps its spec object and version, so the browser redraws nothing."""
    built, specs = st.session_state.get("live_specs", {}), {}
    for panel in charts.PANELS:
        log_y = panel.title in log_scales
        key = (charts.panel_version(frames, [panel]), x_axis, smoothing, log_y, panel.title)
        specs[key] = built.get(key) or {**charts.line_spec(frames, panel, x=x_axis, smoothing=smoothing,
                                                           log_y=log_y), "version": repr(key)}
    line_charts(list(specs.values()), key="live_charts")
    st.session_state["live_specs"] = specs


def epoch_version(current: list) -> tuple:
    """What the full-run part shows: each run's count of system lines and the size of its regulator
    statistics (both gain a line at an epoch's end)."""
    return tuple(len(ui.system_of(run)) for run in current), live_regulator.version(current)


def system_section(current: list) -> None:
    """Where each epoch's time went (a stacked bar) and the process's CPU and memory, per run, as W&B's
    system panel; from the system lines the engine writes at each epoch's end."""
    st.subheader("System")
    with_rows = [(run, rows) for run in current if (rows := ui.system_of(run))]
    if not with_rows:
        st.caption("Where each epoch's time goes (data loading, training steps, evaluation, regulator probe, "
                   "checkpoints) and the training process's CPU and memory appear here after the first epoch.")
        return
    for run, rows in with_rows:
        last = rows[-1]
        gpu = f", peak GPU memory {last['gpu_max_memory_mb']:,.0f} MiB" if "gpu_max_memory_mb" in last else ""
        st.caption(f"`{run.key}`, epoch {last['epoch']}: {last['wall_s']:.1f} s, {last['cpu_cores']:.2f} CPU cores "
                   f"busy on average, peak memory {last['max_rss_mb']:,.0f} MiB{gpu}.")
        chart_col, table_col = st.columns([3, 2])
        chart_col.plotly_chart(charts.system_figure(rows), key=f"live_system_{run.key}",
                               config={"displaylogo": False})
        table_col.dataframe(charts.system_table(rows), hide_index=True,
                            column_config={"epoch": st.column_config.NumberColumn(format="%d"),
                                           "epoch s": st.column_config.NumberColumn(format="%.1f"),
                                           "CPU cores": st.column_config.NumberColumn(format="%.2f"),
                                           "peak RSS MiB": st.column_config.NumberColumn(format="%.0f"),
                                           "peak GPU MiB": st.column_config.NumberColumn(format="%.0f")})


@st.fragment(run_every=refresh_s if any(run.active for run in chosen) else None)
def live_view() -> None:
    """Progress and the metric charts, alone re-run every ``refresh_s`` while a followed run is active.

    A chart whose metrics gained no values is sent as it was and redraws nothing. A new system or
    regulator line, or the end of the last active run, makes one full rerun: it redraws those sections,
    and turns the timer off when nothing is active any more.
    """
    by_key = {run.key: run for run in ui.all_runs()}
    current = [by_key[key] for key in keys if key in by_key]
    frames, notes = read_frames(current)
    run_rows(current, notes)
    live_regulator.probe_notes(current)
    chart_grid(frames)
    still_active = any(run.active for run in current)
    if st.session_state.get("live_polling") and (not still_active or epoch_version(
            current) != st.session_state.get(EPOCH_VERSION)):
        st.rerun()
    st.session_state["live_polling"] = still_active


st.session_state[EPOCH_VERSION] = epoch_version(chosen)
st.session_state["live_polling"] = False  # the fragment's first run is part of this full run
live_view()
live_regulator.show(chosen)
system_section(chosen)
