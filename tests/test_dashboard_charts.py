"""dashboard.charts: plain functions, data in, plotly figure out."""
from __future__ import annotations

import numpy as np
import pytest

from regnet.dashboard.charts import (MARKERS_UP_TO, PANELS, PANELS_BY_TITLE, X_AXES, class_distribution_figure, group_series,
                              line_spec, metric_figure, point_count, sample_grid_figure,
                              series)
from regnet.dashboard.run_listing import ema, metrics_frame
from test_dashboard_fixtures import metric_lines


def frame(epochs=2, steps_per_epoch=4):
    return metrics_frame(metric_lines(epochs, steps_per_epoch), steps_per_epoch)


def test_series_reads_dense_metrics_from_step_lines_and_the_rest_from_epoch_lines():
    xs, ys, dense = series(frame(), "train_loss", "step")
    assert dense and list(xs) == [1, 2, 3, 4, 5, 6, 7, 8] and ys[0] == pytest.approx(2.3)
    xs, ys, dense = series(frame(), "val_top1", "epoch")
    assert not dense and list(xs) == [1.0, 2.0] and list(ys) == [0.25, 0.5]
    xs, _, _ = series(frame(), "lr", "epoch")
    assert list(xs) == [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]
    assert series(frame(), "no_such_metric")[0] == []


def test_metric_figure_overlays_runs_and_smooths_only_dense_curves():
    frames = {"resnet": frame(), "regnet": frame(epochs=3)}
    figure = metric_figure(frames, PANELS_BY_TITLE["Loss"], x="step", smoothing=0.5)
    names = [trace.name for trace in figure.data]
    assert names == ["resnet · train loss (raw)", "resnet · train loss", "resnet · val loss",
                     "regnet · train loss (raw)", "regnet · train loss", "regnet · val loss"]
    raw, smoothed, val = figure.data[:3]
    assert list(smoothed.y) == pytest.approx(ema(list(raw.y), 0.5))
    assert list(val.y) == pytest.approx([1.2, 0.6])  # per-epoch points are never smoothed
    assert val.line.dash == "dash" and smoothed.line.dash == "solid"
    assert figure.data[0].line.color == figure.data[2].line.color != figure.data[3].line.color
    assert point_count(figure) == 8 + 8 + 2 + 12 + 12 + 3
    assert figure.layout.title.text == "Loss" and figure.layout.xaxis.title.text == "step (optimizer updates)"


def test_metric_figure_without_smoothing_or_points():
    figure = metric_figure({"only": frame()}, PANELS_BY_TITLE["Top-5 accuracy"], x="epoch")
    assert [trace.name for trace in figure.data] == ["val top-5"] and figure.data[0].mode == "lines+markers"
    assert figure.layout.yaxis.tickformat == ".0%"
    empty = metric_figure({"none": metrics_frame([])}, PANELS_BY_TITLE["Loss"])
    assert point_count(empty) == 0 and empty.layout.annotations[0].text == "no points yet"


def test_every_panel_draws_something_for_a_finished_run():
    for panel in PANELS:
        assert point_count(metric_figure({"r": frame()}, panel)) > 0, panel.title


def test_class_distribution_figure():
    figure = class_distribution_figure({"train": [5, 7], "val": [1, 2]}, ["circle", "square"])
    assert [bar.name for bar in figure.data] == ["train", "val"]
    assert list(figure.data[0].y) == [5, 7] and list(figure.data[1].x) == ["circle", "square"]
    assert figure.layout.barmode == "group"


def test_sample_grid_figure_titles_every_image():
    images = np.random.default_rng(0).random((6, 8, 8, 1))
    figure = sample_grid_figure(images, [f"class {i}" for i in range(6)], columns=4, title="before")
    assert len(figure.data) == 6
    assert sorted(a.text for a in figure.layout.annotations) == [f"class {i}" for i in range(6)]
    assert figure.data[0].source.startswith("data:image/png")  # sent as compact PNGs, not number arrays
    with pytest.raises(ValueError, match="Expected images"):
        sample_grid_figure(images, ["too few"])


def lr_lines(lrs) -> list[dict]:
    """Step lines with a changing LR (a schedule) and a noisy loss, one second apart."""
    return [{"kind": "step", "epoch": 1, "step": i + 1, "time": 1_700_000_000.0 + i, "train_loss": 2.0 + (-1) ** i,
             "lr": lr, "images_per_s": 100.0} for i, lr in enumerate(lrs)]


def test_a_curve_has_markers_while_it_has_few_points():
    one = metric_figure({"r": metrics_frame(lr_lines([0.1]), 10)}, PANELS_BY_TITLE["Loss"], smoothing=0.6)
    assert [trace.mode for trace in one.data if trace.showlegend is not False] == ["lines+markers"]
    assert point_count(one) == 2  # the smoothed point, and the raw one faint behind it
    many = metric_figure({"r": metrics_frame(lr_lines([0.1] * (MARKERS_UP_TO + 1)), 100)}, PANELS_BY_TITLE["Loss"])
    assert many.data[-1].mode == "lines"


def test_accuracy_and_f1_axes_run_from_0_to_1_and_others_from_0():
    frames = {"r": frame(epochs=1)}
    for title in ("Top-1 accuracy", "Top-5 accuracy", "Macro-F1"):
        assert tuple(metric_figure(frames, PANELS_BY_TITLE[title]).layout.yaxis.range) == (0, 1), title
    for title in ("Loss", "Learning rate", "Images per second"):
        assert metric_figure(frames, PANELS_BY_TITLE[title]).layout.yaxis.rangemode == "tozero", title


def test_the_learning_rate_is_drawn_exactly_as_logged_and_never_smoothed():
    lrs = [0.1, 0.1, 0.05, 0.01, 0.001, 0.001]
    frames = {"r": metrics_frame(lr_lines(lrs), 6)}
    lr = metric_figure(frames, PANELS_BY_TITLE["Learning rate"], smoothing=0.9)
    assert len(lr.data) == 1 and list(lr.data[0].y) == lrs and lr.data[0].hoverinfo != "skip"
    loss = metric_figure(frames, PANELS_BY_TITLE["Loss"], smoothing=0.9)
    raw, smoothed = loss.data
    assert raw.opacity == 0.25 and raw.hoverinfo == "skip" and list(smoothed.y) == pytest.approx(ema(raw.y, 0.9))


def test_log_scale_per_chart():
    frames = {"r": frame()}
    assert metric_figure(frames, PANELS_BY_TITLE["Loss"], log_y=True).layout.yaxis.type == "log"
    accuracy = metric_figure(frames, PANELS_BY_TITLE["Top-1 accuracy"], log_y=True).layout.yaxis
    assert accuracy.type == "log" and accuracy.range is None  # [0, 1] has no log
    assert metric_figure(frames, PANELS_BY_TITLE["Loss"]).layout.yaxis.type != "log"


def test_x_axis_by_step_epoch_relative_or_wall_time_with_titles():
    frames = {"r": frame()}
    loss = PANELS_BY_TITLE["Loss"]
    by = {x: metric_figure(frames, loss, x=x) for x in X_AXES}
    assert list(by["step"].data[0].x) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert list(by["epoch"].data[0].x) == [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]
    assert list(by["relative time"].data[0].x) == pytest.approx([i / 60 for i in range(8)])  # minutes, from 0
    assert by["wall time"].layout.xaxis.type == "date" and by["wall time"].data[0].x[0].startswith("2023-11-1")
    assert {x: f.layout.xaxis.title.text for x, f in by.items()} == X_AXES
    assert by["step"].layout.yaxis.title.text == "cross-entropy loss"


def test_hover_names_the_full_run_and_metric_and_the_legend_sits_below():
    runs = {f"shipped/cifar10-regnet20-lstm-{i}": frame() for i in range(3)}
    figure = metric_figure(runs, PANELS_BY_TITLE["Top-1 accuracy"])
    assert figure.layout.hoverlabel.namelength == -1  # plotly cuts names at 15 characters otherwise
    assert "shipped/cifar10-regnet20-lstm-2 · val top-1" in figure.data[-1].hovertemplate
    assert figure.data[-1].name == "shipped/cifar10-regnet20-lstm-2 · val top-1"
    legend = figure.layout.legend
    assert (legend.yref, legend.y, legend.yanchor) == ("container", 0, "bottom")  # in the margin, not the plot
    one = metric_figure({"one": frame()}, PANELS_BY_TITLE["Top-1 accuracy"])
    assert "one · val top-1" in one.data[-1].hovertemplate and one.data[-1].name == "val top-1"
    # Six entries more than two: the margin (and the figure) grow by their rows, no legend scrollbar.
    assert figure.layout.margin.b - one.layout.margin.b == figure.layout.height - one.layout.height == 4 * 20


def test_seed_groups_draw_a_mean_and_a_band():
    frames = {"s0": frame(), "s1": metrics_frame(metric_lines(2, 4, start_loss=4.6), 4)}
    xs, mean, low, high, dense = group_series(list(frames.values()), "train_loss", "step")
    assert dense and xs == [1, 2, 3, 4, 5, 6, 7, 8]
    assert list(mean) == pytest.approx([3.45 / s for s in range(1, 9)])
    assert list(low) == pytest.approx([2.3 / s for s in range(1, 9)]) and list(high) == pytest.approx(
        [4.6 / s for s in range(1, 9)])
    _, mean, low, high, _ = group_series(list(frames.values()), "train_loss", "step", band="std")
    assert list(high - mean) == pytest.approx([1.15 * 2 ** 0.5 / s for s in range(1, 9)])  # sample std
    figure = metric_figure(frames, PANELS_BY_TITLE["Loss"], groups={"seeds": ["s0", "s1"]})
    fills = [trace for trace in figure.data if trace.fill == "tonexty"]
    assert len(fills) == 2  # train and val loss bands
    assert [t.name for t in figure.data if t.showlegend is not False] == [
        "seeds · train loss (mean of 2)", "seeds · val loss (mean of 2)"]


def test_line_spec_has_the_curves_of_the_plotly_figure_as_plain_sorted_numbers():
    frames = {"resnet": frame(), "regnet": frame(epochs=3)}
    spec = line_spec(frames, PANELS_BY_TITLE["Loss"], x="step", smoothing=0.5)
    figure = metric_figure(frames, PANELS_BY_TITLE["Loss"], x="step", smoothing=0.5)
    assert [c["label"] for c in spec["series"]] == [trace.name for trace in figure.data]
    for curve, trace in zip(spec["series"], figure.data):
        assert curve["x"] == list(trace.x) and curve["y"] == pytest.approx(list(trace.y))
    assert [c["raw"] for c in spec["series"]] == [True, False, False, True, False, False]
    assert spec["series"][0]["color"].startswith("rgba(") and spec["series"][1]["color"] == spec["series"][2]["color"]
    assert [c["dash"] for c in spec["series"][:3]] == [False, False, True]  # val dashed


def test_line_spec_axes_ranges_and_what_json_cannot_hold():
    rows = frame()
    rows.loc[rows.index[2], "train_loss"] = float("inf")
    spec = line_spec({"r": rows}, PANELS_BY_TITLE["Loss"], x="relative time")
    train = spec["series"][0]
    assert train["y"][2] is None and train["x"] == sorted(train["x"]) and train["x"][0] == 0.0
    assert train["x"][-1] == pytest.approx((rows["time"].max() - rows["time"].min()) / 60.0)
    assert spec["x_label"] == X_AXES["relative time"] and not spec["time"]
    wall = line_spec({"r": rows}, PANELS_BY_TITLE["Top-1 accuracy"], x="wall time", log_y=True)
    assert wall["time"] and wall["y"] == {"log": True, "range": None, "format": "percent"}
    assert line_spec({"r": rows}, PANELS_BY_TITLE["Macro-F1"])["y"]["range"] == [0, 1]
    empty = line_spec({"r": rows.iloc[0:0]}, PANELS_BY_TITLE["Top-5 accuracy"])
    assert empty["series"] == [] and empty["empty"] == "no points yet: validation ends each epoch"
