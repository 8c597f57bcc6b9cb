"""Crash consistency: SIGKILL the trainer at every atomic write of a 3-epoch run in turn, resume, compare.

A forked child runs the CLI and kills itself at its N-th atomic write (tests/faults/: after the temp file
is written, before the rename: the state left between any two writes, plus a stale temp file). For every
N the killed folder must resume to exactly what an uninterrupted run produces: state finished, best.pt
the epoch status.json names, one validation line per epoch, no temp files, and the same final weights.
Forking from this process (torch already imported) makes a kill cost the training up to it, well under a
second, instead of a new interpreter's start-up; the process-group test forks too, into a session of its own.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from faults.atomic_writes import counted_writes, killed_child
from regnet.runs import read_metrics, read_status, reported_state
from regnet.train import cli
from regnet.train.checkpoint import load_checkpoint
from regnet.train.config import Config, apply_override, dump_config
from regnet.train.loop import train

# mnist_cnn (no BatchNorm) on 90 shapes images: 81 train in 5 steps of 20, 9 val; a few seconds a run.
TINY = ("model.name=mnist_cnn", "data.name=shapes", "data.size=90", "data.workers=0", "train.batch_size=20",
        "train.epochs=3", "train.device=cpu", "optim.name=adam", "optim.lr=0.003", "optim.weight_decay=0",
        "schedule.name=constant", "train.log_every=1000", "train.checkpoint_every_s=null")


def tiny_config(runs_root: Path, run_id: str, *overrides: str) -> Config:
    config = Config()
    for override in (*TINY, f"run.runs_root={runs_root}", f"run.run_id={run_id}", *overrides):
        apply_override(config, override)
    return config


def killed_at(write: int, config_file: Path) -> int | None:
    """Run ``regnet train --config`` in a child that SIGKILLs itself at atomic write number ``write``; its exit code."""
    return killed_child(write, cli.main, ["train", "--config", str(config_file)])


def weights(path: Path) -> dict:
    return load_checkpoint(path)["model"]


def assert_same_weights(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


def assert_consistent(run_dir: Path, reference: Path) -> None:
    status = read_status(run_dir)
    assert status["state"] == "finished" and status["epoch"] == 3
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert best["epoch"] == status["best_epoch"] == load_checkpoint(run_dir / "checkpoints" / "last.pt")["best_epoch"]
    assert best["best_value"] == status["best_value"]
    assert [r["epoch"] for r in read_metrics(run_dir) if r["kind"] == "epoch"] == [1, 2, 3]
    leftovers = [p for p in run_dir.parent.rglob("*") if p.name.endswith(".tmp") or ".creating-" in p.name]
    assert leftovers == []
    assert_same_weights(weights(run_dir / "checkpoints" / "last.pt"), weights(reference / "checkpoints" / "last.pt"))
    assert_same_weights(best["model"], weights(reference / "checkpoints" / "best.pt"))
    assert (run_dir / "artifacts" / "final_eval.json").is_file()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, int]:
    """The uninterrupted run, and how many atomic writes it made (its kill points)."""
    with counted_writes() as writes:
        run_dir = train(tiny_config(tmp_path_factory.mktemp("reference"), "crash"), progress=False)
    return run_dir, writes[0]


def test_a_kill_at_every_write_resumes_to_the_uninterrupted_run(reference, tmp_path):
    reference_dir, kill_points = reference
    assert kill_points >= 14  # config, status, and per epoch a step status, last.pt, best.pt, status; the end
    print(f"{kill_points} kill points")
    for write in range(1, kill_points + 1):
        root = tmp_path / f"kill-{write:02d}"
        config = tiny_config(root, "crash")
        config_file = tmp_path / f"kill-{write:02d}.yaml"
        config_file.write_text(dump_config(config))
        assert killed_at(write, config_file) == -signal.SIGKILL, f"write {write} was not reached"
        run_dir = root / "crash"
        if not run_dir.exists():  # killed while assembling the folder: nothing to resume, start it again
            assert write == 1 and [p.name for p in root.iterdir()][0].startswith(".crash.creating-")
            train(tiny_config(root, "crash"), progress=False)
        else:
            if (run_dir / "status.json").exists():
                assert reported_state(read_status(run_dir)) in ("died", "finished"), write
            for name in ("last.pt", "best.pt"):
                if (run_dir / "checkpoints" / name).exists():
                    load_checkpoint(run_dir / "checkpoints" / name)  # never torn
            train(resume=run_dir, progress=False)
        assert_consistent(run_dir, reference_dir)


def test_a_kill_after_a_timed_mid_epoch_checkpoint_loses_only_the_steps_after_it(reference, tmp_path):
    """checkpoint_every_s=0 saves last.pt after every step that does not end an epoch.

    Writes 1 and 2 are config.yaml and the running status, 3 is last.pt after step 1, 4 its status: a kill
    at 4 leaves a mid-epoch checkpoint, which the resumed run continues from with the same data order and
    random stream, to the uninterrupted run's weights.
    """
    reference_dir, _ = reference
    config_file = tmp_path / "timed.yaml"
    config_file.write_text(dump_config(tiny_config(tmp_path / "runs", "crash", "train.checkpoint_every_s=0")))
    assert killed_at(4, config_file) == -signal.SIGKILL
    run_dir = tmp_path / "runs" / "crash"
    saved = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert (saved["epoch"], saved["epoch_step"], saved["step"]) == (0, 1, 1)
    train(resume=run_dir, progress=False)
    assert_consistent(run_dir, reference_dir)


def _train_in_a_new_session(config_file: Path) -> None:
    """The forked child: a terminal's foreground job of its own (its process group), running the CLI."""
    os.setsid()
    torch.set_num_threads(1)
    cli.main(["train", "--config", str(config_file)])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_whole_process_group_stops_cleanly_with_loader_workers(tmp_path, sig):
    """Ctrl-C in a terminal (or kill -- -PGID) reaches the DataLoader workers too; they leave it to the trainer."""
    # 90 steps an epoch, so the signal lands while the workers are serving one
    config = tiny_config(tmp_path, "group", "data.workers=2", "data.size=2000", "train.epochs=20", "train.log_every=1")
    config_file = tmp_path / "group.yaml"
    config_file.write_text(dump_config(config))
    process = multiprocessing.get_context("fork").Process(target=_train_in_a_new_session, args=(config_file,))
    process.start()
    run_dir = tmp_path / "group"
    try:
        while process.is_alive():  # until the workers have served a few steps
            try:
                if read_status(run_dir).get("step", 0) >= 3:
                    break
            except ValueError:
                pass
            time.sleep(0.05)
        os.killpg(process.pid, sig)
        process.join(timeout=120)
    finally:
        if process.is_alive():
            os.killpg(process.pid, signal.SIGKILL)
            process.join()
    assert process.exitcode == 0
    status = read_status(run_dir)
    assert status["state"] == "stopped" and status["error"] is None, status
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == status["step"]
    assert signal.Signals(sig).name in (run_dir / "train.log").read_text()  # the log says why it stopped
