"""Live's regulator section (chart builders and AppTest) and Inspect's epoch selector."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from regnet.dashboard.inspect_charts import epochs_animation_figure
from regnet.dashboard.live_regulator import gate_strip_figure, reliance_figure, saturation_figure
from regnet.models import build_model
from regnet.train.checkpoint import save_checkpoint
from test_dashboard_app import line_charts, open_page
from test_dashboard_fixtures import write_run, write_shipped_run


def regulator_rows(epochs: int, gates=("i", "f", "o", "g")) -> list[dict]:
    """Lines as the engine writes them: 3 stages x 3 steps, the forget gate opening epoch by epoch."""
    rows = []
    for epoch in range(1, epochs + 1):
        blocks = [{"stage": s, "step": t,
                   "gates": {g: {"mean": min(0.1 * epoch + 0.01 * t, 1.0), "std": 0.1, "below_05": 0.3 / epoch,
                                 "above_95": 0.05 * epoch} for g in gates},
                   "h": {"mean_abs": 0.02, "std": 0.03}, "c": {"mean_abs": 0.1, "std": 0.2}}
                  for s in (1, 2, 3) for t in (1, 2, 3)]
        rows.append({"epoch": epoch, "step": 4 * epoch, "time": 1.7e9 + epoch, "probe": {"images": 256, "digest": "x"},
                     "top1": 0.5 + 0.1 * epoch, "top1_h_zeroed": 0.1, "reliance": 0.4 + 0.1 * epoch, "blocks": blocks,
                     "seconds": 0.5, "cpu_seconds": 0.5})
    return rows


def write_regulator(run_dir: Path, rows: list[dict]) -> None:
    (run_dir / "artifacts").mkdir(exist_ok=True)
    (run_dir / "artifacts" / "regulator.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_gate_strip_has_the_blocks_down_and_the_epochs_across():
    fig = gate_strip_figure(regulator_rows(4), "f")
    heat = fig.data[0]
    assert list(heat.y) == [f"S{s} t={t}" for s in (1, 2, 3) for t in (1, 2, 3)]
    assert list(heat.x) == [1, 2, 3, 4]
    assert len(heat.z) == 9 and all(len(row) == 4 for row in heat.z)
    assert heat.z[1][2] == pytest.approx(0.32)  # S1 t=2 at epoch 3
    assert heat.zmin is None and heat.zmax is None  # the values' own range: gates near 0.5 still show


def test_saturation_and_reliance_by_epoch():
    rows = regulator_rows(3)
    names = [trace.name for trace in saturation_figure(rows).data]
    assert names == ["forget gate f < 0.05", "forget gate f > 0.95", "input gate i < 0.05", "input gate i > 0.95"]
    assert list(saturation_figure(rows).data[1].y) == pytest.approx([0.05, 0.10, 0.15])
    gru = saturation_figure(regulator_rows(2, gates=("z", "r", "candidate")))
    assert [t.name for t in gru.data][0] == "update gate z < 0.05"
    reliance = reliance_figure(rows)
    assert list(reliance.data[2].y) == pytest.approx([0.5, 0.6, 0.7])


@pytest.fixture
def live_root(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    monkeypatch.setenv("REGNET_RUNS_ROOT", str(root))
    monkeypatch.setenv("REGNET_CHECKPOINTS_ROOT", str(tmp_path / "checkpoints"))
    run_dir = write_run(root, "r-regnet", epochs_done=3, epochs=5)
    write_regulator(run_dir, regulator_rows(3))
    write_run(root, "r-resnet", model="resnet20", epochs_done=2)
    return root


def _strip(at: AppTest) -> dict:
    figures = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    strips = [f for f in figures if f["layout"]["title"]["text"].endswith("per block and epoch")]
    assert len(strips) == 1
    return strips[0]["data"][0]


def test_live_regulator_section_grows_with_the_run_and_follows_the_gate(live_root):
    at = open_page("views/live.py", ["r-regnet"])
    assert "Regulator" in [s.value for s in at.subheader]
    assert _strip(at)["x"] == [1, 2, 3] and len(_strip(at)["y"]) == 9
    write_regulator(live_root / "r-regnet", regulator_rows(4))  # the engine's epoch-4 line
    at.run()
    assert _strip(at)["x"] == [1, 2, 3, 4]
    at.selectbox(key="live_regulator_gate").set_value("i").run()
    assert "input gate i" in json.dumps(_strip(at)["hovertemplate"])


def test_live_regulator_section_says_a_resnet_has_none(live_root):
    at = open_page("views/live.py", ["r-resnet"])
    assert any("no regulator" in c.value for c in at.caption)
    assert not at.get("plotly_chart") and len(line_charts(at)) == 6  # the metric panels alone


def test_animation_has_one_frame_per_epoch_on_one_scale():
    grid = lambda value: [{"stage": 0, "step": t, "maps": [("mean", torch.full((4, 4), value))]} for t in range(3)]
    fig = epochs_animation_figure({1: grid(0.1), 3: grid(0.5), 5: grid(0.9)}, "forget gate f")
    assert [f.name for f in fig.frames] == ["1", "3", "5"]
    assert len(fig.frames[0].data) == len(fig.data) == 3
    assert fig.data[0].zmin == pytest.approx(0.1) and fig.data[0].zmax == pytest.approx(0.9)
    assert [s.label for s in fig.layout.sliders[0].steps] == ["1", "3", "5"]


@pytest.fixture
def snapshot_root(tmp_path, monkeypatch):
    """A shipped-style regnet20 with two epoch snapshots whose weights differ from best.pt's."""
    write_shipped_run(tmp_path / "checkpoints", "snap", "regnet20")
    folder = tmp_path / "checkpoints" / "snap"
    best = torch.load(folder / "checkpoints" / "best.pt", weights_only=True)
    for epoch in (1, 2):
        torch.manual_seed(epoch)
        weights = build_model("regnet20", num_classes=10).state_dict()
        save_checkpoint({**best, "model": weights, "epoch": epoch}, folder / "checkpoints" / f"epoch-{epoch:03d}.pt")
    monkeypatch.setenv("REGNET_RUNS_ROOT", str(tmp_path / "runs"))
    monkeypatch.setenv("REGNET_CHECKPOINTS_ROOT", str(tmp_path / "checkpoints"))
    return folder



def test_inspect_epoch_selector_switches_every_view_to_that_epochs_weights(snapshot_root):
    at = open_page("views/inspect.py", timeout=240)
    slider = at.select_slider(key="inspect_epoch_shipped/snap")
    assert slider.options == ["epoch 1", "epoch 2", "best.pt"] and slider.value == "best"
    assert any("checkpoint `best.pt`" in c.value for c in at.caption)
    first = json.dumps([json.loads(c.proto.spec)["data"] for c in at.get("plotly_chart")])
    slider.set_value(1).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("checkpoint `epoch-001.pt`" in c.value for c in at.caption)
    assert json.dumps([json.loads(c.proto.spec)["data"] for c in at.get("plotly_chart")]) != first
    at.toggle(key="inspect_play_epochs").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    animated = [json.loads(c.proto.spec) for c in at.get("plotly_chart") if json.loads(c.proto.spec).get("frames")]
    assert len(animated) == 1 and [f["name"] for f in animated[0]["frames"]] == ["1", "2"]


def test_the_shipped_shapes_run_carries_its_regulator_history_for_every_snapshot():
    """The README's walkthrough of Live on shapes-regnet20 needs artifacts/regulator.jsonl in git."""
    from regnet.runs import read_regulator, snapshot_epochs

    shipped = Path(__file__).resolve().parents[1] / "checkpoints" / "shapes-regnet20"
    rows = read_regulator(shipped)
    assert [row["epoch"] for row in rows] == list(snapshot_epochs(shipped)) == [1, 2, 3, 4, 5]
    assert rows[0]["reliance"] < 0.1 and rows[2]["reliance"] > 0.5  # the abrupt reliance the README describes
    assert {"i", "f", "o", "g"} <= set(rows[-1]["blocks"][0]["gates"])


def test_moving_the_epoch_computes_each_epochs_attributions_once_and_never_the_hidden_tab(snapshot_root, monkeypatch):
    from regnet.dashboard import inspect_cache as lab

    attributed, analysed = [], []
    attribute, analyse = lab.ri.attribute, lab.ri.analyze_split
    monkeypatch.setattr(lab.ri, "attribute", lambda *a, **k: attributed.append(a[2]) or attribute(*a, **k))
    monkeypatch.setattr(lab.ri, "analyze_split", lambda *a, **k: analysed.append(1) or analyse(*a, **k))
    at = open_page("views/inspect.py", timeout=240)
    at.session_state["inspect_tab"] = "Whole split"
    at.run()
    at.toggle(key="inspect_split_shipped/snap").set_value(True).run()
    at.session_state["inspect_tab"] = "One image"
    at.run()
    assert len(analysed) == 1 and len(attributed) == 2  # best.pt: the analysis and two methods' maps
    slider = at.select_slider(key="inspect_epoch_shipped/snap")
    slider.set_value(1).run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(attributed) == 4 and len(analysed) == 1  # epoch 1's maps; the hidden tab's analysis waits
    at.select_slider(key="inspect_epoch_shipped/snap").set_value("best").run()
    at.select_slider(key="inspect_epoch_shipped/snap").set_value(1).run()
    assert len(attributed) == 4  # both epochs' maps come back from the store
