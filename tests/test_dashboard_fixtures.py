"""Fixture run folders for the dashboard tests, written by hand in the contract's layout (docs/run-folder.md).

They do not need the training engine: each test writes exactly the files it reads. Imported by the other
test_dashboard_* modules; it holds the fixture-writing helpers and a check that they stay in the contract's shape.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from regnet.models import build_model
from regnet.train.checkpoint import save_checkpoint
from regnet.train.config import Config, config_to_dict, save_config

T0 = 1_700_000_000.0  # a fixed start time, so "newest first" is decided by the fixtures, not the clock


def write_shipped_run(root: Path, name: str, model_name: str, **options) -> None:
    """A shipped-style run folder with an untrained model (on 3-channel shapes): enough for the page's wiring."""
    torch.manual_seed(0)
    model = build_model(model_name, num_classes=10, in_channels=3, **options)
    config = Config()
    config.model.name, config.model.num_classes, config.model.in_channels = model_name, 10, 3
    config.model.options = dict(options)
    config.data.size, config.data.val_ratio = 200, 0.2
    folder = root / name
    (folder / "checkpoints").mkdir(parents=True)
    save_config(config, folder / "config.yaml")
    (folder / "status.json").write_text(json.dumps({"state": "finished", "model": model_name, "dataset": "shapes",
                                                     "epoch": 1, "epochs": 1}))
    (folder / "metrics.jsonl").write_text("")
    save_checkpoint({"model": model.state_dict(), "config": config_to_dict(config), "metrics": {}},
                    folder / "checkpoints" / "best.pt")


def config(model: str = "regnet20", dataset: str = "shapes", epochs: int = 3) -> dict:
    return {
        "model": {"name": model, "options": {"cell": "lstm", "gates": "efficient", "se": False}},
        "data": {"name": dataset, "root": "data", "val_ratio": 0.1, "split_seed": 0, "augment": True,
                 "color_jitter": False, "workers": 2, "size": None},
        "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0001,
                  "betas": [0.9, 0.999]},
        "schedule": {"name": "multistep", "milestones": [0.5, 0.75], "gamma": 0.1, "warmup_epochs": 0},
        "train": {"epochs": epochs, "batch_size": 32, "device": "cpu", "seed": 0, "log_every": 1},
        "run": {"runs_root": "runs", "run_id": None},
    }


def metric_lines(epochs: int, steps_per_epoch: int = 4, start_loss: float = 2.3) -> list[dict]:
    """Step and epoch lines for ``epochs`` completed epochs; values move so curves are not flat."""
    lines, step = [], 0
    for epoch in range(1, epochs + 1):
        for _ in range(steps_per_epoch):
            step += 1
            lines.append({"kind": "step", "epoch": epoch, "step": step, "time": T0 + step,
                          "train_loss": start_loss / step, "lr": 0.1, "images_per_s": 100.0 + step})
        lines.append({"kind": "epoch", "epoch": epoch, "step": step, "time": T0 + step, "train_loss": 1.0 / epoch,
                      "train_top1": 0.2 * epoch, "val_loss": 1.2 / epoch, "val_top1": 0.25 * epoch,
                      "val_top5": 0.5 + 0.1 * epoch, "val_macro_f1": 0.2 * epoch, "lr": 0.1,
                      "epoch_time_s": 4.0, "images_per_s": 110.0})
    return lines


def write_run(root: Path, run_id: str, *, state: str = "finished", model: str = "regnet20", dataset: str = "shapes",
              epochs_done: int = 2, epochs: int = 3, started_at: float = T0, pid: int = 0, error: str | None = None,
              log: str = "", extra_metrics: str = "", steps_per_epoch: int = 4) -> Path:
    """A run folder as the engine would leave it (config.yaml, status.json, metrics.jsonl, train.log)."""
    run_dir = Path(root) / run_id
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config(model, dataset, epochs)))
    lines = metric_lines(epochs_done, steps_per_epoch)
    best = max((line["val_top1"] for line in lines if line["kind"] == "epoch"), default=None)
    status = {"state": state, "pid": pid, "run_id": run_id, "model": model, "dataset": dataset,
              "epoch": epochs_done, "epochs": epochs, "step": epochs_done * steps_per_epoch,
              "steps_per_epoch": steps_per_epoch, "started_at": started_at, "updated_at": started_at + 10,
              "finished_at": None if state == "running" else started_at + 10, "elapsed_s": 10.0 * max(epochs_done, 1),
              "best_metric": "val_top1", "best_value": best, "best_epoch": epochs_done or None,
              "images_per_s": 123.4, "params": 250_000, "macs": 41_000_000, "error": error}
    (run_dir / "status.json").write_text(json.dumps(status))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines) + extra_metrics)
    (run_dir / "train.log").write_text(log or f"run {run_id}\n")
    return run_dir


def write_sweep(root, runs: dict[str, dict]) -> None:
    """Runs named by key, each with config overrides {"section.key": value} and "val" = (val_top1, val_loss)
    at its last (and best) epoch, epoch 2."""
    for index, (run_id, spec) in enumerate(runs.items()):
        spec = dict(spec)
        top1, loss = spec.pop("val")
        last = {"kind": "epoch", "epoch": 2, "step": 8, "time": 1e9, "val_top1": top1, "val_loss": loss,
                "train_loss": 0.3, "val_top5": 0.99, "val_macro_f1": top1}
        run_dir = write_run(root, run_id, epochs_done=2, epochs=2, started_at=1e9 + index,
                            extra_metrics=json.dumps(last) + "\n")
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        for dotted, value in spec.items():
            section, _, key = dotted.rpartition(".")
            node = config
            for part in section.split("."):
                node = node.setdefault(part, {})
            node[key] = value
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config))


SWEEP = {"lr0.1-lstm": {"optim.lr": 0.1, "model.options.cell": "lstm", "val": (0.876543, 0.4)},
         "lr0.01-gru": {"optim.lr": 0.01, "model.options.cell": "gru", "val": (0.95, 0.123456)},
         "lr0.05-lstm": {"optim.lr": 0.05, "model.options.cell": "lstm", "val": (0.5, 0.9)}}


def fake_training_process() -> subprocess.Popen:
    """A live process whose command line mentions regnet, standing in for a running training run."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "regnet-fixture"],
                            start_new_session=True)


def fixture_runs_root(root: Path, live_pid: int | None = None) -> dict[str, Path]:
    """A runs root with a finished, a failed, a running (if ``live_pid``), a corrupt and a broken run."""
    root.mkdir(parents=True, exist_ok=True)
    runs = {
        "finished": write_run(root, "r1-resnet20-shapes", model="resnet20", epochs_done=3, epochs=3,
                              started_at=T0 + 100),
        "failed": write_run(root, "r2-regnet20-shapes", state="failed", epochs_done=1, started_at=T0 + 200,
                            error="CUDA is not available; use --device cpu.",
                            log="Traceback (most recent call last):\n  boom\nRuntimeError: CUDA is not available\n"),
        "corrupt": write_run(root, "r4-regnet20-shapes-corrupt", epochs_done=2, started_at=T0 + 50,
                             extra_metrics='{"kind": "step", "epo\nnot json at all\n{"kind": "step", "ep'),
    }
    if live_pid is not None:
        runs["running"] = write_run(root, "r3-regnet20-shapes-live", state="running", epochs_done=1, epochs=5,
                                    started_at=T0 + 300, pid=live_pid)
    broken = root / "r0-broken"
    broken.mkdir()
    (broken / "status.json").write_text('{"state": "runn')
    os.utime(broken, (T0, T0))  # no start time inside: the folder's mtime dates it
    runs["broken"] = broken
    (root / "not-a-run").mkdir()
    return runs


def test_fixture_runs_follow_the_contract(tmp_path):
    run_dir = write_run(tmp_path, "a-run", epochs_done=2)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "finished" and status["epoch"] == 2 and status["best_value"] == 0.5
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["kind"] for line in lines].count("epoch") == 2 and len(lines) == 10
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["name"] == "regnet20"
