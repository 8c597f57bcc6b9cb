"""dashboard.charts: plain functions, data in, plotly figure out."""
from __future__ import annotations

import numpy as np
import pytest

from dashboard.charts import (PANELS, PANELS_BY_TITLE, class_distribution_figure, metric_figure, point_count, sample_grid_figure,
                              series)
from dashboard.runs import ema, metrics_frame
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
