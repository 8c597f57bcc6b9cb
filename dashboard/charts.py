"""Chart builders: plain functions, data in, plotly figure out, so they are tested without a browser."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from dashboard.runs import STEP_METRICS, ema

METRIC_LABELS = {
    "train_loss": "train loss", "val_loss": "val loss", "train_top1": "train top-1", "val_top1": "val top-1",
    "val_top5": "val top-5", "val_macro_f1": "val macro-F1", "lr": "learning rate", "images_per_s": "images/s",
    "epoch_time_s": "epoch time (s)",
}
# (panel title, metrics drawn together, y-axis tick format): the Live page's grid and the Compare choices.
PANELS = (
    ("Loss", ("train_loss", "val_loss"), None),
    ("Top-1 accuracy", ("train_top1", "val_top1"), ".0%"),
    ("Top-5 accuracy", ("val_top5",), ".0%"),
    ("Macro-F1", ("val_macro_f1",), ".2f"),
    ("Learning rate", ("lr",), ".2e"),
    ("Images per second", ("images_per_s",), None),
)
PALETTE = px.colors.qualitative.Plotly
_DASH = {"train": "solid", "val": "dash"}


def series(frame: pd.DataFrame, metric: str, x: str = "step") -> tuple[np.ndarray, np.ndarray, bool]:
    """(x, y, dense) for one metric of one run.

    Metrics logged on step lines (train loss, LR, images/s) are read from those when there are any, and
    are ``dense``; the rest come from epoch lines. ``x`` is "step" or "epoch" (fractional for step lines).
    """
    if frame.empty or metric not in frame:
        return np.array([]), np.array([]), False
    x_column = "step" if x == "step" else "x_epoch"
    has_value = frame[metric].notna() & frame[x_column].notna()
    dense = metric in STEP_METRICS and bool((has_value & (frame["kind"] == "step")).any())
    rows = frame[has_value & (frame["kind"] == ("step" if dense else "epoch"))]
    return rows[x_column].to_numpy(dtype=float), rows[metric].to_numpy(dtype=float), dense


def panel_version(frames: Mapping[str, pd.DataFrame], metrics: Sequence[str]) -> tuple:
    """What a panel of ``metrics`` shows, in short: each run's count of values per metric.

    Metric files only grow, so an unchanged version means an unchanged figure.
    """
    return tuple((label, tuple(int(frame[m].notna().sum()) if m in frame else 0 for m in metrics))
                 for label, frame in frames.items())


def metric_figure(frames: Mapping[str, pd.DataFrame], metrics: Sequence[str], *, x: str = "step",
                  smoothing: float = 0.0, title: str = "", tickformat: str | None = None,
                  height: int = 320) -> go.Figure:
    """Curves of ``metrics`` for every run in ``frames`` (label -> metrics table), overlaid.

    One colour a run, one dash a split (train solid, val dashed). Dense per-step curves are smoothed
    with an EMA of weight ``smoothing`` and the raw curve is kept, faint, behind them; per-epoch points
    are drawn as they are, with markers, because a handful of points should not be averaged away.
    """
    figure = go.Figure()
    several = len(frames) > 1
    for index, (label, frame) in enumerate(frames.items()):
        color = PALETTE[index % len(PALETTE)]
        for metric in metrics:
            xs, ys, dense = series(frame, metric, x)
            if xs.size == 0:
                continue
            name = METRIC_LABELS.get(metric, metric)
            name = f"{label} · {name}" if several else name
            dash = _DASH.get(metric.split("_")[0], "solid")
            if dense and smoothing > 0:
                figure.add_trace(go.Scatter(x=xs.tolist(), y=ys.tolist(), mode="lines", name=f"{name} (raw)", showlegend=False,
                                            hoverinfo="skip", opacity=0.25, line=dict(color=color, dash=dash)))
                ys = np.asarray(ema(ys.tolist(), smoothing))
            # Plain lists, not numpy arrays: plotly would send those base64-encoded, which neither the
            # browser tests nor a reader of the page's figure JSON can count.
            figure.add_trace(go.Scatter(
                x=xs.tolist(), y=ys.tolist(), name=name, mode="lines" if dense else "lines+markers",
                line=dict(color=color, dash=dash), legendgroup=label,
            ))
    figure.update_layout(
        title=dict(text=title, x=0, xanchor="left"), height=height, margin=dict(l=10, r=10, t=40, b=10),
        legend=dict(orientation="h", yanchor="top", y=-0.28, x=0), hovermode="x unified",
        template="plotly_white",
    )
    figure.update_xaxes(title_text="step" if x == "step" else "epoch")
    if tickformat:
        figure.update_yaxes(tickformat=tickformat)
    if not figure.data:
        figure.update_xaxes(visible=False)
        figure.update_yaxes(visible=False)
        figure.add_annotation(text="no points yet", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                              font=dict(color="gray"))
    return figure


def point_count(figure: go.Figure) -> int:
    """Number of points drawn in a figure (what the live tests watch grow)."""
    return sum(len(trace.x) for trace in figure.data if trace.x is not None)


def class_distribution_figure(counts: Mapping[str, Sequence[int]], class_names: Sequence[str],
                              height: int = 360) -> go.Figure:
    """Images per class for each split (grouped bars), so an imbalanced or empty class shows at a glance."""
    figure = go.Figure()
    for index, (split, values) in enumerate(counts.items()):
        figure.add_trace(go.Bar(x=list(class_names), y=list(values), name=split,
                                marker_color=PALETTE[index % len(PALETTE)]))
    figure.update_layout(barmode="group", height=height, template="plotly_white", margin=dict(l=10, r=10, t=40, b=10),
                         title=dict(text="Images per class", x=0), xaxis_title="class", yaxis_title="images")
    return figure


def sample_grid_figure(images: np.ndarray, titles: Sequence[str], columns: int = 8, title: str = "") -> go.Figure:
    """A grid of images (N, H, W, C) with values in [0, 1], each titled (e.g. with its label)."""
    images = np.asarray(images, dtype=float)
    if images.ndim != 4 or len(images) != len(titles):
        raise ValueError(f"Expected images of shape (N, H, W, C) and N titles, got {images.shape} and {len(titles)}.")
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    rgb = (np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8)
    columns = max(1, min(columns, len(rgb)))
    figure = px.imshow(rgb, facet_col=0, facet_col_wrap=columns, facet_row_spacing=0.08, facet_col_spacing=0.01)
    # Facet annotations are "0", "1", ... in facet order; replace them with the titles.
    for annotation in figure.layout.annotations:
        annotation.text = str(titles[int(annotation.text.split("=")[-1])])
        annotation.font.size = 11
    rows = -(-len(rgb) // columns)
    figure.update_layout(title=dict(text=title, x=0), height=40 + 110 * rows, margin=dict(l=0, r=0, t=40, b=0))
    figure.update_xaxes(showticklabels=False)
    figure.update_yaxes(showticklabels=False)
    return figure
