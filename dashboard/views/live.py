"""Live: the selected runs' curves, progress and errors, redrawn whenever an active run writes something."""
import streamlit as st

from dashboard import charts, launcher, live_regulator, ui
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

x_col, smooth_col, refresh_col = st.columns([1, 2, 1])
x_axis = x_col.radio("x axis", ["step", "epoch"], horizontal=True, key="live_x")
smoothing = smooth_col.slider("Smoothing (EMA weight of per-step curves)", 0.0, 0.99, 0.6, 0.01, key="live_smooth")
default_refresh_s = ui.live_refresh_s()
refresh_choices = sorted({2.0, 5.0, 10.0, 30.0, default_refresh_s})
refresh_s = refresh_col.selectbox("Check for new lines every", refresh_choices, format_func=lambda s: f"{s:g} s",
                                  index=refresh_choices.index(default_refresh_s), key="live_refresh")
active = any(run.active for run in chosen)

frames = {}
for run in chosen:
    frames[run.key], notes = ui.metrics_of(run)
    state = progress(run)
    text_col, button_col = st.columns([6, 1])
    with text_col:
        st.progress(state.fraction, text=f"`{run.key}` · {run.model or '?'} on {run.dataset or '?'} · {state.text}")
    if run.source == "run" and run.active:
        if run.stop_requested_at:
            button_col.caption("stop requested")
        elif button_col.button("Stop", key=f"live_stop_{run.key}"):
            launcher.request_stop(run.path)
            st.rerun()
    ui.show_run_problems(run, notes)

columns = st.columns(2)
# A panel whose metrics got no new values keeps its figure: building figures is much of the page's CPU
# while it follows a run, and that CPU is taken from the training on a small machine. Step lines only
# move the loss, LR and images/s panels; the epoch panels change once an epoch.
built = st.session_state.get("live_figures", {})
figures = {}
for index, (title, metrics, tickformat) in enumerate(charts.PANELS):
    cache_key = (charts.panel_version(frames, metrics), x_axis, smoothing, index)
    figures[cache_key] = built.get(cache_key) or charts.metric_figure(
        frames, metrics, x=x_axis, smoothing=smoothing, title=title, tickformat=tickformat)
    columns[index % 2].plotly_chart(figures[cache_key], key=f"live_chart_{index}", config={"displaylogo": False})
st.session_state["live_figures"] = figures
live_regulator.show(chosen, refresh_s if active else None)


def follow(runs: list, seen: tuple) -> None:
    """Polls the followed runs' files and reruns the page only when one of them wrote something.

    The poll draws nothing: redrawing an unchanged page on every tick kept the browser and the server
    busy, and on a small machine that time is taken from the training being watched. A run that ends
    changes its status, so the rerun that shows it also turns the poll off.
    """
    if ui.change_signature(runs) != seen:
        st.rerun()


if active:
    st.fragment(follow, run_every=refresh_s)(chosen, ui.change_signature(chosen))
