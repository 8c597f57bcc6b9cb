"""The regulator lab in the dashboard: its chart builders, and the Inspect page on RegNet and ResNet checkpoints."""
from __future__ import annotations

import base64
import io
import json
import zlib
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


def test_gate_depth_figure_gives_each_lstm_gate_its_own_row_and_range():
    """i, f and o of a fresh LSTM all sit near 0.5: on one axis they hid each other."""
    model = build_model("regnet20", cell="lstm").eval()
    _, trace = ri.record_states(model, torch.randn(1, 3, 32, 32))
    fig = charts.gate_depth_figure(ri.gate_profile(trace), {"i": "input gate i", "g": "candidate g"})
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    rows = {name: sorted({t.yaxis for t in lines if t.name == name}) for name in "ifog"}
    assert all(len(axes) == 3 for axes in rows.values()) and len(set(sum(rows.values(), []))) == 12

    def scale(axes):  # the y axis a row's panels follow: its first panel's
        return {fig.layout[axis.replace("y", "yaxis")].matches or axis for axis in axes}
    assert all(len(scale(axes)) == 1 for axes in rows.values())  # a gate's stages share one range...
    assert len(set().union(*(scale(axes) for axes in rows.values()))) == 4  # ...and each gate has its own
    titles = [a.text for a in fig.layout.annotations]
    assert "input gate i" in titles and "candidate g" in titles and "f" in titles and "stage 1" in titles
    bands = [t for t in fig.data if t.fill == "toself"]
    assert len(bands) == 12 and all(max(b.y) >= min(b.y) for b in bands)


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


def _array(encoded) -> np.ndarray:
    """A numeric array of a figure's JSON: plotly writes numpy arrays as base64 with their dtype and shape."""
    if not isinstance(encoded, dict):
        return np.asarray(encoded, dtype=float)
    shape = tuple(int(n) for n in str(encoded["shape"]).split(","))
    return np.frombuffer(base64.b64decode(encoded["bdata"]), dtype=encoded["dtype"]).reshape(shape)


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


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares its size and holds no pixels: a decompression bomb as ``Image.open`` sees it."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def _uploads() -> dict[str, bytes]:
    """One file of every kind a user may have (made in memory, encoded as a file on disk would be)."""
    gradient = np.tile(np.linspace(0, 65535, 40, dtype=np.uint16), (40, 1))
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 0, 255))]
    animated = io.BytesIO()
    frames[0].save(animated, "GIF", save_all=True, append_images=frames[1:])
    return {
        "rgb-96.png": _encoded(Image.new("RGB", (96, 96), (200, 30, 30)), "PNG"),
        "rgba.png": _encoded(Image.new("RGBA", (32, 32), (10, 200, 10, 100)), "PNG"),
        "la.png": _encoded(Image.new("LA", (32, 32), (90, 100)), "PNG"),
        "palette.png": _encoded(Image.new("P", (32, 32), 7), "PNG"),
        "grey.png": _encoded(Image.new("L", (50, 30), 128), "PNG"),
        "bits.png": _encoded(Image.new("1", (32, 32), 1), "PNG"),
        "cmyk.jpg": _encoded(Image.new("CMYK", (32, 32), (0, 80, 200, 0)), "JPEG"),
        "animated.gif": animated.getvalue(),
        "icon.ico": _encoded(Image.new("RGBA", (48, 48), (0, 0, 255, 255)), "ICO", sizes=[(16, 16), (48, 48)]),
        "sixteen-bit.png": _encoded(Image.fromarray(gradient), "PNG"),
        "float.tiff": _encoded(Image.fromarray(np.full((32, 32), 0.75, dtype=np.float32)), "TIFF"),
    }


# What the page must say about a conversion it made (the pixel values are checked in test_inspect_images.py).
NOTES = {"rgb-96.png": "96x96", "rgba.png": "white", "cmyk.jpg": "CMYK", "animated.gif": "frames",
         "icon.ico": "sizes", "grey.png": "50x30"}


def test_every_kind_of_upload_gets_a_prediction_and_the_regulator_maps(inspect_root):
    at = _open_inspect("shipped/regnet")
    at.radio(key="inspect_source_shipped/regnet").set_value("Upload").run()
    assert any("Upload an image" in i.value for i in at.info)
    for name, data in _uploads().items():
        at.file_uploader(key="inspect_upload").set_value((name, data, "application/octet-stream")).run()
        assert not at.exception, (name, [e.value for e in at.exception])
        assert not at.error, (name, [e.value for e in at.error])
        assert [s.value for s in at.subheader][:3] == ["Inside the regulator, step by step", "Gates", "Attribution"]
        probabilities = at.dataframe[0].value["probability"]
        assert len(probabilities) == 5 and abs(sum(probabilities) - 1) < 0.1, name
        states = json.loads(at.get("plotly_chart")[0].proto.spec)
        assert sum(t["type"] == "heatmap" for t in states["data"]) == 9, name
        notes = " ".join(c.value for c in at.caption)
        assert NOTES.get(name, "") in notes, (name, notes)


@pytest.mark.parametrize("data, words", [
    (b"", "empty"),
    (b"name,value\n1,2\n", "not an image"),
    (_encoded(Image.new("RGB", (64, 64), (1, 2, 3)), "PNG")[:90], "damaged"),
    (_png_header(30_000, 30_000), "megapixels"),
])
def test_a_bad_upload_is_one_sentence_and_the_other_tab_still_works(inspect_root, data, words):
    at = _open_inspect("shipped/regnet")
    at.radio(key="inspect_source_shipped/regnet").set_value("Upload").run()
    at.file_uploader(key="inspect_upload").set_value(("upload.png", data, "image/png")).run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.error) == 1 and words in at.error[0].value, [e.value for e in at.error]
    assert "Inside the regulator, step by step" not in [s.value for s in at.subheader]
    at.toggle(key="inspect_split_shipped/regnet").set_value(True).run()  # the Whole split tab is not blocked
    assert not at.exception and [m.label for m in at.metric][:2] == ["Top-1", "Macro-F1"]


@pytest.fixture
def shipped_only(tmp_path, monkeypatch):
    """A fresh clone as a newcomer has it: the repository's shipped checkpoints, no runs, no data sets."""
    monkeypatch.setenv("REGNET_RUNS_ROOT", str(tmp_path / "runs"))
    monkeypatch.delenv("REGNET_CHECKPOINTS_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)  # the configs' relative data roots point at nothing here
    return tmp_path


def test_inspect_opens_on_the_best_shipped_model_of_the_embedded_data_set(shipped_only):
    at = AppTest.from_file(str(APP), default_timeout=240)
    at.run()
    at.switch_page("views/inspect.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="inspect_run").value == "shipped/shapes-regnet20"
    assert at.dataframe[0].value["class"][0] == "circle"  # the first validation image, predicted right


def test_shipped_cifar_checkpoints_offer_their_sample_images_and_analyse_them(shipped_only):
    at = AppTest.from_file(str(APP), default_timeout=240)
    at.run()
    at.switch_page("views/inspect.py").run()
    at.selectbox(key="inspect_run").set_value("shipped/cifar10-regnet20").run()
    assert not at.exception and not at.warning, [w.value for w in at.warning]
    assert any("shipped sample of 200 validation images" in c.value for c in at.caption)
    at.selectbox(key="inspect_class").set_value("ship").run()
    assert at.number_input(key="inspect_index").label == "Image (20 match)"
    assert any(c.value.startswith("On a shipped sample of 200 validation images; computed once") for c in at.caption)
    at.toggle(key="inspect_split_shipped/cifar10-regnet20").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Top-1"] == "81.00%"  # the shipped regnet20 on its 200 samples (84.72% on all 5,000)
    assert any("not on the whole split" in c.value for c in at.caption)


def test_a_checkpoint_whose_model_entry_is_not_weights_is_one_sentence(inspect_root):
    torch.save({"model": [1, 2, 3], "config": {}}, inspect_root / "checkpoints" / "regnet" / "checkpoints" / "best.pt")
    at = AppTest.from_file(str(APP), default_timeout=240)
    at.run()
    at.switch_page("views/inspect.py").run()
    at.selectbox(key="inspect_run").set_value("shipped/regnet").run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.error) == 1 and "not a dict of named weight tensors" in at.error[0].value


def test_each_attribution_is_computed_once_and_only_for_the_methods_turned_on(inspect_root, monkeypatch):
    from dashboard import lab

    calls = []
    real = lab.ri.attribute
    monkeypatch.setattr(lab.ri, "attribute", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    at = _open_inspect("shipped/regnet")
    assert sorted(calls) == ["gradcam", "integrated_gradients"]
    at.selectbox(key="inspect_gate").set_value("f").run()
    at.selectbox(key="inspect_field").set_value("cell").run()
    assert len(calls) == 2  # changes that do not concern attributions reuse them
    at.selectbox(key="inspect_target").set_value(4).run()
    at.selectbox(key="inspect_target").set_value(-1).run()  # back to "the prediction"
    assert len(calls) == 4  # a new target computes again, going back does not
    at.slider(key="inspect_ig_steps").set_value(16).run()
    assert calls[4:] == ["integrated_gradients"]  # a setting recomputes only the method that reads it


def test_method_settings_signed_maps_and_downloads(inspect_root):
    at = _open_inspect("shipped/regnet")
    at.multiselect(key="inspect_methods").set_value(["integrated_gradients", "occlusion"]).run()
    at.radio(key="inspect_sign").set_value("signed").run()
    at.selectbox(key="inspect_baseline").set_value("noise").run()
    at.slider(key="inspect_occ_window").set_value(8).run()
    at.slider(key="inspect_occ_stride").set_value(8).run()
    assert not at.exception, [e.value for e in at.exception]
    figure = json.loads(at.get("plotly_chart")[-1].proto.spec)
    heat = [t for t in figure["data"] if t["type"] == "heatmap"]
    assert len(heat) == 2 and all(t["zmin"] == -t["zmax"] for t in heat)
    assert len({t["colorbar"]["x"] for t in heat}) == 2
    occlusion = _array(heat[1]["z"])
    assert len(np.unique(occlusion.round(6))) <= 16  # 8x8 windows at stride 8: a 4x4 grid of patches
    names = [b.proto.file_name if hasattr(b.proto, "file_name") else b.proto.label for b in at.get("download_button")]
    assert len(names) == 4


def test_channel_bound_follows_the_chosen_stage_and_the_gallery_names_the_truth(inspect_root):
    at = _open_inspect("shipped/regnet")
    at.selectbox(key="inspect_mode").set_value("channel").run()
    at.selectbox(key="inspect_stage").set_value(2).run()
    assert at.number_input(key="inspect_number").max == 63
    at.number_input(key="inspect_number").set_value(60).run()
    at.selectbox(key="inspect_stage").set_value(0).run()
    assert at.number_input(key="inspect_number").max == 15 and at.number_input(key="inspect_number").value == 15
    assert not at.exception
    at.toggle(key="inspect_split_shipped/regnet").set_value(True).run()
    at.selectbox(key="inspect_gallery_verdict").set_value("wrong").run()
    gallery = json.loads(at.get("plotly_chart")[-4].proto.spec)  # gallery, read-out, redundancy, ablation
    titles = [a["text"] for a in gallery["layout"]["annotations"]]
    assert titles and all(" · true " in t for t in titles)


def test_the_default_run_is_the_chosen_one_else_the_best_shipped_embedded_model():
    from dashboard.inspect_sections import default_run
    from dashboard.runs import RunInfo

    def run(key, source, dataset, best):
        return RunInfo(key=key, path=Path(key), source=source, state="finished", dataset=dataset, best_value=best)

    runs = [run("new-cifar", "run", "cifar10", 0.9), run("shipped/a", "shipped", "shapes", 0.5),
            run("shipped/b", "shipped", "shapes", 0.98), run("mine", "run", "shapes", 0.99)]
    assert default_run(runs, ["mine"]) == "mine"
    assert default_run(runs, []) == "shipped/b"
    assert default_run(runs[:1], []) == "new-cifar"
