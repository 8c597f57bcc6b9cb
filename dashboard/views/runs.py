"""Runs: every run folder under the runs root and every shipped run, newest first; choose runs here."""
import streamlit as st

from dashboard import ui
from dashboard.runs import runs_table

PROBLEMS_SHOWN = 20  # one caption each; with 10,000 runs the rest are counted

st.title("Runs")
root = ui.runs_root()
if not root.is_dir():
    st.info(f"The runs folder `{root}` does not exist yet (or is not a folder). Start a run on **New run**, or "
            "point the sidebar at another folder.")
runs = ui.all_runs(include_refused=True)
if not runs:
    st.info("No runs yet. Start one on **New run**, or from a terminal: `python -m regnet train --dataset shapes`.")
    st.stop()


@st.fragment(run_every=ui.live_refresh_s() if any(run.active for run in runs) else None)
def runs_overview() -> None:
    """The table, refreshed while something is running so states and epochs move by themselves."""
    current = ui.all_runs(include_refused=True)
    st.dataframe(runs_table(current), hide_index=True, width="stretch",
                 column_config={"best val top-1 %": st.column_config.NumberColumn(format="%.2f")})
    problems = [run for run in current if run.problem]
    for run in problems[:PROBLEMS_SHOWN]:
        st.caption(f"`{run.key}`: {run.problem}")
    if len(problems) > PROBLEMS_SHOWN:
        st.caption(f"... and {len(problems) - PROBLEMS_SHOWN} more runs with a damaged or refused folder.")
    if not any(run.active for run in current) and any(run.active for run in runs):
        st.rerun()  # the last run ended: a full rerun switches the auto-refresh off


runs_overview()
chosen = ui.run_picker([run for run in runs if not run.refused], "Selected runs (for Live, Compare and Inspect)",
                       key="runs")
if chosen:
    st.caption(f"{len(chosen)} selected. Open **Live** for their curves or **Compare** to overlay them.")
