"""Live's regulator section: how a followed RegNet run's gates, saturation and reliance on H change by epoch.

It reads only artifacts/regulator.jsonl through the contract's tolerant reader (one small line per epoch,
written by the engine's probe). It does not poll: the Live page's one check watches the file's size
(``version``) and redraws the page when it grew, and the figures are rebuilt only when a new epoch arrived
or the choice of gate changed. The chart builders are
plain functions (rows in, plotly figure out), tested without a browser.
"""
from __future__ import annotations

import time
from typing import Sequence

import plotly.graph_objects as go
import streamlit as st

from regnet.dashboard.run_listing import LIVE_METRICS, RunInfo
from regnet.runs import ARTIFACTS, REGULATOR, MetricsChunk, read_regulator

GATE_LABELS = {"i": "input gate i", "f": "forget gate f", "o": "output gate o", "g": "candidate g",
               "z": "update gate z", "r": "reset gate r", "candidate": "candidate"}
# The gates whose saturation says whether the regulator keeps or overwrites its state: LSTM's forget and
# input gates, GRU's update and reset gates.
SATURATION_GATES = (("f", "i"), ("z", "r"))


def block_labels(rows: Sequence[dict]) -> list[str]:
    """``S1 t=1`` ... for every (stage, step) the rows know, in forward order."""
    keys = sorted({(b["stage"], b["step"]) for row in rows for b in row["blocks"]})
    return [f"S{s} t={t}" for s, t in keys]


def gate_names(rows: Sequence[dict]) -> list[str]:
    """The gates the run records (none for a ConvRNN cell), in the cell's order."""
    for row in rows:
        for block in row["blocks"]:
            return list(block["gates"])
    return []


def gate_strip_figure(rows: Sequence[dict], gate: str, statistic: str = "mean") -> go.Figure:
    """A heat strip: one gate's ``statistic`` per (stage, step) down, epoch across.

    The colour scale spans the values shown, not [0, 1]: a trained regulator's gate means often stay
    within a few hundredths of 0.5, and on a fixed scale that reads as one flat colour.
    """
    labels = block_labels(rows)
    epochs = [row["epoch"] for row in rows]
    z = [[None] * len(rows) for _ in labels]
    for col, row in enumerate(rows):
        for block in row["blocks"]:
            numbers = block["gates"].get(gate)
            if numbers is not None:
                z[labels.index(f"S{block['stage']} t={block['step']}")][col] = numbers[statistic]
    label = GATE_LABELS.get(gate, gate)
    fig = go.Figure(go.Heatmap(z=z, x=epochs, y=labels, colorscale="Viridis",
                               colorbar=dict(title=statistic, tickformat=".3f"),
                               hovertemplate="epoch %{x}, %{y}<br>" + f"{label} {statistic}" + " %{z:.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title="stage, step")
    fig.update_xaxes(title="epoch", dtick=1 if len(epochs) <= 20 else None)
    fig.update_layout(title=f"{label}: {statistic} per block and epoch", height=120 + 28 * len(labels),
                      margin=dict(l=10, r=10, t=50, b=10))
    return fig


def saturation_figure(rows: Sequence[dict]) -> go.Figure:
    """The shares of the keep/overwrite gates' values below 0.05 and above 0.95, averaged over blocks, by epoch."""
    names = gate_names(rows)
    pair = next((p for p in SATURATION_GATES if all(g in names for g in p)), ())
    epochs = [row["epoch"] for row in rows]
    fig = go.Figure()
    for gate in pair:
        for share, dash in (("below_05", "dot"), ("above_95", "solid")):
            values = [sum(b["gates"][gate][share] for b in row["blocks"]) / max(len(row["blocks"]), 1)
                      for row in rows]
            fig.add_trace(go.Scatter(x=epochs, y=values, mode="lines+markers", line=dict(dash=dash),
                                     name=f"{GATE_LABELS.get(gate, gate)} {'< 0.05' if share == 'below_05' else '> 0.95'}"))
    fig.update_yaxes(title="share of values (all blocks)", tickformat=".1%", rangemode="tozero")
    fig.update_xaxes(title="epoch", dtick=1 if len(epochs) <= 20 else None)
    fig.update_layout(title="Saturation of the gates", height=320, margin=dict(l=10, r=10, t=50, b=10))
    return fig


def reliance_figure(rows: Sequence[dict]) -> go.Figure:
    """The probe's top-1 intact and with H zeroed at the fusion, by epoch: the gap is the reliance on H."""
    epochs = [row["epoch"] for row in rows]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=epochs, y=[row["top1"] for row in rows], mode="lines+markers", name="intact"))
    fig.add_trace(go.Scatter(x=epochs, y=[row["top1_h_zeroed"] for row in rows], mode="lines+markers",
                             name="H zeroed at the fusion", line=dict(dash="dash")))
    fig.add_trace(go.Bar(x=epochs, y=[row["reliance"] for row in rows], name="reliance (the drop)", opacity=0.35))
    fig.update_yaxes(title="probe top-1", tickformat=".0%", range=[min(0, *(r["reliance"] for r in rows)), 1])
    fig.update_xaxes(title="epoch", dtick=1 if len(epochs) <= 20 else None)
    fig.update_layout(title="Reliance on the regulator", height=320, margin=dict(l=10, r=10, t=50, b=10))
    return fig


def _figures(run: RunInfo, rows: list[dict], gate: str) -> list[go.Figure]:
    """The three figures, rebuilt only when the run has a new epoch or another gate was chosen."""
    key = (run.key, len(rows), rows[-1]["epoch"], rows[-1].get("time"), gate)
    built = st.session_state.get("live_regulator_figures", {})
    if key not in built:
        built = {key: [gate_strip_figure(rows, gate), saturation_figure(rows), reliance_figure(rows)]}
        st.session_state["live_regulator_figures"] = built
    return built[key]


def _regulator_lines(run: RunInfo) -> MetricsChunk:
    """The run's regulator.jsonl so far, through the tail reader (each check reads only new bytes)."""
    return LIVE_METRICS.read(run.path / ARTIFACTS / REGULATOR)


def probe_running(run: RunInfo) -> dict | None:
    """The epoch line whose regulator probe is still running (the engine probes right after writing it),
    or None: only for an active RegNet run whose newest epoch line is newer than its newest regulator line."""
    if run.refused or not run.active or not (run.model or "").startswith("regnet"):
        return None
    done = max((row["epoch"] for row in _regulator_lines(run).rows if isinstance(row.get("epoch"), int)), default=0)
    for row in reversed(LIVE_METRICS.read(run.metrics_path).rows):
        if row.get("kind") == "epoch":
            return row if isinstance(row.get("epoch"), int) and row["epoch"] > done else None
    return None


def probe_notes(runs: list[RunInfo]) -> None:
    """One line per run whose probe is running, so a strip that lags its epoch's accuracy says why.

    Shown with the run's progress (Live's checked part), as the probe starts right after an epoch line.
    """
    for run in runs:
        line = probe_running(run)
        if line is not None:
            since = time.strftime("%H:%M:%S", time.localtime(float(line.get("time") or time.time())))
            st.info(f"`{run.key}`: probing the regulator after epoch {line['epoch']} (since {since}); its gates "
                    f"and reliance appear under *Regulator* when the probe finishes.", icon=":material/hourglass_top:")


def version(runs: list[RunInfo]) -> tuple:
    """How far each followed run's regulator.jsonl has been read (None for a refused run): it grows by a
    line an epoch."""
    return tuple(None if run.refused else _regulator_lines(run).offset for run in runs)


def show(runs: list[RunInfo]) -> None:
    """The section for the followed ``runs``: the figures of the chosen run (the notes of running probes
    are with the runs' progress, ``probe_notes``)."""
    stats = {run.key: read_regulator(run.path) for run in runs if not run.refused}
    with_stats = [(run, stats[run.key]) for run in runs if stats.get(run.key)]
    st.subheader("Regulator")
    if not with_stats:
        if any(probe_running(run) for run in runs):
            return
        regulated = any((run.model or "").startswith("regnet") for run in runs)
        st.caption("The regulator's gates and states appear here after the first epoch of a RegNet run."
                   if regulated else "The followed runs have no regulator (ResNet runs have none to show).")
        return
    pick, gate_col = st.columns([2, 1])
    keys = [run.key for run, _ in with_stats]
    chosen = pick.selectbox("Run", keys, key="live_regulator_run") if len(keys) > 1 else keys[0]
    run, rows = with_stats[keys.index(chosen)]
    names = gate_names(rows)
    if not names:
        st.caption(f"`{run.key}` has a ConvRNN regulator: no gates, only H (its reliance is below).")
        st.plotly_chart(reliance_figure(rows), key="live_regulator_reliance")
        return
    gate = gate_col.selectbox("Gate", names, index=names.index("f") if "f" in names else 0, key="live_regulator_gate",
                              format_func=lambda g: GATE_LABELS.get(g, g))
    strip, saturation, reliance = _figures(run, rows, gate)
    last = rows[-1]
    st.caption(f"`{run.key}`, {len(rows)} epoch{'s' if len(rows) != 1 else ''}, probe of {last['probe']['images']} "
               f"validation images (the same every epoch): after epoch {last['epoch']}, top-1 "
               f"{last['top1']:.1%} intact, {last['top1_h_zeroed']:.1%} with H zeroed.")
    st.plotly_chart(strip, key="live_regulator_strip")
    left, right = st.columns(2)
    left.plotly_chart(saturation, key="live_regulator_saturation")
    right.plotly_chart(reliance, key="live_regulator_reliance")
