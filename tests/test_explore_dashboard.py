"""The Linear probes and Channels tabs' figure builders: data in, plotly figure out."""
from __future__ import annotations

import numpy as np

from regnet.dashboard.channel_explorer import maps_gallery_figure, steps_figure
from regnet.dashboard.probe_section import probe_figure, probe_rows


def _report(model: str, top1: list[float]) -> dict:
    rows = [{"block": b, "stage": 3, "step": b - 6, "features": "output", "probe_top1": t, "l2": 1e-4,
             "final_head_top1": None} for b, t in zip((7, 8, 9), top1)]
    return {"model": model, "rows": rows}


def test_probe_figure_draws_each_run_and_the_papers_points_of_the_same_models():
    fig = probe_figure({"a": _report("regnet20", [0.7, 0.8, 0.85]), "b": _report("resnet20", [0.6, 0.7, 0.8])})
    names = [t.name for t in fig.data]
    assert names == ["a: block output", "b: block output", "paper, regnet20 (Fig. 1b)", "paper, resnet20 (Fig. 1b)"]
    assert list(fig.data[0].y) == [70.0, 80.0, 85.0] and list(fig.data[2].y) == [60.2, 71.7, 92.7]
    assert probe_rows({"a": _report("regnet20", [0.7, 0.8, 0.85])})[2]["probe top-1 %"] == 85.0


def test_maps_gallery_puts_images_above_maps_with_the_boxes_drawn():
    pictures = [np.zeros((8, 8, 3)), np.ones((8, 8, 3))]
    maps = [np.zeros((4, 4)), np.full((4, 4), 2.0)]
    fig = maps_gallery_figure(pictures, maps, ["x", "y"], boxes=[(0, 0, 2, 2), (1, 1, 3, 3)])
    assert [t.type for t in fig.data] == ["image", "heatmap", "image", "heatmap"]
    assert fig.data[1].zmin == 0.0 and fig.data[3].zmax == 2.0  # one colour scale for every map
    assert [(s.x0, s.y1) for s in fig.layout.shapes] == [(-0.5, 1.5), (0.5, 2.5)]
    steps = steps_figure({1: [0.1, 0.2], 2: [0.3, 0.4]}, ["p", "q"], "t")
    assert [list(t.y) for t in steps.data] == [[0.1, 0.3], [0.2, 0.4]]
