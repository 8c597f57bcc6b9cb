"""``torchrun --nproc_per_node=2 -m regnet train`` (gloo, CPU) against one process with the same global batch.

mnist_cnn has no BatchNorm (on CPU, DDP cannot synchronise BN statistics) and
no dropout, and augmentation is off, so both runs see the same global batches
and compute the same mean gradients; only the order of floating-point sums
differs, hence a tight tolerance rather than equality.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from regnet.train.config import Config, apply_override
from regnet.train.loop import train
from regnet.train.runfolder import read_metrics, read_status

REPO = Path(__file__).resolve().parent.parent
# 360 train images: 9 steps of 2 processes x 20 images
SETTINGS = ["train.device=cpu", "model.name=mnist_cnn", "data.size=400", "data.workers=0", "data.augment=false",
            "train.batch_size=40", "train.epochs=2", "optim.lr=0.05", "train.log_every=3"]


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    config = Config()
    for override in [*SETTINGS, f"run.runs_root={tmp_path}", "run.run_id=single"]:
        apply_override(config, override)
    single = train(config, progress=False)

    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # regnet is installed (pip install -e .): no path tricks
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "regnet",
               "train", "--runs-root", str(tmp_path), "--run-id", "ddp"]
    for override in SETTINGS:
        command += ["--set", override]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    ddp = tmp_path / "ddp"
    assert result.stdout.strip().splitlines() == [str(ddp)]  # rank 0 alone prints (and writes)

    assert read_status(ddp)["state"] == "finished" and read_status(ddp)["steps_per_epoch"] == 9
    one, two = read_metrics(single), read_metrics(ddp)
    assert [(r["kind"], r["step"]) for r in one] == [(r["kind"], r["step"]) for r in two]
    for a, b in zip(one, two):
        for key in ("train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "val_macro_f1", "lr"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (a["step"], key)
    weights = [torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"] for run in (single, ddp)]
    for key, value in weights[0].items():
        torch.testing.assert_close(weights[1][key], value, rtol=1e-4, atol=1e-5)
    epochs = [r for r in one if r["kind"] == "epoch"]
    assert epochs[1]["train_loss"] < epochs[0]["train_loss"]  # and it is learning
