"""Chart builders of the regulator lab: plain functions, data in, plotly figure out (tested without a browser)."""
from __future__ import annotations

import io
from typing import Mapping, Sequence

import numpy as np
import plotly.colors as pc
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from PIL import Image

# Plotly's Inferno with its colours written as rgb(): Streamlit's chart theme rewrites the hex colours
# #000000-#000040 as its own placeholders, and Inferno's first colour is #000004 (zero drew pink).
INFERNO = [[k / (len(pc.sequential.Inferno) - 1), "rgb({}, {}, {})".format(*pc.hex_to_rgb(colour))]
           for k, colour in enumerate(pc.sequential.Inferno)]
GATE_COLOURS = {"i": "#2E6FDB", "f": "#D9480F", "o": "#2B8A3E", "g": "#862E9C",
                "z": "#2E6FDB", "r": "#D9480F", "candidate": "#862E9C"}


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def state_grid_figure(rows: Sequence[dict], field: str, shared_scale: bool = True) -> go.Figure:
    """One heat map per (stage, step, map): stages down, steps (and their maps) across.

    ``rows`` come from ``regnet.inspect.state_grid``. A shared scale makes maps
    comparable across depth; a per-map scale shows each map's own structure.
    """
    stages = sorted({r["stage"] for r in rows})
    steps = max((r["step"] for r in rows), default=-1) + 1
    per_step = max((len(r["maps"]) for r in rows), default=1)
    cols = max(steps * per_step, 1)
    titles = [""] * (len(stages) * cols)
    for r in rows:
        for k, (label, _) in enumerate(r["maps"]):
            titles[stages.index(r["stage"]) * cols + r["step"] * per_step + k] = \
                f"S{r['stage'] + 1} t={r['step'] + 1}" + (f" {label}" if per_step > 1 else "")
    fig = make_subplots(rows=max(len(stages), 1), cols=cols, subplot_titles=titles,
                        horizontal_spacing=0.01, vertical_spacing=0.08)
    values = [_np(m) for r in rows for _, m in r["maps"]]
    lo = min((v.min() for v in values), default=0.0)
    hi = max((v.max() for v in values), default=1.0)
    diverging = field != "output" and lo < 0 < hi
    if diverging:  # white at zero: the sign of a state or a tanh-gate matters
        lo, hi = -max(-lo, hi), max(-lo, hi)
    for r in rows:
        for k, (label, m) in enumerate(r["maps"]):
            z = _np(m)
            fig.add_trace(go.Heatmap(
                z=z[::-1], colorscale="RdBu_r" if diverging else "Viridis",
                zmin=lo if shared_scale else None, zmax=hi if shared_scale else None,
                showscale=shared_scale and r is rows[0] and k == 0,
                hovertemplate=f"stage {r['stage'] + 1} step {r['step'] + 1} {label}<br>x=%{{x}} y=%{{y}}<br>%{{z:.3f}}<extra></extra>",
            ), row=stages.index(r["stage"]) + 1, col=r["step"] * per_step + k + 1)
    fig.update_xaxes(showticklabels=False, constrain="domain").update_yaxes(showticklabels=False, constrain="domain")
    for i in range(1, max(len(stages), 1) * cols + 1):  # square pixels: a 32x32 map is drawn square
        fig.layout[f"yaxis{i if i > 1 else ''}"].scaleanchor = f"x{i if i > 1 else ''}"
    fig.update_layout(height=170 * max(len(stages), 1) + 80, margin=dict(l=10, r=10, t=80, b=10),
                      title=dict(text=f"{field} per stage (rows) and step (columns)", y=0.99, yanchor="top"))
    return fig


def gate_depth_figure(profile: Sequence[dict], labels: Mapping[str, str] | None = None) -> go.Figure:
    """Each gate's mean (line) and 10-90% spread (band) per step: one row per gate, one column per stage.

    A row per gate, each on its own y range, because the sigmoid gates of an LSTM often sit within a few
    hundredths of 0.5: on one shared axis their lines would lie on top of each other. ``labels`` names the
    gates in the row titles ("input gate i").
    """
    labels = labels or {}
    stages = sorted({r["stage"] for r in profile})
    gates = list(dict.fromkeys(r["gate"] for r in profile))
    fig = make_subplots(rows=max(len(gates), 1), cols=max(len(stages), 1), shared_xaxes=True, shared_yaxes="rows",
                        column_titles=[f"stage {s + 1}" for s in stages],
                        row_titles=[labels.get(g, g) for g in gates], vertical_spacing=0.06, horizontal_spacing=0.03)
    for row, gate in enumerate(gates, start=1):
        colour = GATE_COLOURS.get(gate, "#495057")
        for col, stage in enumerate(stages, start=1):
            rows = sorted((r for r in profile if r["stage"] == stage and r["gate"] == gate), key=lambda r: r["step"])
            x = [r["step"] + 1 for r in rows]
            fig.add_trace(go.Scatter(x=x + x[::-1], y=[r["q90"] for r in rows] + [r["q10"] for r in rows][::-1],
                                     fill="toself", fillcolor=colour, opacity=0.2, line=dict(width=0),
                                     hoverinfo="skip", showlegend=False), row=row, col=col)
            fig.add_trace(go.Scatter(x=x, y=[r["mean"] for r in rows], mode="lines+markers", name=gate,
                                     line=dict(color=colour), showlegend=False,
                                     customdata=[[r["std"], r["q10"], r["q90"]] for r in rows],
                                     hovertemplate=f"{gate} step %{{x}}: mean %{{y:.3f}}, std "
                                                   "%{customdata[0]:.3f}, 10-90%: %{customdata[1]:.3f} to "
                                                   "%{customdata[2]:.3f}<extra></extra>"),
                          row=row, col=col)
        fig.update_yaxes(tickformat=".2f", nticks=4, row=row, col=1)
    for col in range(1, len(stages) + 1):
        fig.update_xaxes(title_text="step (block)", dtick=1, row=len(gates), col=col)
    fig.update_layout(height=130 * max(len(gates), 1) + 90, margin=dict(l=10, r=40, t=40, b=10))
    fig.for_each_annotation(lambda a: a.update(font=dict(size=12)))
    return fig


def _scale(maps: Mapping[str, np.ndarray], label: str, signed: bool, shared_scale: bool) -> tuple[float, float]:
    """The colour range of one map: its own or all maps' extent, symmetric around zero when signed."""
    chosen = maps.values() if shared_scale else [maps[label]]
    if signed:
        top = max((float(np.abs(m).max()) for m in chosen), default=0.0) or 1.0
        return -top, top
    return 0.0, max((float(np.max(m)) for m in chosen), default=0.0) or 1.0


def grey(image: np.ndarray) -> np.ndarray:
    """An HxWx3 image in [0, 1] as its luminance on three channels: a backdrop that adds no hue to a map."""
    luma = np.clip(image, 0, 1) @ np.array([0.299, 0.587, 0.114])
    return np.repeat(luma[..., None], 3, axis=-1)


def attribution_figure(image: np.ndarray, maps: Mapping[str, np.ndarray], signed: bool = False,
                       shared_scale: bool = False, over_grey: bool = False, per_row: int = 3) -> go.Figure:
    """The image, then each method's map with its own colour bar (HxWx3 image in [0, 1]), ``per_row`` panels
    a row.

    Three panels a row keep each map over 200 pixels wide on a 1400-pixel window (a plot about 870 pixels
    wide beside the sidebar) however many methods are on (five: two rows). Maps are drawn opaque beside
    the image, so every colour is one on the colour bar; ``over_grey`` lays them at 0.6 opacity over the
    image in grey, which darkens a colour but never changes its hue.
    Absolute maps use a sequential scale from zero; signed maps a diverging one, white at zero, red for
    evidence for the class and blue against it.
    """
    labels = list(maps)
    panels = len(labels) + 1
    columns = min(panels, per_row)
    rows = (panels + columns - 1) // columns
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=["image"] + labels, horizontal_spacing=0.08,
                        vertical_spacing=0.12 / rows)
    rgb = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    backdrop = (grey(image) * 255).astype(np.uint8)
    fig.add_trace(go.Image(z=rgb, hoverinfo="skip"), row=1, col=1)
    for k, label in enumerate(labels, start=1):
        row, col = k // columns + 1, k % columns + 1
        axis = k + 1
        lo, hi = _scale(maps, label, signed, shared_scale)
        if over_grey:
            fig.add_trace(go.Image(z=backdrop, hoverinfo="skip"), row=row, col=col)
        x_domain, y_domain = fig.layout[f"xaxis{axis}"].domain, fig.layout[f"yaxis{axis}"].domain
        fig.add_trace(go.Heatmap(z=np.asarray(maps[label], dtype=float), zmin=lo, zmax=hi,
                                 colorscale="RdBu_r" if signed else INFERNO, opacity=0.6 if over_grey else 1.0,
                                 colorbar=dict(x=x_domain[1] + 0.005, xanchor="left", thickness=10,
                                               y=sum(y_domain) / 2, len=(y_domain[1] - y_domain[0]) * 0.9,
                                               tickfont=dict(size=9), exponentformat="power"),
                                 hovertemplate="x=%{x} y=%{y}: %{z:.3g}<extra>" + label + "</extra>"),
                      row=row, col=col)
        fig.layout[f"yaxis{axis}"].scaleanchor = f"x{axis}"  # square pixels
    fig.update_xaxes(showticklabels=False, ticks="", showgrid=False, zeroline=False, constrain="domain")
    fig.update_yaxes(showticklabels=False, ticks="", showgrid=False, zeroline=False, autorange="reversed",
                     constrain="domain")
    fig.update_layout(height=300 * rows + 40, margin=dict(l=10, r=40, t=40, b=10))
    return fig


def map_png(attribution: np.ndarray, signed: bool, title: str = "", pixels: int = 320) -> bytes:
    """A map as a PNG in the page's colours (diverging when signed), titled, with its colour bar.

    Drawn with Matplotlib's object API (a ``Figure`` of its own, no pyplot state), about ``pixels`` wide
    for the map itself, nearest-neighbour so each attribution value stays one flat square.
    """
    from matplotlib.figure import Figure  # captum's own plotting dependency; imported only for a download

    m = np.asarray(attribution, dtype=float)
    if signed:
        top = float(np.abs(m).max()) or 1.0
        low, high, cmap = -top, top, "RdBu_r"
    else:
        low, high, cmap = 0.0, float(m.max()) or 1.0, "inferno"
    dpi = 100
    figure = Figure(figsize=(pixels * 1.35 / dpi, pixels * 1.18 / dpi), dpi=dpi, layout="constrained")
    axes = figure.subplots()
    drawn = axes.imshow(m, cmap=cmap, vmin=low, vmax=high, interpolation="nearest")
    axes.set_axis_off()
    axes.set_title(title, fontsize=10, wrap=True)
    bar = figure.colorbar(drawn, ax=axes, shrink=0.85)
    bar.ax.tick_params(labelsize=8)
    bar.set_label("evidence for (red) / against (blue)" if signed else "importance", fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def map_npy(attribution: np.ndarray) -> bytes:
    """A map as a NumPy ``.npy`` file, values as computed (float32)."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(attribution, dtype=np.float32))
    return buffer.getvalue()


def _click_targets(x, y, customdata, hover: str, size: int) -> go.Scatter:
    """Invisible square markers over cells or pictures, so a click selects one.

    Streamlit's ``on_select`` reports selected points of scatter-like traces only (a click on a heat map or
    an image selects nothing), so clickable charts carry these on top; the chosen one is shaded.
    """
    return go.Scatter(x=x, y=y, customdata=customdata, mode="markers", hovertemplate=hover, showlegend=False,
                      marker=dict(symbol="square", size=size, color="#000000", opacity=0),
                      selected=dict(marker=dict(opacity=0.18)), unselected=dict(marker=dict(opacity=0)))


def confusion_figure(confusion, class_names: Sequence[str], normalise: bool = False, max_text: int = 20) -> go.Figure:
    """The confusion matrix (true down, predicted across), each cell clickable (customdata: [true, predicted]).

    Cells show their count, or with ``normalise`` their share of the true class's images (each row sums to
    1, so a rare class's errors read as plainly as a common one's); the hover gives both. Above ``max_text``
    classes the numbers would not fit in the cells and only the hover carries them.
    """
    counts = _np(confusion).astype(float)
    totals = counts.sum(1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    names = list(class_names)
    z = shares if normalise else counts
    text = [[f"{v:.0%}" if normalise else f"{int(v)}" for v in row] for row in z]
    detail = np.dstack([counts, shares])
    fig = go.Figure(go.Heatmap(z=z, x=names, y=names, colorscale="Blues", zmin=0, zmax=1 if normalise else None,
                               text=text, texttemplate="%{text}" if len(names) <= max_text else None,
                               customdata=detail, hoverinfo="skip",
                               colorbar=dict(title="share of row" if normalise else "images")))
    true, predicted = np.meshgrid(range(len(names)), range(len(names)), indexing="ij")
    fig.add_trace(_click_targets(
        [names[p] for p in predicted.ravel()], [names[t] for t in true.ravel()],
        np.stack([true.ravel(), predicted.ravel(), counts.ravel(), shares.ravel()], 1).tolist(),
        "true %{y}, predicted %{x}: %{customdata[2]:.0f} images (%{customdata[3]:.1%} of the row)"
        "<br>click to show them in the gallery<extra></extra>", size=max(8, 360 // max(len(names), 1))))
    fig.update_xaxes(title_text="predicted", type="category")
    fig.update_yaxes(title_text="true", autorange="reversed", type="category")
    fig.update_layout(height=460, margin=dict(l=10, r=10, t=40, b=10), clickmode="event+select",
                      title="Confusion matrix" + (", normalised by row" if normalise else " (counts)"))
    return fig


def runs_bar_figure(per_run: Mapping[str, Sequence[dict]], x: str, y: str, title: str, y_title: str,
                    x_title: str, unit_range: bool = False) -> go.Figure:
    """Grouped bars, one group per ``x`` value and one bar per run: read-out, redundancy, ablation side by side.

    The x values are categories (block numbers stay whole numbers); ``unit_range`` fixes the y axis to
    [0, 1] for accuracies, so two runs' bars read on one scale.
    """
    fig = go.Figure()
    for run, rows in per_run.items():
        fig.add_trace(go.Bar(name=run, x=[str(r[x]) for r in rows], y=[r[y] for r in rows],
                             hovertemplate=f"{run}<br>{x_title} %{{x}}: %{{y:.3f}}<extra></extra>"))
    fig.update_xaxes(type="category", title_text=x_title)
    fig.update_yaxes(title_text=y_title, range=[0, 1] if unit_range else None)
    fig.update_layout(barmode="group", title=title, height=360, margin=dict(l=10, r=10, t=40, b=10),
                      legend=dict(orientation="h", y=-0.3))
    return fig


def fit_title(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters with an ellipsis, so a title never runs into its neighbour's."""
    return text if len(text) <= width else text[: max(width - 1, 1)] + "…"


def gallery_figure(images: Sequence[np.ndarray], predicted: Sequence[str], truth: Sequence[str | None],
                   indices: Sequence[int], columns: int = 6, title_chars: int = 18) -> go.Figure:
    """A grid of images, each titled on two short lines (prediction; the truth when it is wrong), clickable.

    Titles are green for right predictions and red for wrong ones, at most ``title_chars`` characters a
    line: about what fits above a picture of a six-wide grid on a 1400-pixel window, so neighbouring titles
    never overlap; the whole text is in the hover. A click selects the image's ``indices`` entry.
    """
    n = len(images)
    rows = max((n + columns - 1) // columns, 1)
    fig = make_subplots(rows=rows, cols=columns, horizontal_spacing=0.02, vertical_spacing=0.3 / rows)
    for k, (img, pred, true) in enumerate(zip(images, predicted, truth)):
        r, c = k // columns + 1, k % columns + 1
        arr = np.asarray(img)
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, -1)
        fig.add_trace(go.Image(z=(np.clip(arr, 0, 1) * 255).astype(np.uint8), hoverinfo="skip"), row=r, col=c)
        height, width = arr.shape[:2]
        full = pred + (f" · true {true}" if true else "")
        fig.add_trace(_click_targets([width / 2], [height / 2], [int(indices[k])],
                                     f"{full}<br>click to open it in One image<extra></extra>", size=90),
                      row=r, col=c)
        lines = [fit_title(pred, title_chars)] + ([fit_title(f"true {true}", title_chars)] if true else [])
        axis = k + 1 if k else ""
        fig.add_annotation(text="<br>".join(lines), showarrow=False, yanchor="bottom",
                           font=dict(color="#C92A2A" if true else "#2B8A3E", size=11),
                           xref=f"x{axis} domain", yref=f"y{axis} domain", x=0.5, y=1.01)
    bare = dict(showticklabels=False, ticks="", showgrid=False, zeroline=False)
    fig.update_xaxes(**bare).update_yaxes(**bare)
    fig.update_layout(height=190 * rows + 20, margin=dict(l=5, r=5, t=36, b=5), clickmode="event+select")
    return fig


def epochs_animation_figure(grids: Mapping[int, Sequence[dict]], field: str) -> go.Figure:
    """One ``state_grid_figure`` per epoch as animation frames on one colour scale, with play and an epoch slider.

    ``grids`` maps epoch to ``regnet.inspect.state_grid`` rows of the same image and field; every epoch has
    the same maps, so each frame only replaces the traces' values.
    """
    epochs = list(grids)
    fig = state_grid_figure(grids[epochs[0]], field, shared_scale=True)
    values = [_np(m) for rows in grids.values() for r in rows for _, m in r["maps"]]
    lo, hi = min(float(v.min()) for v in values), max(float(v.max()) for v in values)
    diverging = field != "output" and lo < 0 < hi
    if diverging:
        lo, hi = -max(-lo, hi), max(-lo, hi)
    fig.update_traces(zmin=lo, zmax=hi, colorscale="RdBu_r" if diverging else "Viridis")
    count = len(fig.data)
    fig.frames = [go.Frame(name=str(epoch), traces=list(range(count)),
                           data=[go.Heatmap(z=_np(m)[::-1]) for r in grids[epoch] for _, m in r["maps"]])
                  for epoch in epochs]
    animate = {"frame": {"duration": 600, "redraw": True}, "transition": {"duration": 0}, "mode": "immediate"}
    fig.update_layout(
        title=dict(text=f"{field} per stage and step, epoch by epoch"),
        updatemenus=[{"type": "buttons", "direction": "left", "x": 0, "y": -0.02, "xanchor": "left", "yanchor": "top",
                      "buttons": [{"label": "▶ Play", "method": "animate", "args": [None, {**animate, "fromcurrent": True}]},
                                  {"label": "❚❚ Pause", "method": "animate",
                                   "args": [[None], {**animate, "frame": {"duration": 0, "redraw": False}}]}]}],
        sliders=[{"active": 0, "x": 0.18, "len": 0.82, "y": -0.02, "yanchor": "top", "currentvalue": {"prefix": "epoch "},
                  "steps": [{"label": str(epoch), "method": "animate",
                             "args": [[str(epoch)], {**animate, "frame": {"duration": 0, "redraw": True}}]}
                            for epoch in epochs]}],
    )
    fig.update_layout(height=fig.layout.height + 70, margin=dict(b=80))
    return fig
