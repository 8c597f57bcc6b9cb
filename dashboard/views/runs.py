"""Runs: every run folder under the runs root and every shipped run, newest first; choose runs here."""
import streamlit as st

from dashboard import ui
from dashboard.runs import runs_table

st.title("Runs")
root = ui.runs_root()
if not root.is_dir():
    st.info(f"The runs folder `{root}` does not exist yet (or is not a folder). Start a run on **New run**, or "
            "point the sidebar at another folder.")
runs = ui.all_runs()
if not runs:
    st.info("No runs yet. Start one on **New run**, or from a terminal: `python -m regnet train --dataset shapes`.")
    st.stop()


@st.fragment(run_every=ui.live_refresh_s() if any(run.active for run in runs) else None)
def runs_overview() -> None:
    """The table, refreshed while something is running so states and epochs move by themselves."""
    current = ui.all_runs()
    st.dataframe(runs_table(current), hide_index=True, width="stretch",
                 column_config={"best val top-1 %": st.column_config.NumberColumn(format="%.2f")})
    for run in current:
        if run.problem:
            st.caption(f"`{run.key}`: {run.problem}")
    if not any(run.active for run in current) and any(run.active for run in runs):
        st.rerun()  # the last run ended: a full rerun switches the auto-refresh off


runs_overview()
chosen = ui.run_picker(runs, "Selected runs (for Live, Compare and Inspect)", key="runs")
if chosen:
    st.caption(f"{len(chosen)} selected. Open **Live** for their curves or **Compare** to overlay them.")
