"""The regulator's channel explorer: the index agrees with ``regnet.record``, the pattern match finds a
constructed pattern, class rankings follow the values, and bad choices are one sentence (exit 2)."""
from __future__ import annotations

import json

import pytest
import torch

import regnet
from regnet.data import load_splits
from regnet.data.device import evaluation_batches
from regnet.inspect import channels as ch
from regnet.models import build_model
from tests.explore_fixtures import folder_run_without_test, tiny_run
from tests.test_cli import assert_one_sentence, run_cli

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    model = build_model("regnet20", num_classes=10).eval()
    splits = load_splits("shapes", size=160, augment=False)
    return model, splits


def _direct(model, splits, stage: int, step: int, state: str) -> torch.Tensor:
    """(N, C) spatial means of one state computed straight from ``regnet.record``."""
    rows = []
    for x, _ in evaluation_batches(splits.val, splits.info, 7):
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
