"""The regulator lab in the dashboard: its chart builders, and the Inspect page on RegNet and ResNet checkpoints."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
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


def test_attribution_figure_overlays_each_map_and_scales_them():
    image = np.zeros((8, 8, 3))
    maps = {"A": np.full((8, 8), 2.0), "B": np.full((8, 8), 1.0)}
    shared = charts.attribution_figure(image, maps, shared_scale=True)
    heat = [t for t in shared.data if t.type == "heatmap"]
    assert len(heat) == 2 and np.asarray(heat[1].z).max() == pytest.approx(0.5)
    separate = [t for t in charts.attribution_figure(image, maps).data if t.type == "heatmap"]
    assert np.asarray(separate[1].z).max() == pytest.approx(1.0)


def test_gallery_titles_are_green_when_right_and_red_when_wrong():
    fig = charts.gallery_figure([np.zeros((4, 4, 3))] * 2, ["cat", "dog"], [True, False], columns=2)
    colours = [a.font.color for a in fig.layout.annotations]
    assert colours == ["#2B8A3E", "#C92A2A"]


def test_runs_bar_figure_puts_runs_side_by_side():
    fig = charts.runs_bar_figure({"resnet": [{"block": 1, "a": 0.5}], "regnet": [{"block": 1, "a": 0.6}]},
                                 "block", "a", "t", "y")
    assert [t.name for t in fig.data] == ["resnet", "regnet"] and fig.data[1].y == (0.6,)


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
    cached = list((inspect_root / "checkpoints" / "regnet" / "artifacts").glob("inspect-split-*.pt"))
    assert len(cached) == 1


def test_inspect_page_on_a_resnet_checkpoint_says_there_is_no_regulator(inspect_root):
    at = _open_inspect("shipped/resnet")
    assert any("has no regulator" in i.value for i in at.info)
    assert "Gates" not in [s.value for s in at.subheader]
    at.toggle(key="inspect_split_shipped/resnet").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("no regulator to ablate" in i.value for i in at.info)


def test_inspect_page_upload_mode_waits_for_a_file(inspect_root):
    # AppTest cannot attach a file; decoding and refusing uploads is tested on prepare_image (test_inspect.py).
    at = _open_inspect("shipped/regnet")
    at.radio(key="inspect_source_shipped/regnet").set_value("Upload").run()
    assert not at.exception and not at.error
    assert any("Upload a PNG or JPEG" in i.value for i in at.info)
    assert "Inside the regulator, step by step" not in [s.value for s in at.subheader]


def test_the_inspect_page_never_downloads_a_missing_data_set(tmp_path):
    from dashboard import lab
    from regnet.data import DataError

    write_shipped_run(tmp_path, "cifar", "resnet20")
    config_path = tmp_path / "cifar" / "config.yaml"
    config_path.write_text(config_path.read_text().replace("name: shapes", "name: cifar10"))
    empty = tmp_path / "no-data"
    empty.mkdir()
    with pytest.raises(DataError):
        lab.splits_of(str(tmp_path / "cifar"), str(empty))
    assert list(empty.iterdir()) == []  # nothing was fetched or unpacked there
