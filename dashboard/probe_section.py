"""Inspect's *Linear probes* tab: the paper's per-block measure (Fig. 1b) of a run beside a second run, with
the paper's figures as reference points and the final head's read-out named apart.

The probes are fitted on the run's training split (``regnet.train.explore.run_probes``), so they need the
data set on disk; once fitted they are read from the run's ``artifacts/``.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from regnet.dashboard import inspect_cache
from regnet.dashboard.run_listing import RunInfo
from regnet.inspect.probes import PAPER_FIG_1B
from regnet.train.explore import run_probes
from regnet.train.evaluate import load_run_config


def probe_figure(reports: Mapping[str, dict], paper: Mapping[str, Mapping[int, float]] = PAPER_FIG_1B) -> go.Figure:
    """Probe top-1 (%) of every block's output per run as lines over block number, H's as dotted lines, and
    the paper's Fig. 1b figures of the same models as markers."""
    fig = go.Figure()
    for name, report in reports.items():
        for features, dash in (("output", "solid"), ("H", "dot")):
            rows = [r for r in report["rows"] if r["features"] == features]
            if rows:
                fig.add_scatter(x=[r["block"] for r in rows], y=[100 * r["probe_top1"] for r in rows],
                                mode="lines+markers", line=dict(dash=dash),
                                name=f"{name}: {'block output' if features == 'output' else 'regulator H'}")
    for model in dict.fromkeys(r["model"] for r in reports.values()):
        if model in paper:
            blocks = sorted(paper[model])
            fig.add_scatter(x=blocks, y=[paper[model][b] for b in blocks], mode="markers",
                            marker=dict(symbol="x", size=11), name=f"paper, {model} (Fig. 1b)")
    fig.update_xaxes(title_text="block (1..N through the network)", dtick=1)
    fig.update_yaxes(title_text="probe top-1 (%)", range=[0, 100])
    fig.update_layout(height=420, margin=dict(l=10, r=10, t=40, b=10),
                      title="Linear probe (global average pool + a new linear layer) on each block")
    return fig


def probe_rows(reports: Mapping[str, dict]) -> list[dict]:
    """The table beside the figure: one row per run, block and features, in percent."""
    return [{"run": name, "block": r["block"], "stage.step": f"{r['stage']}.{r['step']}", "features": r["features"],
             "probe top-1 %": round(100 * r["probe_top1"], 2), "L2": r["l2"],
             "final-head read-out %": None if r["final_head_top1"] is None else round(100 * r["final_head_top1"], 2)}
            for name, report in reports.items() for r in report["rows"]]


def _partner(subject_run: RunInfo, others: Sequence[RunInfo]) -> int:
    """Index (in the choices, after "(none)") of a run of the same data set with another model, else 0."""
    for i, run in enumerate(others, 1):
        if run.dataset == subject_run.dataset and run.model != subject_run.model:
            return i
    return 0


def _report(run: RunInfo, data_root: str, bar: inspect_cache.ProgressBar) -> dict:
    return run_probes(run.path, "val", data_root, progress=lambda what, done, total: bar(done, total))


def render(subject, others: Sequence[RunInfo]) -> None:
    """The tab: a second run to compare with, the fit on request, then the figure and the table."""
    st.subheader("Linear probes per block, beside another run")
    choices = ["(none)", *(run.key for run in others)]
    other = st.selectbox("Compare with", choices, index=_partner(subject.run, others), key="probe_other")
    data_root = st.session_state.get(f"inspect_root_{subject.run.key}") or subject.config["data"].get("root") or "data"
    st.caption("Fitted on the training split and scored on the validation split; features are extracted "
               "once per checkpoint and kept in the run's `artifacts/`.")
    if not st.toggle("Fit the probes (minutes for a CIFAR-10 run the first time)", key=f"probe_fit_{subject.run.key}"):
        return
    reports = {}
    for run in [subject.run, *(r for r in others if r.key == other)]:
        try:
            with inspect_cache.ProgressBar(f"Features of {run.key}", "images") as bar:
                root = data_root if run is subject.run else load_run_config(run.path).data.root
                reports[run.key] = _report(run, root, bar)
        except (ValueError, OSError, RuntimeError) as error:
            st.warning(f"{run.key}: the probes need the run's training split on disk: {error}")
    if not reports:
        return
    st.plotly_chart(probe_figure(reports), key="probe_figure")
    for name, report in reports.items():
        st.caption(f"{name}: the model's own top-1 {report['model_top1']:.2%} on {report['num_scored']:,} "
                   f"validation images; probes fitted on {report['num_train']:,} training images.")
    st.dataframe(pd.DataFrame(probe_rows(reports)), hide_index=True)
    st.caption("Probe: " + next(iter(reports.values()))["solver"] + ". The final-head read-out applies the "
               "model's trained pool + FC to a block of its width (the last stage): not the paper's measure, "
               "since that head was trained on the last block only.")

