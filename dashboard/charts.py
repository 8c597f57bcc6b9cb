"""Chart builders: plain functions, data in, plotly figure out, so they are tested without a browser."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from regnet.dashboard.run_listing import STEP_METRICS, ema

METRIC_LABELS = {
    "train_loss": "train loss", "val_loss": "val loss", "train_top1": "train top-1", "val_top1": "val top-1",
    "val_top5": "val top-5", "val_macro_f1": "val macro-F1", "lr": "learning rate", "images_per_s": "images/s",
    "epoch_time_s": "epoch time (s)",
}


@dataclass(frozen=True)
class Panel:
    """One chart of the Live grid (and a Compare choice): its metrics and how its y axis reads.

    ``unit_range`` panels (accuracy, F1) are drawn on [0, 1] whatever the points, so the first epoch does
    not stretch the axis to -50 %; ``smooth`` is False for curves that are a setting, not a noisy
    measurement (the learning rate), which are drawn exactly as logged. ``steps`` False draws a metric
    that step lines also carry from the epoch lines only: images/s as each epoch's average, not the
    last window's, and a panel that changes once an epoch (cheaper to follow).
    """

    title: str
    metrics: tuple[str, ...]
    y_title: str
    tickformat: str | None = None
    unit_range: bool = False
    smooth: bool = True
    steps: bool = True

    @property
    def per_step(self) -> bool:
        """Whether step lines move this panel (so it changes at every check while a run trains)."""
        return self.steps and bool(set(self.metrics) & set(STEP_METRICS))

    @property
    def hoverformat(self) -> str:
        return self.tickformat if self.unit_range else ".4~g"


PANELS = (
    Panel("Loss", ("train_loss", "val_loss"), "cross-entropy loss"),
    Panel("Top-1 accuracy", ("train_top1", "val_top1"), "top-1 accuracy", ".0%", unit_range=True),
    Panel("Top-5 accuracy", ("val_top5",), "top-5 accuracy", ".0%", unit_range=True),
    Panel("Macro-F1", ("val_macro_f1",), "macro-F1 (0 to 1)", ".2f", unit_range=True),
    Panel("Learning rate", ("lr",), "learning rate", "~g", smooth=False),
    Panel("Images per second", ("images_per_s",), "training images / s (epoch average)", steps=False),
)
PANELS_BY_TITLE = {panel.title: panel for panel in PANELS}
# x-axis choices: value -> axis title (with its unit).
X_AXES = {"step": "step (optimizer updates)", "epoch": "epoch",
          "relative time": "time since the run's first line (min)", "wall time": "wall time (local)"}
BANDS = {"min-max": "min to max", "std": "mean ± 1 std"}
MARKERS_UP_TO = 25  # a curve with this many points or fewer gets markers: one or two points are never invisible
PALETTE = px.colors.qualitative.Plotly
_DASH = {"train": "solid", "val": "dash"}
_LEGEND_ROW_PX = 20


def _x_values(rows: pd.DataFrame, x: str) -> np.ndarray:
    """The numeric x of ``rows``: step, (fractional) epoch, minutes since the run's first line, or unix time."""
    if x == "step":
        return rows["step"].to_numpy(dtype=float)
    if x == "epoch":
        return rows["x_epoch"].to_numpy(dtype=float)
    return rows["time"].to_numpy(dtype=float)


def _plot_x(values: np.ndarray, x: str, first_time: float) -> list:
    """Numeric x as plotly gets it: plain lists (numpy would go base64-encoded), times as local datetimes."""
    if x == "wall time":
        return [datetime.fromtimestamp(v).isoformat(sep=" ", timespec="milliseconds") for v in values]
    if x == "relative time":
        return ((values - first_time) / 60.0).tolist()
    return values.tolist()


def _first_time(frame: pd.DataFrame) -> float:
    times = frame["time"].dropna() if "time" in frame else pd.Series(dtype=float)
    return float(times.min()) if not times.empty else 0.0


def _rows(frame: pd.DataFrame, metric: str, x: str, steps: bool = True) -> tuple[pd.DataFrame, bool]:
    """The rows that hold ``metric`` (step lines for per-step metrics when there are any and ``steps``) and
    whether they are dense."""
    x_column = {"step": "step", "epoch": "x_epoch"}.get(x, "time")
    if frame.empty or metric not in frame or x_column not in frame:
        return frame.iloc[0:0], False
    has_value = pd.to_numeric(frame[metric], errors="coerce").notna() & pd.to_numeric(
        frame[x_column], errors="coerce").notna()
    dense = steps and metric in STEP_METRICS and bool((has_value & (frame["kind"] == "step")).any())
    return frame[has_value & (frame["kind"] == ("step" if dense else "epoch"))], dense


def series(frame: pd.DataFrame, metric: str, x: str = "step", steps: bool = True) -> tuple[list, np.ndarray, bool]:
    """(x, y, dense) for one metric of one run, x as plotly draws it.

    Metrics logged on step lines (train loss, LR, images/s) are read from those when there are any, and
    are ``dense``; the rest come from epoch lines. ``x`` is a key of ``X_AXES``: "step", "epoch"
    (fractional for step lines), "relative time" (minutes since the run's first line) or "wall time".
    """
    rows, dense = _rows(frame, metric, x, steps)
    if rows.empty:
        return [], np.array([]), False
    return _plot_x(_x_values(rows, x), x, _first_time(frame)), rows[metric].to_numpy(dtype=float), dense


def group_series(frames: Sequence[pd.DataFrame], metric: str, x: str = "step", band: str = "min-max",
                 steps: bool = True) -> tuple[list, np.ndarray, np.ndarray, np.ndarray, bool]:
    """(x, mean, low, high, dense) of ``metric`` over runs that differ only in seed.

    Runs are aligned on the step (per-step metrics) or the epoch (per-epoch ones), not on time; a time
    axis places each aligned point at the runs' mean time. The band is min to max, or mean ± 1 std
    (``band`` "std"), and collapses onto the mean where only one run has the point.
    """
    parts = []
    for frame in frames:
        rows, dense = _rows(frame, metric, x, steps)
        if rows.empty:
            continue
        key = rows["step"] if dense else rows["epoch"]
        values = _x_values(rows, x) - (_first_time(frame) if x == "relative time" else 0.0)
        parts.append(pd.DataFrame({"key": key.to_numpy(dtype=float), "x": values,
                                   "y": rows[metric].to_numpy(dtype=float)}))
    if not parts:
        return [], np.array([]), np.array([]), np.array([]), False
    stats = pd.concat(parts).groupby("key").agg(x=("x", "mean"), mean=("y", "mean"), low=("y", "min"),
                                               high=("y", "max"), std=("y", "std")).sort_index()
    if band == "std":
        spread = stats["std"].fillna(0.0)
        stats["low"], stats["high"] = stats["mean"] - spread, stats["mean"] + spread
    return (_plot_x(stats["x"].to_numpy(), x, 0.0), stats["mean"].to_numpy(), stats["low"].to_numpy(),
            stats["high"].to_numpy(), dense)


def panel_version(frames: Mapping[str, pd.DataFrame], panels: Sequence[Panel]) -> tuple:
    """What ``panels`` show, in short: each run's count of values per metric (epoch lines only for a panel
    that does not draw step lines). Metric files only grow, so an unchanged version means unchanged figures.
    """
    def count(frame: pd.DataFrame, metric: str, steps: bool) -> int:
        if metric not in frame:
            return 0
        values = frame[metric] if steps else frame.loc[frame["kind"] == "epoch", metric]
        return int(values.notna().sum())

    return tuple((label, tuple(count(frame, m, panel.steps) for panel in panels for m in panel.metrics))
                 for label, frame in frames.items())


def _mode(count: int) -> str:
    return "lines+markers" if count <= MARKERS_UP_TO else "lines"


def _smoothed(values: np.ndarray, smoothing: float) -> list:
    return ema(values.tolist(), smoothing) if smoothing > 0 else values.tolist()


def _add_curve(figure: go.Figure, xs: list, ys: np.ndarray, *, name: str, hover: str, color: str, dash: str,
               smoothing: float, panel: Panel) -> None:
    """One run's curve of one metric, with its raw values faint behind it when it is smoothed."""
    if smoothing > 0:
        figure.add_trace(go.Scatter(x=xs, y=ys.tolist(), mode="lines", name=f"{name} (raw)", showlegend=False,
                                    hoverinfo="skip", opacity=0.25, line=dict(color=color, dash=dash)))
    figure.add_trace(go.Scatter(
        x=xs, y=_smoothed(ys, smoothing), name=name, mode=_mode(len(xs)), line=dict(color=color, dash=dash),
        marker=dict(size=7), cliponaxis=False, hovertemplate=f"{hover}: %{{y:{panel.hoverformat}}}<extra></extra>",
    ))


def _add_band(figure: go.Figure, xs: list, low: np.ndarray, high: np.ndarray, *, color: str,
              smoothing: float) -> None:
    """The seed band of a group: an invisible upper edge and a lower edge filled up to it."""
    fill = "rgba({}, {}, {}, 0.18)".format(*px.colors.hex_to_rgb(color))
    figure.add_trace(go.Scatter(x=xs, y=_smoothed(high, smoothing), mode="lines", line=dict(width=0),
                                showlegend=False, hoverinfo="skip"))
    figure.add_trace(go.Scatter(x=xs, y=_smoothed(low, smoothing), mode="lines", line=dict(width=0), fill="tonexty",
                                fillcolor=fill, showlegend=False, hoverinfo="skip"))


def _layout(figure: go.Figure, panel: Panel, *, x: str, log_y: bool, height: int) -> None:
    """Titles with units, the y range the panel's metric can take, and the legend below the x-axis title.

    The legend lives in the figure's bottom margin (container coordinates), one row an entry, and the
    figure grows by its rows: it never covers the axis and never needs a scrollbar. No plotly template:
    Streamlit's theme styles the chart, and a template is 6.5 kB of JSON that the Live page would send
    and the browser parse and apply at every check (a fifth of the page's CPU while following a run).
    """
    entries = sum(1 for trace in figure.data if trace.showlegend is not False)
    legend_px = _LEGEND_ROW_PX * entries + 8
    figure.update_layout(
        title=dict(text=panel.title, x=0, xanchor="left"), height=height + legend_px,
        margin=dict(l=10, r=10, t=40, b=50 + legend_px), hovermode="x unified", template=None,
        hoverlabel=dict(namelength=-1), showlegend=entries > 0,
        legend=dict(orientation="v", traceorder="normal", yref="container", y=0, yanchor="bottom", x=0, xanchor="left"),
    )
    # From 0 on step, epoch and relative axes: one point is placed in the run, not alone in the middle.
    figure.update_xaxes(title_text=X_AXES[x], type="date" if x == "wall time" else "linear",
                        rangemode="normal" if x == "wall time" else "tozero")
    figure.update_yaxes(title_text=panel.y_title, tickformat=panel.tickformat, hoverformat=panel.hoverformat)
    if log_y:
        figure.update_yaxes(type="log")
    elif panel.unit_range:
        figure.update_yaxes(range=[0, 1])
    else:
        figure.update_yaxes(rangemode="tozero")  # losses, learning rates and speeds are never negative
    if not figure.data:
        figure.update_xaxes(visible=False)
        figure.update_yaxes(visible=False)
        later = "" if set(panel.metrics) & set(STEP_METRICS) else ": validation ends each epoch"
        figure.add_annotation(text=f"no points yet{later}", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                              font=dict(color="gray"))


def metric_figure(frames: Mapping[str, pd.DataFrame], panel: Panel, *, x: str = "step", smoothing: float = 0.0,
                  log_y: bool = False, groups: Mapping[str, Sequence[str]] | None = None, band: str = "min-max",
                  height: int = 320) -> go.Figure:
    """Curves of ``panel``'s metrics for every run in ``frames`` (label -> metrics table), overlaid.

    One colour a run, one dash a split (train solid, val dashed). Dense per-step curves of a smoothable
    panel are smoothed with an EMA of weight ``smoothing``, the raw curve faint behind; per-epoch points
    and the learning rate are drawn as logged. ``groups`` (group label -> labels of runs that differ only
    in seed) draws one mean line a group with its ``band`` instead of one line a run. Hover names the
    full run and metric; the legend lists the short metric name when only one run is drawn.
    """
    figure = go.Figure()
    lines = groups or {label: [label] for label in frames}
    for index, (label, members) in enumerate(lines.items()):
        color = PALETTE[index % len(PALETTE)]
        member_frames = [frames[m] for m in members if m in frames]
        for metric in panel.metrics:
            name = METRIC_LABELS.get(metric, metric)
            full = f"{label} · {name}"
            dash = _DASH.get(metric.split("_")[0], "solid")
            if groups:
                xs, ys, low, high, dense = group_series(member_frames, metric, x, band, panel.steps)
                if len(member_frames) > 1 and xs:
                    _add_band(figure, xs, low, high, color=color, smoothing=smoothing if dense and panel.smooth else 0)
                full = f"{label} · {name} (mean of {len(member_frames)})" if len(member_frames) > 1 else full
            else:
                xs, ys, dense = series(member_frames[0], metric, x, panel.steps)
            if not xs:
                continue
            _add_curve(figure, xs, ys, name=full if len(lines) > 1 or groups else name, hover=full, color=color, dash=dash,
                       smoothing=smoothing if dense and panel.smooth else 0.0, panel=panel)
    _layout(figure, panel, x=x, log_y=log_y, height=height)
    return figure


def point_count(figure: go.Figure) -> int:
    """Number of points drawn in a figure (what the live tests watch grow)."""
    return sum(len(trace.x) for trace in figure.data if trace.x is not None)


_FORMATS = {".0%": "percent", ".2f": "fixed2"}  # a panel's tickformat as live_chart.js formats its values


def _finite(values) -> list:
    """Plain floats for JSON, None where a value is not finite (JSON has no NaN or infinity)."""
    return [float(v) if np.isfinite(v) else None for v in values]


def _line_x(frame: pd.DataFrame, rows: pd.DataFrame, x: str) -> np.ndarray:
    """Numeric x as live_chart.js takes it: steps, epochs, minutes since the run's first line, unix seconds."""
    values = _x_values(rows, x)
    return (values - _first_time(frame)) / 60.0 if x == "relative time" else values


def line_spec(frames: Mapping[str, pd.DataFrame], panel: Panel, *, x: str = "step", smoothing: float = 0.0,
              log_y: bool = False) -> dict:
    """``panel`` as the Live page's line chart draws it (dashboard/assets/live_chart.js, through
    dashboard/live_chart.py): the curves of ``metric_figure`` without groups (one colour a run, train solid
    and val dashed, dense curves of a smoothable panel EMA-smoothed over their faint raw values), as plain
    lists sorted by x, with the panel's titles, y range and value format."""
    curves = []
    for index, (label, frame) in enumerate(frames.items()):
        color = PALETTE[index % len(PALETTE)]
        for metric in panel.metrics:
            rows, dense = _rows(frame, metric, x, panel.steps)
            if rows.empty:
                continue
            xs = _line_x(frame, rows, x)
            order = np.argsort(xs, kind="stable")
            xs, ys = _finite(xs[order]), rows[metric].to_numpy(dtype=float)[order]
            name = METRIC_LABELS.get(metric, metric)
            name = f"{label} · {name}" if len(frames) > 1 else name
            curve = {"color": color, "dash": _DASH.get(metric.split("_")[0]) == "dash", "x": xs}
            if dense and panel.smooth and smoothing > 0:
                faint = "rgba({}, {}, {}, 0.25)".format(*px.colors.hex_to_rgb(color))
                curves.append({**curve, "label": f"{name} (raw)", "raw": True, "color": faint, "y": _finite(ys)})
                ys = np.asarray(_smoothed(ys, smoothing))
            curves.append({**curve, "label": name, "raw": False, "y": _finite(ys)})
    later = "" if set(panel.metrics) & set(STEP_METRICS) else ": validation ends each epoch"
    return {"title": panel.title, "x_label": X_AXES[x], "y_label": panel.y_title, "time": x == "wall time",
            "y": {"log": log_y, "range": [0, 1] if panel.unit_range and not log_y else None,
                  "format": _FORMATS.get(panel.tickformat, "general")},
            "markers_up_to": MARKERS_UP_TO, "series": curves, "empty": f"no points yet{later}"}


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


def _parcoords_dimension(label: str, values: pd.Series) -> dict:
    """One axis of the parallel-coordinates chart: numbers on a numeric axis (a log axis, ticked at the runs'
    own values, when they span a factor of 10 or more, as learning rates do), anything else as categories."""
    numeric = pd.to_numeric(values, errors="coerce")
    is_number = values.map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)).all()
    if is_number and numeric.notna().all():
        distinct = sorted(numeric.unique())
        if distinct[0] > 0 and distinct[-1] >= 10 * distinct[0] and len(distinct) <= 12:
            return dict(label=f"{label} (log)", values=np.log10(numeric.to_numpy(float)),
                        tickvals=np.log10(distinct).tolist(), ticktext=[f"{v:g}" for v in distinct])
        return dict(label=label, values=numeric.to_numpy(float))
    text = values.map(lambda v: "-" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
    categories = sorted(text.unique())
    return dict(label=label, values=text.map(categories.index).to_numpy(float),
                tickvals=list(range(len(categories))), ticktext=categories)


def hparams_figure(table: pd.DataFrame, settings: Sequence[str], metric: str, height: int = 420) -> go.Figure:
    """Parallel coordinates of the runs: one axis per setting in ``settings`` (table columns) that varies
    among the runs drawn, the ``metric`` column last, each run a line coloured by that metric. Runs without
    a value of ``metric`` are left out (a line cannot end nowhere); the title says how many are drawn."""
    shown = table[table[metric].notna()]
    varied = [column for column in settings if shown[column].map(repr).nunique() > 1]  # one value: no axis
    dimensions = [_parcoords_dimension(column, shown[column]) for column in varied]
    values = shown[metric].astype(float).to_numpy()
    dimensions.append(dict(label=metric, values=values))
    figure = go.Figure(go.Parcoords(
        dimensions=dimensions, domain=dict(x=[0, 0.9]), labelfont=dict(size=14), tickfont=dict(size=12),
        line=dict(color=values, colorscale="Viridis", showscale=True, colorbar=dict(x=0.97, thickness=14))))
    left_out = len(table) - len(shown)
    title = f"{metric} against the settings that differ ({len(shown)} runs" + (
        f"; {left_out} without a value left out)" if left_out else ")")
    figure.update_layout(title=dict(text=title), height=height, margin=dict(l=60, r=40, t=120, b=30))
    return figure


# The system line's phases (docs/run-folder.md), in the order an epoch runs them, as the stacked bar shows them.
SYSTEM_PHASES = {"data_s": "data loading", "compute_s": "training steps", "eval_s": "evaluation",
                 "probe_s": "regulator probe", "checkpoint_s": "checkpoints", "other_s": "other"}


def system_figure(rows: Sequence[dict], title: str = "Where each epoch's time went") -> go.Figure:
    """One stacked bar per epoch: the seconds of each phase of the system lines ``rows``, as W&B's system panel."""
    epochs = [row["epoch"] for row in rows]
    figure = go.Figure()
    for (key, label), color in zip(SYSTEM_PHASES.items(), PALETTE):
        values = [float(row.get(key) or 0.0) for row in rows]
        figure.add_trace(go.Bar(x=epochs, y=values, name=label, marker_color=color,
                                hovertemplate=f"epoch %{{x}}<br>{label}: %{{y:.2f}} s<extra></extra>"))
    figure.update_layout(barmode="stack", title=title, height=300, margin=dict(l=10, r=10, t=50, b=10),
                         legend=dict(orientation="h", y=-0.3, traceorder="normal"))
    figure.update_xaxes(title="epoch", dtick=1 if len(epochs) <= 20 else None)
    figure.update_yaxes(title="seconds")
    return figure


def system_table(rows: Sequence[dict]) -> pd.DataFrame:
    """The system lines' process figures, newest epoch first: epoch, its seconds, CPU cores busy on average,
    peak resident memory and (on CUDA) peak GPU memory in MiB; the phases' seconds are the bar chart's."""
    columns = {"epoch": "epoch", "wall_s": "epoch s", "cpu_cores": "CPU cores", "max_rss_mb": "peak RSS MiB",
               "gpu_max_memory_mb": "peak GPU MiB"}
    table = pd.DataFrame([{label: row.get(key) for key, label in columns.items()} for row in reversed(rows)])
    return table.dropna(axis=1, how="all")
