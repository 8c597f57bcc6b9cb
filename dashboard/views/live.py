"""Live: the selected runs' curves, progress and errors, refreshing by themselves while a run is active."""
import streamlit as st

from dashboard import charts, launcher, ui
from dashboard.runs import progress

st.title("Live")
runs = ui.all_runs()
if not runs:
    st.info("No runs yet. Start one on **New run**.")
    st.stop()

chosen = ui.run_picker(runs, "Runs to follow", key="live")
if not chosen:
    # Nothing selected (e.g. after a browser refresh): follow what is running, else the newest run.
    chosen = [run for run in runs if run.source == "run" and run.active] or runs[:1]
    st.caption(f"Following {', '.join(f'`{run.key}`' for run in chosen)}; choose runs above or on **Runs**.")

x_col, smooth_col = st.columns([1, 2])
x_axis = x_col.radio("x axis", ["step", "epoch"], horizontal=True, key="live_x")
smoothing = smooth_col.slider("Smoothing (EMA weight of per-step curves)", 0.0, 0.99, 0.6, 0.01, key="live_smooth")
keys = [run.key for run in chosen]
was_active = any(run.active for run in chosen)


@st.fragment(run_every=ui.live_refresh_s() if was_active else None)
def live_panel(keys: list[str], x_axis: str, smoothing: float) -> None:
    """Progress, errors and curves; on a timer it reads only the new lines of each metrics.jsonl."""
    current = ui.find_runs(keys)
    frames = {}
    for run in current:
        frame, corrupt = ui.metrics_of(run)
        frames[run.key] = frame
        state = progress(run)
        text_col, button_col = st.columns([6, 1])
        with text_col:
            st.progress(state.fraction, text=f"`{run.key}` · {run.model or '?'} on {run.dataset or '?'} · {state.text}")
        if run.source == "run" and run.active:
            if run.stop_requested_at:
                button_col.caption("stop requested")
            elif button_col.button("Stop", key=f"live_stop_{run.key}"):
                launcher.request_stop(run.path)
                st.rerun(scope="fragment")
        ui.show_run_problems(run, corrupt)
    columns = st.columns(2)
    # A panel whose metrics got no new values keeps its figure: building figures is most of the page's
    # CPU while it watches a run, and that CPU is taken from the training on a small machine. Step lines
    # only move the loss, LR and images/s panels; the epoch panels change once an epoch.
    built = st.session_state.get("live_figures", {})
    figures = {}
    for index, (title, metrics, tickformat) in enumerate(charts.PANELS):
        cache_key = (charts.panel_version(frames, metrics), x_axis, smoothing, index)
        figures[cache_key] = built.get(cache_key) or charts.metric_figure(
            frames, metrics, x=x_axis, smoothing=smoothing, title=title, tickformat=tickformat)
        columns[index % 2].plotly_chart(figures[cache_key], key=f"live_chart_{index}",
                                        config={"displaylogo": False})
    st.session_state["live_figures"] = figures
    if was_active and not any(run.active for run in current):
        st.rerun()  # every followed run has ended: a full rerun turns the timer off


live_panel(keys, x_axis, smoothing)
