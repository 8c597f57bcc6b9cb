"""The regulator's channel explorer: the index agrees with ``regnet.record``, the pattern match finds a
constructed pattern, class rankings follow the values, a channel followed across epoch snapshots agrees
with each snapshot computed on its own, and bad choices are one sentence (exit 2)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import regnet
from regnet.data import load_splits
from regnet.data.device import evaluation_batches
from regnet.inspect import channels as ch
from regnet.models import build_model
from regnet.train import explore
from regnet.train.evaluate import load_run_model, load_run_split
from regnet.train.loop import train
from tests.explore_fixtures import folder_run_without_test, tiny_run
from tests.test_cli import assert_one_sentence, run_cli
from tests.test_train_run import tiny_config

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    model = build_model("regnet20", num_classes=10).eval()
    splits = load_splits("shapes", size=160, augment=False)
    return model, splits


def _direct(model, splits, stage: int, step: int, state: str) -> torch.Tensor:
    """(N, C) spatial means of one state computed straight from ``regnet.record``."""
    return _direct_on(model, splits.val, splits.info, stage, step, state)


def _direct_on(model, dataset, info, stage: int, step: int, state: str) -> torch.Tensor:
    rows = []
    for x, _ in evaluation_batches(dataset, info, 7):
        with torch.no_grad(), regnet.record(model) as trace:
            model(x)
        step_record = next(r for r in trace if (r.stage, r.step) == (stage - 1, step - 1))
        maps = {"hidden": step_record.hidden, "cell": step_record.cell, **step_record.gates}[state]
        rows.append(maps.mean((2, 3)))
    return torch.cat(rows)


@pytest.mark.parametrize("stage, step, state", [(1, 2, "hidden"), (3, 3, "f"), (2, 1, "cell")])
def test_the_index_ranks_images_as_a_direct_computation_with_record(small, stage, step, state):
    model, splits = small
    index = ch.build_index(model, evaluation_batches(splits.val, splits.info, 16))
    key = ch.state_key(model, stage, step, state)
    direct = _direct(model, splits, stage, step, state)
    assert torch.allclose(ch.channel_values(index, key), direct, atol=2e-4)
    assert torch.equal(index["labels"], torch.tensor(splits.val.targets))
    channel, k = 3, 5
    top = ch.top_images(index, key, channel, k)
    values = direct[:, channel]
    assert [r["label"] for r in top] == [splits.val.targets[r["index"]] for r in top]
    shown = values[[r["index"] for r in top]]
    assert (shown[:-1] >= shown[1:] - 2e-4).all()  # descending by the direct values
    assert shown.min() >= values.topk(k).values.min() - 2e-4  # and none better was left out
    bottom = ch.top_images(index, key, channel, k, bottom=True)
    assert values[[r["index"] for r in bottom]].max() <= values.topk(k, largest=False).values.max() + 2e-4


def test_jaccard_and_on_channels():
    a = torch.tensor([True, True, False, False])
    sets = torch.tensor([[True, False, True, False], [True, True, False, False], [False] * 4])
    assert ch.jaccard(a, sets).tolist() == pytest.approx([1 / 3, 1.0, 0.0])
    assert ch.jaccard(torch.zeros(4, dtype=torch.bool), sets[2:]).tolist() == [1.0]
    maps = torch.zeros(4, 6, 6)
    maps[1, :2, :2] = 1.0
    maps[2, :2, :2] = 0.2
    assert ch.on_channels(maps, (0, 0, 2, 2), 0.5).tolist() == [False, True, False, False]


def test_best_windows_finds_a_pattern_where_it_recurs():
    maps = torch.zeros(3, 4, 8, 8)
    maps[0, [0, 1], 0:2, 0:2] = 1.0  # the query: channels 0 and 1 on at the top left
    maps[1, [2, 3], 4:6, 4:6] = 1.0  # another pattern
    maps[2, [0, 1], 5:7, 3:5] = 1.0  # the query's pattern again, elsewhere
    maps[2, 2, 0:2, 0:2] = 1.0  # and a part match (one extra channel)
    query = ch.on_channels(maps[0], (0, 0, 2, 2), 0.75)  # a window half over the pattern is not on
    scores, tops, lefts = ch.best_windows(maps, query, (2, 2), 0.75)
    assert scores.tolist() == pytest.approx([1.0, 0.0, 1.0])
    assert (int(tops[2]), int(lefts[2])) == (5, 3) and (int(tops[0]), int(lefts[0])) == (0, 0)


def test_pattern_match_returns_the_query_image_at_its_region(small):
    model, splits = small
    index = ch.build_index(model, evaluation_batches(splits.val, splits.info, 16))
    key = ch.state_key(model, 2, 2, "hidden")
    images = lambda idx: torch.stack([splits.val[i][0] for i in idx])  # noqa: E731
    query_maps = ch.state_maps(model, images([4]), key)[0]
    threshold = float(query_maps[:, 2:6, 3:7].mean((1, 2)).median())
    result = ch.pattern_match(model, index, key, images, query_maps, (2, 3, 6, 7), threshold,
                              top=len(splits.val), candidates=len(splits.val))
    query = ch.on_channels(query_maps, (2, 3, 6, 7), threshold)
    assert result["channels_on"] == query.nonzero().flatten().tolist() and result["channels_on"]
    by_image = {m["index"]: m for m in result["matches"]}
    assert len(by_image) == len(splits.val) and by_image[4]["jaccard"] == 1.0
    scores = [m["jaccard"] for m in result["matches"]]
    assert scores == sorted(scores, reverse=True)
    for m in result["matches"][:3]:  # the reported window has the reported score
        maps = ch.state_maps(model, images([m["index"]]), key)[0]
        found = ch.on_channels(maps, (m["top"], m["left"], m["top"] + 4, m["left"] + 4), threshold)
        assert float(ch.jaccard(query, found[None])[0]) == pytest.approx(m["jaccard"])


def test_class_rankings_on_a_constructed_index():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    values = torch.tensor([[0.1, 0.5, 0.3], [0.1, 0.5, 0.3], [0.9, 0.5, 0.2], [0.8, 0.5, 0.2], [0.1, 0.5, 0.1],
                           [0.1, 0.5, 0.1]])
    index = {"labels": labels, "values": {"1.1.hidden": values.half()}, "centers": {"1.1.hidden": torch.zeros(3)}}
    means = ch.class_means(index, "1.1.hidden", 3)
    assert means[:, 0].tolist() == pytest.approx([0.1, 0.85, 0.1], abs=1e-3)
    sel = ch.selectivity(means)
    assert int(sel["preferred"][0]) == 1 and float(sel["index"][1]) == pytest.approx(0.0, abs=1e-3)
    assert ch.class_channels(index, "1.1.hidden", 1, 3, k=1)[0]["channel"] == 0
    assert ch.class_channels(index, "1.1.hidden", 0, 3, k=1)[0]["channel"] == 2
    steps = ch.across_steps(index, 1, "hidden", 0, 3)
    assert list(steps) == [1] and steps[1] == pytest.approx([0.1, 0.85, 0.1], abs=1e-3)


def test_channels_command_prints_and_writes_the_top_images(tmp_path, capsys):
    run = tiny_run(tmp_path)
    out_json = tmp_path / "top.json"
    code, out, err = run_cli(["channels", str(run), "--stage", "3", "--step", "2", "--state", "hidden",
                              "--channel", "5", "--top", "4", "--json", str(out_json)], capsys)
    assert code == 0, err
    images = json.loads(out_json.read_text())["images"]
    assert len(images) == 4 and [r["value"] for r in images] == sorted((r["value"] for r in images), reverse=True)
    assert all({"index", "label", "value", "class"} <= set(r) for r in images)
    assert str(images[0]["index"]) in out
    assert any(p.name.startswith("channel-index-") for p in (run / "artifacts").iterdir())


@pytest.mark.parametrize("argv, words", [
    (["--stage", "4", "--step", "1", "--state", "hidden", "--channel", "0"], ["Stage 4", "1, 2 or 3"]),
    (["--stage", "1", "--step", "4", "--state", "hidden", "--channel", "0"], ["no step 4", "1, 2 or 3"]),
    (["--stage", "1", "--step", "1", "--state", "z", "--channel", "0"], ["no state 'z'", "hidden, cell, i, f, o or g"]),
    (["--stage", "1", "--step", "1", "--state", "hidden", "--channel", "16"], ["channels 0-15", "16"]),
])
def test_bad_channel_choices_are_one_sentence(argv, words, tmp_path, capsys):
    code, _, err = run_cli(["channels", str(tiny_run(tmp_path, size=100)), *argv], capsys)
    assert_one_sentence(code, err, *words)


def test_a_resnet_has_no_channels_and_a_missing_split_is_named(tmp_path, capsys):
    resnet = tiny_run(tmp_path, "cifar10-resnet20", size=100)
    code, _, err = run_cli(["channels", str(resnet), "--stage", "1", "--step", "1", "--state", "hidden",
                            "--channel", "0"], capsys)
    assert_one_sentence(code, err, "no regulator", "RegNet")
    code, _, err = run_cli(["channels", str(folder_run_without_test(tmp_path)), "--split", "test", "--stage", "1",
                            "--step", "1", "--state", "hidden", "--channel", "0"], capsys)
    assert_one_sentence(code, err, "no official test split")


def test_across_epochs_on_constructed_indexes():
    labels = torch.tensor([0, 0, 1, 1])
    def index(values):  # noqa: E306 (one channel; its values per image)
        return {"labels": labels, "values": {"1.1.hidden": torch.tensor(values)[:, None].half()},
                "centers": {"1.1.hidden": torch.zeros(1)}}
    indexes = {3: index([0.0, 0.0, 1.0, 0.5]), 1: index([1.0, 0.5, 0.0, 0.0]), 2: index([1.0, 0.0, 0.5, 0.0])}
    rows = ch.across_epochs(indexes, "1.1.hidden", 0, 2, k=2)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert [r["top"] for r in rows] == [[0, 1], [0, 2], [2, 3]]
    assert [r["overlap"] for r in rows] == [None, 0.5, 0.5]
    assert [r["preferred"] for r in rows] == [0, 0, 1]
    assert rows[0]["class_means"] == pytest.approx([0.75, 0.0]) and rows[0]["mean"] == pytest.approx(0.375)
    assert rows[0]["selectivity"] == pytest.approx(1.0) and rows[1]["selectivity"] == pytest.approx(0.25 / 0.75)


@pytest.fixture(scope="module")
def snapshot_run(tmp_path_factory):
    """regnet20 trained 3 epochs on 120 shapes images (110 train, 10 val: one per class), a snapshot each epoch."""
    torch.manual_seed(0)
    config = tiny_config(tmp_path_factory.mktemp("runs"), "snapshots", "model.name=regnet20", "data.size=120",
                         "train.batch_size=54", "train.epochs=3", "train.keep_every=1", "train.log_every=2")
    return train(config)


def _by_hand(model, dataset, info, stage, step, state, channel, k):
    """Mean, class means, selectivity and top k of one channel of one checkpoint, from ``regnet.record``."""
    values = _direct_on(model, dataset, info, stage, step, state)[:, channel]
    labels = torch.tensor(dataset.targets)
    means = torch.stack([values[labels == c].mean() for c in range(info.num_classes)])
    best = means.max()
    rest = (means.sum() - best) / (len(means) - 1)
    return {"mean": float(values.mean()), "class_means": means, "preferred": int(means.argmax()),
            "selectivity": float((best - rest) / (best.abs() + rest.abs())), "values": values,
            "kth": float(values.topk(k).values[-1])}


def test_a_channel_across_epochs_equals_each_snapshot_on_its_own(snapshot_run):
    dataset, info = load_run_split(snapshot_run, "val")
    assert sorted(set(dataset.targets)) == list(range(10))
    assert explore.snapshots_to_index(snapshot_run, dataset, info, "val") == [1, 2, 3]
    seen = []
    indexes = explore.snapshot_indexes(snapshot_run, dataset, info, "val",
                                       progress=lambda what, done, total: seen.append((what, done, total)))
    assert seen[-1][1:] == (3 * len(dataset),) * 2 and "3 snapshots" in seen[-1][0]
    assert explore.snapshots_to_index(snapshot_run, dataset, info, "val") == []  # one cached index per snapshot
    assert len([p for p in (snapshot_run / "artifacts").iterdir() if p.name.startswith("channel-index-")]) == 3
    stage, step, state, channel, k = 2, 3, "o", 7, 4
    model, _ = load_run_model(snapshot_run, "epoch-003")
    rows = ch.across_epochs(indexes, ch.state_key(model, stage, step, state), channel, 10, k)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for r in rows:
        direct = _by_hand(load_run_model(snapshot_run, f"epoch-{r['epoch']:03d}")[0], dataset, info, stage, step,
                          state, channel, k)
        assert r["mean"] == pytest.approx(direct["mean"], abs=2e-4)
        assert r["class_means"] == pytest.approx(direct["class_means"].tolist(), abs=2e-4)
        assert r["selectivity"] == pytest.approx(direct["selectivity"], abs=2e-3)
        assert direct["class_means"][r["preferred"]] >= direct["class_means"].max() - 2e-4
        assert len(r["top"]) == k and (direct["values"][r["top"]] >= direct["kth"] - 2e-4).all()
    assert [r["overlap"] for r in rows[1:]] == [len(set(a["top"]) & set(b["top"])) / k for a, b in zip(rows, rows[1:])]
    assert rows[0]["selectivity"] != rows[-1]["selectivity"]  # training moved the channel


def test_channels_epochs_command_prints_and_writes_one_line_per_epoch(snapshot_run, tmp_path, capsys):
    out_json = tmp_path / "epochs.json"
    code, out, err = run_cli(["channels", str(snapshot_run), "--stage", "2", "--step", "3", "--state", "o",
                              "--channel", "7", "--top", "4", "--epochs", "--json", str(out_json)], capsys)
    assert code == 0, err
    written = json.loads(out_json.read_text())
    assert [r["epoch"] for r in written["epochs"]] == [1, 2, 3] and written["channel"] == 7
    dataset, info = load_run_split(snapshot_run, "val")
    indexes = explore.snapshot_indexes(snapshot_run, dataset, info, "val")
    expected = ch.across_epochs(indexes, "2.3.o", 7, 10, 4)
    assert [{k: v for k, v in r.items() if k != "preferred_class"} for r in written["epochs"]] == expected
    lines = out.splitlines()
    for r in expected:
        line = next(x for x in lines if x.split()[:1] == [str(r["epoch"])])
        assert f"{r['mean']:.4f}" in line and info.class_names[r["preferred"]] in line
    assert "3 epoch snapshots" in err


def test_channels_epochs_without_snapshots_is_one_sentence(tmp_path, capsys):
    code, _, err = run_cli(["channels", str(tiny_run(tmp_path, size=100)), "--stage", "1", "--step", "1",
                            "--state", "hidden", "--channel", "0", "--epochs"], capsys)
    assert_one_sentence(code, err, "kept no epoch snapshots", "train.keep_every")


def test_epochs_figure_draws_each_class_the_mean_selectivity_and_kept_share():
    from regnet.dashboard.channel_explorer import epochs_figure

    rows = [{"epoch": 1, "mean": 0.2, "class_means": [0.1, 0.3], "selectivity": 0.5, "overlap": None},
            {"epoch": 3, "mean": 0.4, "class_means": [0.6, 0.2], "selectivity": 0.25, "overlap": 0.75}]
    fig = epochs_figure(rows, ["p", "q"], "t", marked=3)
    assert [t.name for t in fig.data] == ["p", "q", "all images", "selectivity", "top images kept"]
    assert [list(t.y) for t in fig.data] == [[0.1, 0.6], [0.3, 0.2], [0.2, 0.4], [0.5, 0.25], [None, 0.75]]
    assert all(list(t.x) == [1, 3] for t in fig.data)
    assert [t.yaxis for t in fig.data] == ["y", "y", "y", "y2", "y2"]
    assert [(s.x0, s.xref) for s in fig.layout.shapes] == [(3, "x"), (3, "x2")]  # on both panels


def test_the_page_counts_indexes_and_draws_the_channel_across_epochs(snapshot_run, tmp_path, monkeypatch):
    """Inspect's Channels tab on a copy of the snapshot run (new paths: nothing indexed yet)."""
    from streamlit.testing.v1 import AppTest

    run = shutil.copytree(snapshot_run, tmp_path / "runs" / "copied", ignore=shutil.ignore_patterns("artifacts"))
    (tmp_path / "shipped").mkdir()
    monkeypatch.setenv("REGNET_RUNS_ROOT", str(tmp_path / "runs"))
    monkeypatch.setenv("REGNET_CHECKPOINTS_ROOT", str(tmp_path / "shipped"))
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py"), default_timeout=240)
    at.run()
    at.session_state["inspect_tab"] = "Channels"
    at.switch_page("views/inspect.py").run()
    at.toggle(key="channels_on_copied").set_value(True).run()
    at.selectbox(key="channels_stage").set_value(2).run()
    at.selectbox(key="channels_step").set_value(3).run()
    at.selectbox(key="channels_state").set_value("o").run()
    at.number_input(key="channels_channel_32").set_value(7).run()
    at.radio(key="channels_view").set_value("Across epochs").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("kept 3 epoch snapshots" in c.value and "epochs 1, 2 and 3" in c.value for c in at.caption)
    assert explore.snapshots_to_index(run, *load_run_split(run, "val"), "val") == [1, 2, 3]
    at.button(key="channels_index_epochs").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert explore.snapshots_to_index(run, *load_run_split(run, "val"), "val") == []
    figure = json.loads(next(c for c in at.get("plotly_chart") if "across 3 epochs" in c.proto.spec).proto.spec)
    dataset, info = load_run_split(run, "val")
    expected = ch.across_epochs(explore.snapshot_indexes(run, dataset, info, "val"), "2.3.o", 7, 10, 10)
    lines = {t["name"]: t["y"] for t in figure["data"]}
    assert lines["selectivity"] == pytest.approx([r["selectivity"] for r in expected])
    assert lines[info.class_names[4]] == pytest.approx([r["class_means"][4] for r in expected])


def test_a_damaged_snapshot_is_one_sentence_naming_it(tmp_path, capsys):
    run = tiny_run(tmp_path, size=100)
    shutil.copy(run / "checkpoints" / "best.pt", run / "checkpoints" / "epoch-001.pt")
    (run / "checkpoints" / "epoch-002.pt").write_bytes(b"not a checkpoint")
    code, _, err = run_cli(["channels", str(run), "--stage", "1", "--step", "1", "--state", "hidden",
                            "--channel", "0", "--epochs"], capsys)
    assert_one_sentence(code, err, "epoch-002.pt")
