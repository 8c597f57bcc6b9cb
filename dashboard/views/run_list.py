"""Runs: every run folder under the runs root and every shipped run, newest first; a workbench for each run.

Filter and search the table, choose runs for Live, Compare and Inspect, and act on one run: tag it, note
it, resume it, clone its config into New run, or move it to the trash (and back). Every write goes through
``regnet.runs``, and a run is only ever named by a key from the listing, never by a path from the browser.
"""
import shlex

import streamlit as st

from regnet.dashboard import launcher, ui
from regnet.dashboard.run_listing import RunFilter, filter_runs, format_started, runs_table
from regnet.runs import (RESUMABLE_STATES, TRASH, parse_tags, restore_run, trash_run, trashed_runs, write_note,
                         write_tags)

PROBLEMS_SHOWN = 20  # one caption each; with 10,000 runs the rest are counted
# Widths (px) that show every column whole on a 1400 px window; a long run id or many tags may be cut (the
# cell shows them whole when clicked).
RUNS_COLUMN_CONFIG = {  # 925 px in all, the table's width on a 1400 px window beside the sidebar
    "run": st.column_config.TextColumn(width=160), "tags": st.column_config.TextColumn(width=95),
    "model": st.column_config.TextColumn(width=75), "dataset": st.column_config.TextColumn("data set", width=85),
    "status": st.column_config.TextColumn(width=70), "epochs done": st.column_config.TextColumn("epochs", width=55),
    "best": st.column_config.TextColumn(width=140),
    "images/s": st.column_config.NumberColumn(width=65, help="The run's average over its epochs"),
    "elapsed": st.column_config.TextColumn(width=60), "started": st.column_config.TextColumn(width=120),
}

st.title("Runs")
root = ui.runs_root()
if not root.is_dir():
    st.info(f"The runs folder `{root}` does not exist yet (or is not a folder). Start a run on **New run**, or "
            "point the sidebar at another folder.")
runs = ui.all_runs(include_refused=True)
ui.show_flash()


def filters(runs: list) -> RunFilter:
    """Search box and facet filters over the listed runs."""
    text_col = st.container()
    model_col, data_col, state_col, tag_col = st.columns(4)  # a quarter of the page each: chips show whole names

    def facet(column, label: str, values, key: str) -> tuple:
        return tuple(column.multiselect(label, sorted({v for v in values if v}), key=key, placeholder="any"))

    return RunFilter(
        text=text_col.text_input("Search", key="runs_search", placeholder="id, model, data set, tag or note"),
        models=facet(model_col, "Model", (run.model for run in runs), "runs_f_model"),
        datasets=facet(data_col, "Data set", (run.dataset for run in runs), "runs_f_data"),
        states=facet(state_col, "State", (run.shown_state for run in runs), "runs_f_state"),
        tags=facet(tag_col, "Tag", (tag for run in runs for tag in run.tags), "runs_f_tag"))


@st.fragment(run_every=ui.live_refresh_s() if any(run.active for run in runs) else None)
def runs_overview(wanted: RunFilter) -> None:
    """The table, refreshed while something is running so states and epochs move by themselves."""
    current = ui.all_runs(include_refused=True)
    shown = filter_runs(current, wanted)
    if len(shown) < len(current):
        st.caption(f"{len(shown)} of {len(current)} runs match.")
    st.dataframe(runs_table(shown), hide_index=True, width="stretch", column_config=RUNS_COLUMN_CONFIG)
    problems = [run for run in shown if run.problem]
    for run in problems[:PROBLEMS_SHOWN]:
        st.caption(f"`{run.key}`: {run.problem}")
    if len(problems) > PROBLEMS_SHOWN:
        st.caption(f"... and {len(problems) - PROBLEMS_SHOWN} more runs with a damaged or refused folder.")
    if not any(run.active for run in current) and any(run.active for run in runs):
        st.rerun()  # the last run ended: a full rerun switches the auto-refresh off


def annotate(run) -> None:
    """Tags and a note, saved into the run folder (atomically, through regnet.runs)."""
    tags_text = st.text_input("Tags (comma-separated)", value=", ".join(run.tags), key=f"runs_tags_{run.key}")
    note = st.text_area("Note", value=run.note, key=f"runs_note_{run.key}", height=100)
    if st.button("Save tags and note", key=f"runs_save_{run.key}"):
        try:
            write_tags(run.path, parse_tags(tags_text))
            write_note(run.path, note)
        except (ValueError, OSError) as error:
            st.error(f"Could not save: {error}")
        else:
            ui.flash(f"Saved the tags and note of `{run.key}`.")
            st.rerun()


def act(run) -> None:
    """Resume, clone into New run, delete (with a confirmation)."""
    resume_col, clone_col, delete_col = st.columns(3)
    resumable = run.source == "run" and run.state in RESUMABLE_STATES
    if resume_col.button("Resume", key=f"runs_resume_{run.key}", disabled=not resumable, width="stretch",
                         help="python -m regnet train --resume, for a stopped, failed or died run"):
        try:
            launcher.resume_run(run, root)
        except (ValueError, OSError) as error:
            st.error(f"Could not resume `{run.key}`: {error}")
        else:
            st.session_state[ui.SELECTED] = [run.key]
            ui.flash(f"Resuming `{run.key}`; follow it on **Live**.")
            st.rerun()
    if clone_col.button("Clone into New run", key=f"runs_clone_{run.key}", width="stretch",
                        help="Open New run with this run's config filled in"):
        st.switch_page("views/new_run.py", query_params={ui.CLONE_PARAM: run.key})
    if run.source != "run":
        delete_col.caption("Shipped runs are read-only.")
    elif st.session_state.get("runs_confirm_delete") != run.key:
        if delete_col.button("Delete", key=f"runs_delete_{run.key}", disabled=run.active, width="stretch"):
            st.session_state["runs_confirm_delete"] = run.key
            st.rerun()
    else:
        confirm_delete(run)


def confirm_delete(run) -> None:
    st.warning(f"Move `{run.key}` to the trash (`{root / TRASH}`)? It can be restored below.")
    yes_col, no_col = st.columns(2)
    if yes_col.button("Move to trash", key=f"runs_delete_yes_{run.key}", type="primary"):
        st.session_state.pop("runs_confirm_delete", None)
        try:
            trash_run(root, run.key)
        except (ValueError, OSError) as error:
            st.error(f"Could not delete `{run.key}`: {error}")
        else:
            ui.flash(f"Moved `{run.key}` to the trash.")
            st.rerun()
    if no_col.button("Cancel", key=f"runs_delete_no_{run.key}"):
        st.session_state.pop("runs_confirm_delete", None)
        st.rerun()


def workbench(shown: list) -> None:
    """One chosen run: its tags and note, and what can be done with it."""
    st.subheader("Work on a run")
    keys = [run.key for run in shown]
    key = st.selectbox("Run", keys, key="runs_work_on", index=None, placeholder="Choose a run")
    by_key = {run.key: run for run in shown}
    if key not in by_key:
        return
    run = by_key[key]
    st.caption(f"`{run.key}` · {run.model or '?'} on {run.dataset or '?'} · {run.shown_state}")
    act(run)
    if run.source == "run":
        annotate(run)
    elif run.tags or run.note:
        st.caption(f"Tags: {', '.join(run.tags) or '-'}" + (f" · Note: {run.note}" if run.note else ""))


def trash_section() -> None:
    """Deleted runs, each with Restore."""
    deleted = trashed_runs(root)
    with st.expander(f"Trash ({len(deleted)})", expanded=False):
        if not deleted:
            st.caption("Deleted runs land here and can be restored; empty it with `rm -r` on the folder.")
        for item in deleted:
            text_col, button_col = st.columns([5, 1])
            text_col.markdown(f"`{item.run_id}` · deleted {format_started(item.deleted_at)}")
            if button_col.button("Restore", key=f"runs_restore_{item.deletion}_{item.run_id}"):
                try:
                    restore_run(root, item.deletion, item.run_id)
                except (ValueError, OSError) as error:
                    st.error(f"Could not restore `{item.run_id}`: {error}")
                else:
                    ui.flash(f"Restored `{item.run_id}`.")
                    st.rerun()


if not runs:
    st.info("No runs yet. Start one on **New run**, or from a terminal: `python -m regnet train --dataset shapes`.")
else:
    wanted = filters(runs)
    runs_overview(wanted)
    shown = filter_runs([run for run in runs if not run.refused], wanted)
    chosen = ui.run_picker([run for run in runs if not run.refused], "Selected runs (for Live, Compare and Inspect)",
                           key="runs")
    if chosen:
        st.caption(f"{len(chosen)} selected. Open **Live** for their curves or **Compare** to overlay them.")
    workbench(shown)
if root.is_dir():
    trash_section()
    st.caption("TensorBoard reads the same runs folder:")
    st.code(f"tensorboard --logdir {shlex.quote(str(root.resolve()))}", language="bash")
