"""The regulator lab in the dashboard: its chart builders, and the Inspect page on RegNet and ResNet checkpoints."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from dashboard import inspect_charts as charts
from regnet import inspect as ri
from regnet.models import build_model
from test_dashboard_fixtures import write_shipped_run

APP = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"


def test_state_grid_figure_has_one_heatmap_per_map_on_a_shared_scale():
    model = build_model("regnet20").eval()
    _, trace = ri.record_states(model, torch.randn(1, 3, 32, 32))
    rows = ri.state_grid(trace, "hidden", mode="top", top=2)
    fig = charts.state_grid_figure(rows, "hidden", shared_scale=True)
    heatmaps = [t for t in fig.data if t.type == "heatmap"]
    assert len(heatmaps) == 9 * 2
    assert len({(t.zmin, t.zmax) for t in heatmaps}) == 1
    # H is signed: the scale is symmetric so that white means zero.
    extent = max(float(m.abs().max()) for r in rows for _, m in r["maps"])
    assert heatmaps[0].zmax == pytest.approx(extent) and heatmaps[0].zmin == pytest.approx(-extent)
    own = charts.state_grid_figure(rows, "hidden", shared_scale=False)
    assert all(t.zmin is None for t in own.data)


def test_gate_depth_figure_draws_mean_and_band_per_gate_and_stage():
    model = build_model("regnet20", cell="gru").eval()
    _, trace = ri.record_states(model, torch.randn(1, 3, 32, 32))
    fig = charts.gate_depth_figure(ri.gate_profile(trace))
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert len(lines) == 3 * 3  # gates z, r, candidate in each of 3 stages
    assert {t.name for t in lines} == {"z", "r", "candidate"}
    assert list(lines[0].x) == [1, 2, 3]


def test_attribution_figure_overlays_each_map_with_its_own_colour_bar():
    image = np.zeros((8, 8, 3))
    maps = {"A": np.full((8, 8), 2.0), "B": np.full((8, 8), 1.0)}
    shared = [t for t in charts.attribution_figure(image, maps, shared_scale=True).data if t.type == "heatmap"]
    assert len(shared) == 2 and [(t.zmin, t.zmax) for t in shared] == [(0.0, 2.0), (0.0, 2.0)]
    separate = [t for t in charts.attribution_figure(image, maps).data if t.type == "heatmap"]
    assert [(t.zmin, t.zmax) for t in separate] == [(0.0, 2.0), (0.0, 1.0)]
    assert separate[0].colorbar.x < separate[1].colorbar.x  # one bar beside each map, not one for all
    assert np.asarray(separate[1].z).max() == 1.0  # values as computed, not rescaled


def test_signed_maps_use_a_diverging_scale_centred_on_zero():
    signed = np.array([[-3.0, 1.0], [0.5, 0.0]])
    heat = [t for t in charts.attribution_figure(np.zeros((2, 2, 3)), {"IG": signed}, signed=True).data
            if t.type == "heatmap"][0]
    assert (heat.zmin, heat.zmax) == (-3.0, 3.0) and heat.colorscale[0][1] != heat.colorscale[-1][1]


def test_maps_download_as_png_and_numpy():
    values = np.array([[-1.0, 0.0], [0.5, 1.0]], dtype=np.float32)
    assert np.array_equal(np.load(io.BytesIO(charts.map_npy(values))), values)
    png = Image.open(io.BytesIO(charts.map_png(values, signed=True, pixels=64)))
    assert png.size == (64, 64) and png.mode == "RGB"
    pixels = np.asarray(png)
    # Diverging: the most negative pixel is blue, the most positive red, zero near white.
    assert pixels[0, 0, 2] > pixels[0, 0, 0] and pixels[63, 63, 0] > pixels[63, 63, 2]
    assert pixels[0, 63].min() > 200


def test_gallery_titles_are_green_when_right_and_red_when_wrong():
    fig = charts.gallery_figure([np.zeros((4, 4, 3))] * 2, ["cat", "dog"], [True, False], columns=2)
    colours = [a.font.color for a in fig.layout.annotations]
    assert colours == ["#2B8A3E", "#C92A2A"]


def test_runs_bar_figure_puts_runs_side_by_side_on_whole_block_ticks():
    fig = charts.runs_bar_figure({"resnet": [{"block": 1, "a": 0.5}], "regnet": [{"block": 1, "a": 0.6}]},
                                 "block", "a", "t", "top-1", "block of stage 3", unit_range=True)
    assert [t.name for t in fig.data] == ["resnet", "regnet"] and fig.data[1].y == (0.6,)
    assert fig.layout.xaxis.type == "category" and fig.layout.xaxis.title.text == "block of stage 3"
    assert fig.layout.yaxis.title.text == "top-1" and tuple(fig.layout.yaxis.range) == (0, 1)


@pytest.fixture
def inspect_root(tmp_path, monkeypatch):
    write_shipped_run(tmp_path / "checkpoints", "regnet", "regnet20")
    write_shipped_run(tmp_path / "checkpoints", "resnet", "resnet20")
    monkeypatch.setenv("REGNET_RUNS_ROOT", str(tmp_path / "runs"))
    monkeypatch.setenv("REGNET_CHECKPOINTS_ROOT", str(tmp_path / "checkpoints"))
    return tmp_path


def _open_inspect(run_key: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=240)
    at.run()
    at.switch_page("views/inspect.py").run()
    at.selectbox(key="inspect_run").set_value(run_key).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_inspect_page_on_a_regnet_checkpoint(inspect_root):
    at = _open_inspect("shipped/regnet")
    assert not at.error
    titles = [s.value for s in at.subheader]
    assert "Inside the regulator, step by step" in titles and "Gates" in titles
    figures = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert sum(1 for f in figures for t in f["data"] if t["type"] == "heatmap") >= 9
    at.toggle(key="inspect_split_shipped/regnet").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    labels = [m.label for m in at.metric]
    assert "Top-1 without the regulator" in labels
    # The cache lives under the runs folder, never beside the (shipped, source-tree) checkpoint.
    cached = list((inspect_root / "runs" / ".inspect-cache").glob("inspect-split-*.pt"))
    assert len(cached) == 1
    assert not (inspect_root / "checkpoints" / "regnet" / "artifacts").exists()


def test_inspect_page_on_a_resnet_checkpoint_says_there_is_no_regulator(inspect_root):
    at = _open_inspect("shipped/resnet")
    assert any("has no regulator" in i.value for i in at.info)
    assert "Gates" not in [s.value for s in at.subheader]
    at.toggle(key="inspect_split_shipped/resnet").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("no regulator to ablate" in i.value for i in at.info)


def test_the_inspect_page_never_downloads_a_missing_data_set(tmp_path):
    from dashboard import lab
    from regnet.data import DataError

    write_shipped_run(tmp_path, "cifar", "resnet20")
    config_path = tmp_path / "cifar" / "config.yaml"
    config_path.write_text(config_path.read_text().replace("name: shapes", "name: cifar10"))
    empty = tmp_path / "no-data"
    empty.mkdir()
    with pytest.raises(DataError):
        lab.images_of(str(tmp_path / "cifar"), str(empty))
    assert list(empty.iterdir()) == []  # nothing was fetched or unpacked there
