"""Per-epoch regulator statistics (artifacts/regulator.jsonl) and epoch snapshots (train.keep_every)."""
from __future__ import annotations

import pytest
import torch

from regnet.models import build_model
from regnet.runs import read_regulator, snapshot_epochs
from regnet.train import loop
from regnet.train.checkpoint import load_checkpoint
from regnet.train.config import Config
from regnet.train.loop import RunFailed, train
from regnet.train.regulator_stats import probe_indices, regulator_statistics
from regnet.train.evaluate import load_run_model
from regnet.train.snapshots import snapshot_due
from test_train_run import tiny_config


def regnet_config(runs_root, run_id, *overrides: str) -> Config:
    """regnet20 on 120 shapes images (110 train, 10 val), batch 54: 3 steps an epoch, 2 epochs, a snapshot
    every epoch; the rest as the engine tests' tiny run."""
    return tiny_config(runs_root, run_id, "model.name=regnet20", "data.size=120", "train.batch_size=54",
                       "train.log_every=2", "train.keep_every=1", *overrides)


def test_statistics_have_one_entry_per_block_and_every_number_in_range():
    torch.manual_seed(0)
    model = build_model("regnet20", num_classes=10).train()
    x, y = torch.randn(40, 3, 32, 32), torch.randint(0, 10, (40,))
    stats, samples = regulator_statistics(model, x, y)
    assert model.training  # put back in the mode it was in
    assert [(b["stage"], b["step"]) for b in stats["blocks"]] == [(s, t) for s in (1, 2, 3) for t in (1, 2, 3)]
    for block in stats["blocks"]:
        assert set(block["gates"]) == {"i", "f", "o", "g"}
        for name, numbers in block["gates"].items():
            assert set(numbers) == {"mean", "std", "below_05", "above_95"}
            assert 0 <= numbers["below_05"] <= 1 and 0 <= numbers["above_95"] <= 1
            assert numbers["below_05"] + numbers["above_95"] <= 1 + 1e-9
            assert numbers["std"] >= 0
            if name != "g":  # sigmoid gates; the candidate g is a tanh
                assert 0 <= numbers["mean"] <= 1
        for state in ("h", "c"):
            assert block[state]["mean_abs"] >= 0 and block[state]["std"] >= 0
        assert block["h"]["mean_abs"] <= 1  # H = o * tanh(C)
    assert 0 <= stats["top1_h_zeroed"] <= 1 and 0 <= stats["top1"] <= 1
    assert stats["reliance"] == pytest.approx(stats["top1"] - stats["top1_h_zeroed"])
    assert samples[(1, 1, "f")].numel() > 0 and 0 <= float(samples[(1, 1, "f")].min())


def test_statistics_match_the_whole_batch_at_once():
    """Chunking the probe changes nothing: the gate mean equals the mean over the whole batch."""
    from regnet.models import record
    torch.manual_seed(1)
    model = build_model("regnet20", num_classes=10).eval()
    x, y = torch.randn(70, 3, 32, 32), torch.randint(0, 10, (70,))
    stats, _ = regulator_statistics(model, x, y)
    with torch.no_grad(), record(model) as trace:
        model(x)
    assert stats["blocks"][4]["gates"]["f"]["mean"] == pytest.approx(float(trace[4].gates["f"].double().mean()))
    assert stats["blocks"][4]["h"]["std"] == pytest.approx(float(trace[4].hidden.double().std(unbiased=False)),
                                                            rel=1e-6)


def test_the_probe_is_a_function_of_the_seed_alone():
    assert probe_indices(1000, 3) == probe_indices(1000, 3)
    assert probe_indices(1000, 3) != probe_indices(1000, 4)
    assert len(probe_indices(1000, 3)) == 256 and len(set(probe_indices(1000, 3))) == 256
    assert probe_indices(10, 0) == list(range(10))


def test_snapshot_rule_keeps_every_kth_and_the_first_and_last():
    kept = [e for e in range(1, 8) if snapshot_due(e, 3, last=e == 7)]
    assert kept == [1, 3, 6, 7]
    assert not any(snapshot_due(e, 0, last=True) for e in range(1, 5))


def test_a_run_that_dies_mid_epoch_end_resumes_with_one_line_per_epoch_and_intact_snapshots(tmp_path, monkeypatch):
    """Killed after the last epoch's regulator line and snapshot but before its last.pt: the resumed run
    redoes epoch 2 and still has exactly one line and one snapshot per epoch, on the same probe images."""
    real_save = loop._save

    def dying_save(run, which, running_s=0.0):
        if which == "last" and run.state.epoch == 2:
            raise KeyboardInterrupt
        real_save(run, which, running_s)

    monkeypatch.setattr(loop, "_save", dying_save)
    with pytest.raises(RunFailed):
        train(regnet_config(tmp_path, "r"))
    run_dir = tmp_path / "r"
    assert [row["epoch"] for row in read_regulator(run_dir)] == [1, 2]
    monkeypatch.setattr(loop, "_save", real_save)
    train(resume=run_dir)
    rows = read_regulator(run_dir)
    lines = (run_dir / "artifacts" / "regulator.jsonl").read_text().splitlines()
    assert len(lines) == 2 and [row["epoch"] for row in rows] == [1, 2]
    assert len({row["probe"]["digest"] for row in rows}) == 1 and rows[0]["probe"]["images"] == 10  # the whole (stratified) val split
    assert [row["step"] for row in rows] == [3, 6]
    assert list(snapshot_epochs(run_dir)) == [1, 2]
    snapshot = load_checkpoint(snapshot_epochs(run_dir)[2])
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert snapshot["epoch"] == 2 and set(snapshot) == {"model", "config", "epoch", "metrics"}
    assert all(torch.equal(snapshot["model"][k], last["model"][k]) for k in last["model"])
    model, _ = load_run_model(run_dir, which="epoch-001")
    assert sum(p.numel() for p in model.parameters()) > 0


def test_keep_every_two_and_a_resnet_run_writes_no_regulator_statistics(tmp_path):
    run_dir = train(regnet_config(tmp_path, "plain", "model.name=resnet20", "train.keep_every=2",
                                  "train.epochs=3", "data.size=120", "train.batch_size=60"))
    assert not (run_dir / "artifacts" / "regulator.jsonl").exists()
    assert read_regulator(run_dir) == []
    assert list(snapshot_epochs(run_dir)) == [1, 2, 3]
    assert not any("regulator" in p.name for p in run_dir.rglob("*"))


def test_the_readers_skip_damaged_lines_and_foreign_snapshot_names(tmp_path):
    (tmp_path / "artifacts").mkdir()
    (tmp_path / "artifacts" / "regulator.jsonl").write_bytes(
        b'{"epoch": 2, "top1": 0.5}\nnot json\n{"epoch": "x"}\n{"epoch": 1, "top1": 0.1}\n{"epoch": 2, "top1": 0.7}\n{"ep')
    assert [(r["epoch"], r["top1"]) for r in read_regulator(tmp_path)] == [(1, 0.1), (2, 0.7)]
    assert read_regulator(tmp_path / "missing") == []
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for name in ("epoch-001.pt", "epoch-012.pt", "epoch-7.pt", "epoch-002.pt.tmp", "best.pt", "epoch-abc.pt"):
        (folder / name).write_bytes(b"x")
    outside = tmp_path.parent / f"{tmp_path.name}-outside.pt"
    outside.write_bytes(b"x")
    (folder / "epoch-003.pt").symlink_to(outside)  # resolves outside the run folder: never offered
    assert list(snapshot_epochs(tmp_path)) == [1, 12]
    assert snapshot_epochs(tmp_path / "missing") == {}
