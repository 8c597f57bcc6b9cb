"""Live: the selected runs' curves, progress, errors and log tails, redrawn whenever an active run writes something.

The page's settings are widgets bound to the URL's query parameters, and the chosen runs are in it as
``?run=``: a refresh, a second tab or a shared link follows the same runs the same way.
"""
import streamlit as st

from dashboard import charts, launcher, ui
from dashboard.runs import progress
from regnet.runs import tail_text

LOG_LINES = 30

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
x_axis = x_col.radio("x axis", list(charts.X_AXES), format_func=charts.X_LABELS.get, horizontal=True, key="live_x",
                     bind="query-params")
smoothing = smooth_col.slider("Smoothing (EMA of per-step curves; never the LR)", 0.0, 0.99, 0.6, 0.01,
                              key="live_smooth", bind="query-params")
default_refresh_s = ui.live_refresh_s()
refresh_choices = sorted({2.0, 5.0, 10.0, 30.0, default_refresh_s})
refresh_s = refresh_col.selectbox("Check every", refresh_choices, format_func=lambda s: f"{s:g} s",
                                  index=refresh_choices.index(default_refresh_s), key="live_refresh",
                                  bind="query-params", help="How often the page looks for new lines.")
log_scales = st.pills("Log scale", [panel.title for panel in charts.PANELS], selection_mode="multi",
                      key="live_log", bind="query-params")
keys = [run.key for run in chosen]


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
        log = tail_text(run.log_path, max_lines=LOG_LINES) if run.log_path and run.state not in (
            "failed", "died") else ""  # a failed run's log tail is in its error box already
        if log:
            with st.expander(f"train.log of `{run.key}` (last {LOG_LINES} lines)", expanded=False):
                st.code(log, language="text")


def chart_grid(frames: dict) -> None:
    """The panels, two a row; a panel whose metrics got no new values keeps its figure object.

    Building figures is much of the page's CPU while it follows a run, and on a small machine that CPU
    is taken from the training. Step lines only move the loss, LR and images/s panels.
    """
    columns = st.columns(2)
    built = st.session_state.get("live_figures", {})
    figures = {}
    for index, panel in enumerate(charts.PANELS):
        log_y = panel.title in (log_scales or [])
        cache_key = (charts.panel_version(frames, panel.metrics), x_axis, smoothing, log_y, index)
        figures[cache_key] = built.get(cache_key) or charts.metric_figure(
            frames, panel, x=x_axis, smoothing=smoothing, log_y=log_y)
        columns[index % 2].plotly_chart(figures[cache_key], key=f"live_chart_{index}",
                                        config={"displaylogo": False})
    st.session_state["live_figures"] = figures


@st.fragment(run_every=refresh_s if any(run.active for run in chosen) else None)
def live_view() -> None:
    """Progress, charts and logs of the followed runs; alone re-run every ``refresh_s`` while one is active.

    Only this part of the page is re-run and re-sent, and only the new lines of each metrics.jsonl are
    read. A run that ends makes one full rerun, which turns the timer off.
    """
    by_key = {run.key: run for run in ui.all_runs()}
    current = [by_key[key] for key in keys if key in by_key]
    frames, notes = {}, {}
    for run in current:
        frames[run.key], notes[run.key] = ui.metrics_of(run)
    run_rows(current, notes)
    chart_grid(frames)
    if st.session_state.get("live_polling") and not any(run.active for run in current):
        st.session_state["live_polling"] = False
        st.rerun()
    st.session_state["live_polling"] = any(run.active for run in current)


live_view()
