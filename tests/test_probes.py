"""Linear probes (the paper's Fig. 1b measure): a known linear answer is found, blocks are numbered 1..N
through the network, the final head's read-out is named apart, and ``regnet readout`` caches its work."""
from __future__ import annotations

import json

import pytest
import torch

from regnet.data import load_splits
from regnet.data.device import evaluation_batches
from regnet.inspect.pooling import numbered_blocks, pooled_pass
from regnet.inspect import probes
from regnet.inspect.probes import choose_and_fit, final_head_top1, probe_taps
from regnet.models import build_model
from tests.explore_fixtures import tiny_run
from tests.test_cli import assert_one_sentence, run_cli


def _labelled_features(n: int, informative: bool, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 12) features of 4 classes: the label is written linearly into 4 columns, or into none."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    x = torch.randn(n, 12, generator=g)
    if informative:
        x[:, :4] += 3 * torch.nn.functional.one_hot(labels, 4)
    return x, labels


def test_a_probe_finds_a_label_carried_linearly_and_not_one_that_is_absent():
    train_x, train_y = _labelled_features(800, True)
    test_x, test_y = _labelled_features(400, True, seed=1)
    probe, held_out = choose_and_fit(train_x, train_y, 4)
    assert probe.top1(test_x, test_y) > 0.95
    assert set(held_out) == {1e-6, 1e-5, 1e-4, 1e-3, 1e-2} and probe.l2 in held_out
    noise_x, noise_y = _labelled_features(800, False)
    blind, _ = choose_and_fit(noise_x, noise_y, 4)
    assert blind.top1(*_labelled_features(400, False, seed=1)) < 0.4  # chance is 0.25


def test_the_fit_is_deterministic():
    x, y = _labelled_features(400, True)
    a, _ = choose_and_fit(x, y, 4, seed=3)
    b, _ = choose_and_fit(x, y, 4, seed=3)
    assert torch.equal(a.weight, b.weight) and a.l2 == b.l2


@pytest.mark.parametrize("name, options, per_stage, regulated", [
    ("regnet20", {}, 3, {1, 2, 3}), ("resnet20", {}, 3, set()), ("regnet32", {"regulated_stages": [2]}, 5, {2}),
])
def test_blocks_are_numbered_through_the_network_as_in_the_paper(name, options, per_stage, regulated):
    model = build_model(name, num_classes=10, **options)
    blocks = numbered_blocks(model)
    assert [b.number for b in blocks] == list(range(1, 3 * per_stage + 1))
    for b in blocks:
        assert b.module is model.stages[b.stage - 1].blocks[b.step - 1]
        assert b.number == (b.stage - 1) * per_stage + b.step
        assert b.regulated == (b.stage in regulated)
    assert [b.number for b in blocks if b.stage == 3] == list(range(2 * per_stage + 1, 3 * per_stage + 1))
    if name == "regnet20":
        assert [b.number for b in blocks if b.stage == 3] == [7, 8, 9]  # the paper's Fig. 1b blocks
    taps = probe_taps(model)
    assert sorted(k for k in taps if k.startswith("hidden")) == sorted(
        f"hidden-{b.number}" for b in blocks if b.regulated)


def test_the_last_blocks_pooled_output_through_the_final_head_is_the_models_prediction():
    model = build_model("regnet20", num_classes=10).eval()
    splits = load_splits("shapes", size=120, augment=False)
    result = pooled_pass(model, evaluation_batches(splits.val, splits.info, 8), probe_taps)
    assert result["features"]["block-9"].shape == (len(splits.val), 64)
    assert result["features"]["hidden-2"].shape == (len(splits.val), 16)
    model_top1 = float((result["predictions"] == result["labels"]).double().mean())
    assert final_head_top1(model, result["features"]["block-9"], result["labels"]) == pytest.approx(model_top1)
    assert final_head_top1(model, result["features"]["block-6"], result["labels"]) is None  # 32 channels, not 64


def test_readout_command_writes_the_table_and_caches_the_features(tmp_path, capsys, monkeypatch):
    # The command's table and cache, not the fit's convergence (the tests above): 20 L-BFGS iterations, not 200.
    monkeypatch.setattr(probes, "MAX_ITERATIONS", 20)
    run = tiny_run(tmp_path)
    out_json = tmp_path / "probes.json"
    code, out, err = run_cli(["readout", str(run), "--json", str(out_json)], capsys)
    assert code == 0, err
    report = json.loads(out_json.read_text())
    rows = report["rows"]
    assert [(r["block"], r["features"]) for r in rows] == [(n, f) for n in range(1, 10) for f in ("output", "H")]
    assert all((r["final_head_top1"] is None) == (r["block"] < 7 or r["features"] == "H") for r in rows)
    assert all(0 <= r["probe_top1"] <= 1 for r in rows) and report["num_train"] == 180
    assert "final-head read-out" in out and "probe top-1" in out
    cached = sorted(p.name for p in (run / "artifacts").iterdir())
    assert sum(n.startswith("probe-features-") for n in cached) == 2 and any(n.startswith("probes-") for n in cached)
    stamps = {p: p.stat().st_mtime_ns for p in (run / "artifacts").iterdir()}
    assert run_cli(["readout", str(run)], capsys)[0] == 0
    assert {p: p.stat().st_mtime_ns for p in (run / "artifacts").iterdir()} == stamps  # read, not recomputed


def test_readout_of_a_split_that_is_not_there_is_one_sentence(tmp_path, capsys):
    from tests.explore_fixtures import folder_run_without_test

    code, _, err = run_cli(["readout", str(folder_run_without_test(tmp_path)), "--split", "test"], capsys)
    assert_one_sentence(code, err, "no official test split", "val")
