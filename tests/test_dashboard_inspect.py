"""The regulator lab in the dashboard: its chart builders, and the Inspect page on RegNet and ResNet checkpoints."""
from __future__ import annotations

import base64
import dataclasses
import io
import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from regnet.dashboard import inspect_charts as charts
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


def test_attribution_figure_draws_each_map_with_its_own_colour_bar():
    image = np.zeros((8, 8, 3))
    maps = {"A": np.full((8, 8), 2.0), "B": np.full((8, 8), 1.0)}
    shared = [t for t in charts.attribution_figure(image, maps, shared_scale=True).data if t.type == "heatmap"]
    assert len(shared) == 2 and [(t.zmin, t.zmax) for t in shared] == [(0.0, 2.0), (0.0, 2.0)]
    separate = [t for t in charts.attribution_figure(image, maps).data if t.type == "heatmap"]
    assert [(t.zmin, t.zmax) for t in separate] == [(0.0, 2.0), (0.0, 1.0)]
    assert separate[0].colorbar.x < separate[1].colorbar.x  # one bar beside each map, not one for all
    assert np.asarray(separate[1].z).max() == 1.0  # values as computed, not rescaled
    # No colour Streamlit's theme would rewrite (#000000-#000040): zero is Inferno's black, not pink.
    assert all(not str(c).lower().startswith("#0000") for _, c in separate[0].colorscale)
    assert separate[0].colorscale[0][1] == "rgb(0, 0, 4)"


def test_signed_maps_use_a_diverging_scale_centred_on_zero():
    signed = np.array([[-3.0, 1.0], [0.5, 0.0]])
    heat = [t for t in charts.attribution_figure(np.zeros((2, 2, 3)), {"IG": signed}, signed=True).data
            if t.type == "heatmap"][0]
    assert (heat.zmin, heat.zmax) == (-3.0, 3.0) and heat.colorscale[0][1] != heat.colorscale[-1][1]


def test_maps_download_as_png_with_title_and_colour_bar_and_as_numpy():
    values = np.array([[-1.0, 0.0], [0.5, 1.0]], dtype=np.float32)
    assert np.array_equal(np.load(io.BytesIO(charts.map_npy(values))), values)
    png = Image.open(io.BytesIO(charts.map_png(values, signed=True, title="Saliency (signed)", pixels=200)))
    assert png.mode in ("RGB", "RGBA") and png.size[0] > 250 and png.size[1] > 200  # the map, a bar, a title
    pixels = np.asarray(png.convert("RGB")).astype(int)
    reds = pixels[..., 0] > pixels[..., 2] + 60
    blues = pixels[..., 2] > pixels[..., 0] + 60
    assert reds.sum() > 400 and blues.sum() > 400  # the map's two signs
    bar_columns = np.flatnonzero((reds | blues).any(0))
    assert bar_columns.max() - bar_columns.min() > png.size[0] * 0.6  # colour right of the map: the bar

    def text(rgb):  # black pixels above the map: the title's letters (the map's darkest colours are blue and red)
        top = rgb[: rgb.shape[0] // 8, : rgb.shape[1] // 2].astype(int)
        return ((top.max(-1) < 90) & (np.ptp(top, axis=-1) < 30)).sum()
    untitled = np.asarray(Image.open(io.BytesIO(charts.map_png(values, signed=True, pixels=200))).convert("RGB"))
    assert text(pixels) > 20 and text(untitled) == 0


def test_attribution_maps_wrap_three_panels_a_row_and_are_drawn_in_their_colour_bars_colours():
    image = np.random.default_rng(0).random((8, 8, 3))
    maps = {f"M{i}": np.random.default_rng(i).normal(size=(8, 8)) for i in range(6)}
    fig = charts.attribution_figure(image, maps, signed=True)
    heat = [t for t in fig.data if t.type == "heatmap"]
    assert len(heat) == 6 and all(t.opacity == 1.0 for t in heat)
    assert [t.type for t in fig.data].count("image") == 1  # no colour picture under a map
    widths = [fig.layout[f"xaxis{i}"].domain[1] - fig.layout[f"xaxis{i}"].domain[0] for i in range(1, 8)]
    assert min(widths) > 0.25  # three a row: each over 200 px of a plot about 870 px wide
    assert fig.layout.yaxis2.domain != fig.layout.yaxis6.domain  # two rows
    bars = [(t.colorbar.x, t.colorbar.y) for t in heat]
    assert len(set(bars)) == 6  # one bar beside each map
    grey = charts.attribution_figure(image, maps, signed=True, over_grey=True)
    backdrops = [t for t in grey.data if t.type == "image"][1:]
    assert len(backdrops) == 6 and all(np.ptp(np.asarray(t.z), axis=-1).max() == 0 for t in backdrops)
    assert all(t.opacity == 0.6 for t in grey.data if t.type == "heatmap")


def test_gallery_titles_are_green_when_right_and_red_when_wrong():
    fig = charts.gallery_figure([np.zeros((4, 4, 3))] * 2, ["cat 90%", "dog 60%"], [None, "cat"], [5, 9], columns=2)
    colours = [a.font.color for a in fig.layout.annotations]
    assert colours == ["#2B8A3E", "#C92A2A"]
    assert [a.text for a in fig.layout.annotations] == ["cat 90%", "dog 60%<br>true cat"]


def test_gallery_titles_fit_above_their_picture_and_each_image_is_clickable():
    long = "German shepherd, German police dog, alsatian"
    fig = charts.gallery_figure([np.zeros((32, 32, 3))] * 7, [f"{long} 99%"] * 7, [long] * 7, list(range(10, 17)))
    for note in fig.layout.annotations:
        lines = note.text.split("<br>")
        assert len(lines) == 2 and all(len(line) <= 18 for line in lines) and lines[0].endswith("…")
        assert note.yanchor == "bottom"  # above its picture, never over the next row's
    clickable = [t for t in fig.data if t.type == "scatter"]
    assert [t.customdata[0] for t in clickable] == list(range(10, 17))
    assert all(long in t.hovertemplate for t in clickable)  # the whole text is in the hover
    assert fig.layout.clickmode == "event+select"


def test_confusion_figure_shows_counts_or_row_shares_and_each_cell_is_clickable():
    confusion = np.array([[8, 2, 0], [1, 1, 0], [0, 0, 0]])
    fig = charts.confusion_figure(confusion, ["a", "b", "c"])
    heat = fig.data[0]
    assert heat.texttemplate == "%{text}" and [list(r) for r in heat.text][0] == ["8", "2", "0"]
    assert np.asarray(heat.z).tolist() == confusion.tolist()
    share = charts.confusion_figure(confusion, ["a", "b", "c"], normalise=True).data[0]
    z = np.asarray(share.z)
    assert z[0].tolist() == [0.8, 0.2, 0.0] and z[1].tolist() == [0.5, 0.5, 0.0] and z[2].sum() == 0
    assert [list(r) for r in share.text][0] == ["80%", "20%", "0%"] and (share.zmin, share.zmax) == (0, 1)
    cells = fig.data[1]
    assert cells.type == "scatter" and len(cells.x) == 9
    true, predicted, count, share = np.asarray(cells.customdata)[1]  # the cell the second marker covers
    assert (cells.y[1], cells.x[1], true, predicted, count, share) == ("a", "b", 0, 1, 2, 0.2)
    many = charts.confusion_figure(np.eye(30), [str(i) for i in range(30)])
    assert many.data[0].texttemplate is None  # 900 numbers would not fit: the hover carries them


def test_gallery_indices_filter_by_true_and_predicted_class_and_verdict():
    from regnet.dashboard.inspect_sections import gallery_indices

    targets, preds = np.array([0, 0, 1, 1, 2, 0]), np.array([0, 1, 1, 0, 2, 1])
    assert gallery_indices(targets, preds, 0, 1, "all", 10) == [1, 5]
    assert gallery_indices(targets, preds, None, None, "wrong", 10) == [1, 3, 5]
    assert gallery_indices(targets, preds, None, 1, "right", 10) == [2]
    assert gallery_indices(targets, preds, None, None, "all", 2) == [0, 1]


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


def whole_split(at: AppTest, run_key: str) -> AppTest:
    """Open the Whole split tab (only the open tab is drawn) and turn its analyses on."""
    at.session_state["inspect_tab"] = "Whole split"
    at.run()
    at.toggle(key=f"inspect_split_{run_key}").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_inspect_page_on_a_regnet_checkpoint(inspect_root):
    at = _open_inspect("shipped/regnet")
    assert not at.error
    titles = [s.value for s in at.subheader]
    assert "Inside the regulator, step by step" in titles and "Gates" in titles
    figures = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert sum(1 for f in figures for t in f["data"] if t["type"] == "heatmap") >= 9
    whole_split(at, "shipped/regnet")
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
    whole_split(at, "shipped/resnet")
    assert not at.exception, [e.value for e in at.exception]
    assert any("no regulator to ablate" in i.value for i in at.info)


def test_the_inspect_page_never_downloads_a_missing_data_set(tmp_path):
    from regnet.dashboard import inspect_cache
    from regnet.data import DataError

    write_shipped_run(tmp_path, "cifar", "resnet20")
    config_path = tmp_path / "cifar" / "config.yaml"
    config_path.write_text(config_path.read_text().replace("name: shapes", "name: cifar10"))
    empty = tmp_path / "no-data"
    empty.mkdir()
    with pytest.raises(DataError):
        inspect_cache.images_of(str(tmp_path / "cifar"), str(empty))
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
    for number, (name, data) in enumerate(_uploads().items()):
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
        if number == 0:  # an upload's attributions once (the default two); the other kinds need their maps only
            attributions = json.loads(at.get("plotly_chart")[-1].proto.spec)
            assert sum(t["type"] == "heatmap" for t in attributions["data"]) == 2
            at.multiselect(key="inspect_methods").set_value([]).run()


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
    whole_split(at, "shipped/regnet")  # the Whole split tab is not blocked
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
    whole_split(at, "shipped/cifar10-regnet20")
    assert any(c.value.startswith("On a shipped sample of 200 validation images; computed once") for c in at.caption)
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
    from regnet.dashboard import inspect_cache

    calls = []
    real = inspect_cache.ri.attribute
    monkeypatch.setattr(inspect_cache.ri, "attribute", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
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
    at.radio(key="inspect_sign").set_value("signed").run()
    at.selectbox(key="inspect_baseline").set_value("noise").run()
    at.slider(key="inspect_occ_window").set_value(8).run()
    at.slider(key="inspect_occ_stride").set_value(8).run()
    # Occlusion last: computed once, at these settings (its default 4-pixel window at stride 2 is 225 passes)
    at.multiselect(key="inspect_methods").set_value(["integrated_gradients", "occlusion"]).run()
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
    whole_split(at, "shipped/regnet")
    at.selectbox(key="inspect_gallery_verdict").set_value("wrong").run()
    gallery = json.loads(at.get("plotly_chart")[-4].proto.spec)  # gallery, read-out, redundancy, ablation
    titles = [a["text"] for a in gallery["layout"]["annotations"]]
    assert titles and all("<br>true " in t for t in titles)


def test_the_default_run_is_the_chosen_one_else_the_best_shipped_embedded_model():
    from regnet.dashboard.inspect_sections import default_run
    from regnet.dashboard.run_listing import RunInfo
    from regnet.runs import Best

    def run(key, source, dataset, best):
        return RunInfo(key=key, path=Path(key), source=source, state="finished", dataset=dataset,
                       best=Best("val_top1", best, None))

    runs = [run("new-cifar", "run", "cifar10", 0.9), run("shipped/a", "shipped", "shapes", 0.5),
            run("shipped/b", "shipped", "shapes", 0.98), run("mine", "run", "shapes", 0.99)]
    assert default_run(runs, ["mine"]) == "mine"
    assert default_run(runs, []) == "shipped/b"
    assert default_run(runs[:1], []) == "new-cifar"


class _Selections(dict):
    """Session state as the page's click handlers see it: chart selections by key."""


def test_a_confusion_cell_click_filters_the_gallery_and_a_gallery_click_opens_the_image(monkeypatch):
    from regnet.dashboard import inspect_sections as sections

    state = _Selections(inspect_pick_confusion={"selection": {"points": [{"customdata": {"0": 2, "1": 0, "2": 5}}]}},
                        inspect_pick_gallery={"selection": {"points": [{"customdata": 37}]}},
                        inspect_gallery_verdict="wrong")
    monkeypatch.setattr(sections.st, "session_state", state)
    sections._show_cell(["circle", "square", "triangle"])
    assert (state["inspect_gallery_class"], state["inspect_gallery_pred"], state["inspect_gallery_verdict"]) == \
        ("triangle", "circle", "all")
    sections._open_image("shipped/regnet")
    assert state["inspect_tab"] == "One image" and state["inspect_source_shipped/regnet"] == "Validation image"
    assert (state["inspect_class"], state["inspect_index"], state["inspect_opened"]) == ("any", 37, True)
    state["inspect_pick_gallery"] = {"selection": {"points": []}}  # a click that cleared the selection
    state["inspect_index"] = 3
    sections._open_image("shipped/regnet")
    assert state["inspect_index"] == 3
    state["inspect_pick_confusion"] = {"selection": {"points": [{"customdata": [1, 2, 5, 0.1]}]}}  # as a list
    sections._show_cell(["circle", "square", "triangle"])
    assert (state["inspect_gallery_class"], state["inspect_gallery_pred"]) == ("square", "triangle")


def test_the_gallery_follows_a_confusion_cell_and_opens_an_image_in_the_one_image_tab(inspect_root):
    at = whole_split(_open_inspect("shipped/regnet"), "shipped/regnet")
    assert any("Click a cell" in c.value for c in at.caption)
    at.toggle(key="inspect_confusion_norm").set_value(True).run()
    confusion = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert "normalised by row" in confusion["layout"]["title"]["text"]
    rows = _array(confusion["data"][0]["z"])
    assert np.allclose(rows.sum(1)[rows.sum(1) > 0], 1.0)
    # What a click on the cell (true circle, predicted circle) sets, as _show_cell does:
    at.session_state["inspect_gallery_class"] = "circle"
    at.session_state["inspect_gallery_pred"] = "circle"
    at.run()
    gallery = json.loads(at.get("plotly_chart")[1].proto.spec)
    titles = [a["text"] for a in gallery["layout"]["annotations"]]
    indices = [t["customdata"][0] for t in gallery["data"] if t["type"] == "scatter"]
    assert titles and all(t.startswith("circle ") and "<br>" not in t for t in titles)
    # What a click on the third image sets, as _open_image does; the page then opens the One image tab.
    for key, value in {"inspect_tab": "One image", "inspect_source_shipped/regnet": "Validation image",
                       "inspect_class": "any", "inspect_index": indices[2]}.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.number_input(key="inspect_index").value == indices[2]
    assert "Inside the regulator, step by step" in [s.value for s in at.subheader]


def test_an_upload_is_kept_while_the_other_tab_is_open(inspect_root):
    at = _open_inspect("shipped/regnet")
    at.radio(key="inspect_source_shipped/regnet").set_value("Upload").run()
    at.file_uploader(key="inspect_upload").set_value(("grey.png", _uploads()["grey.png"], "image/png")).run()
    first = at.dataframe[0].value["probability"].tolist()
    at.session_state["inspect_tab"] = "Whole split"
    at.run()
    at.session_state["inspect_tab"] = "One image"
    at.run()
    assert not at.exception and any("`grey.png`, uploaded earlier" in c.value for c in at.caption)
    assert at.dataframe[0].value["probability"].tolist() == first


def test_choices_in_one_tab_are_kept_while_the_other_is_open(inspect_root):
    at = _open_inspect("shipped/regnet")
    at.number_input(key="inspect_index").set_value(5).run()
    at.multiselect(key="inspect_methods").set_value(["saliency"]).run()
    whole_split(at, "shipped/regnet")
    assert "Inside the regulator, step by step" not in [s.value for s in at.subheader]  # the hidden tab: nothing
    at.session_state["inspect_tab"] = "One image"
    at.run()
    assert at.number_input(key="inspect_index").value == 5
    assert at.multiselect(key="inspect_methods").value == ["saliency"]
    at.session_state["inspect_tab"] = "Whole split"
    at.run()
    assert at.toggle(key="inspect_split_shipped/regnet").value  # the analysis stays on


def test_attribution_scoring_says_how_long_it_takes_before_it_starts(inspect_root, monkeypatch):
    from regnet.dashboard import inspect_cache as lab

    monkeypatch.setattr(lab, "QUALITY_IMAGES", 3)
    scored = []
    real = lab.ri.attribution_quality

    def counted_and_cheap(model, xs, masks, ys, methods, settings, **kwargs):
        """The flow is under test, not the scores: each method at its cheapest settings."""
        scored.append(len(xs))
        cheap = dataclasses.replace(settings, steps=8, samples=4, window=8, stride=8)
        return real(model, xs, masks, ys, methods, cheap, **kwargs)

    monkeypatch.setattr(lab.ri, "attribution_quality", counted_and_cheap)
    at = whole_split(_open_inspect("shipped/regnet"), "shipped/regnet")
    at.toggle(key="inspect_quality_shipped/regnet").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    estimate = [i.value for i in at.info if "takes up to about" in i.value]
    assert len(estimate) == 1 and "Scoring 3 images" in estimate[0] and "the first image took" in estimate[0]
    assert scored == [1]  # only the timed first image so far
    at.button(key="inspect_do_score_shipped/regnet").click().run()
    assert not at.exception, [e.value for e in at.exception]
    methods = at.dataframe[-1].value["method"].tolist()
    assert scored == [1, 3] and "random map" in methods and len(methods) == len(lab.ri.METHODS) + 1
    at.run()  # scored once: the table now comes from the cache, with no estimate and no button
    assert scored == [1, 3] and not [i for i in at.info if "takes up to about" in i.value]
    assert at.dataframe[-1].value["method"].tolist() == methods
