"""Training runs end to end on the synthetic `shapes` data: the run folder, eval, resume, stop, failures.

One small run (resnet20, 600 images, batch 32, 2 epochs) is shared by most
tests; the resume tests compare against it bit for bit (CPU, no workers).
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from regnet.train import cli
from regnet.train.checkpoint import load_checkpoint
from regnet.train.config import Config, apply_override, load_config
from regnet.train.loop import RunFailed, train
from regnet.train.runfolder import RunFolder, read_metrics, read_status
from regnet.train.evaluate import compare_runs, evaluate_run, load_run_model


REPO = Path(__file__).resolve().parent.parent
STATUS_KEYS = {"state", "pid", "run_id", "model", "dataset", "epoch", "epochs", "step", "steps_per_epoch",
               "started_at", "updated_at", "finished_at", "elapsed_s", "best_metric", "best_value", "best_epoch",
               "images_per_s", "params", "macs", "error", "pid_start", "host"}
STEP_KEYS = {"kind", "epoch", "step", "time", "train_loss", "lr", "images_per_s"}
EPOCH_KEYS = {"kind", "epoch", "step", "time", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5",
              "val_macro_f1", "lr", "epoch_time_s", "images_per_s"}
TIMING_KEYS = {"time", "epoch_time_s", "images_per_s"}
SYSTEM_PHASES = ("data_s", "compute_s", "eval_s", "probe_s", "checkpoint_s")


def tiny_config(runs_root: Path, run_id: str | None = None, *overrides: str) -> Config:
    """resnet20 on 600 shapes images (540 train, 60 val), batch 32: 17 steps an epoch."""
    config = Config()
    for override in (f"run.runs_root={runs_root}", "train.device=cpu", "model.name=resnet20", "data.size=600",
                     "data.workers=0", "train.batch_size=32", "train.epochs=2", "optim.name=adam", "optim.lr=0.002",
                     "optim.weight_decay=0", "schedule.name=constant", "train.log_every=5", *overrides):
        apply_override(config, override)
    config.run.run_id = run_id
    return config


def fast_config(runs_root: Path, run_id: str | None = None, *overrides: str) -> Config:
    """mnist_cnn (no BatchNorm, fast) on 200 shapes images, for the failure paths."""
    return tiny_config(runs_root, run_id, "model.name=mnist_cnn", "data.size=200", "train.batch_size=30",
                       *overrides)


def epoch_lines(run_dir: Path) -> list[dict]:
    return [r for r in read_metrics(run_dir) if r["kind"] == "epoch"]


def without_timing(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMING_KEYS}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    return train(tiny_config(tmp_path_factory.mktemp("runs"), "base"), progress=False)


def test_run_folder_holds_every_file_with_sane_values(trained_run):
    config = load_config(trained_run / "config.yaml")
    assert (config.model.name, config.model.num_classes, config.model.in_channels) == ("resnet20", 10, 3)
    assert config.run.run_id == "base"

    status = read_status(trained_run)
    assert STATUS_KEYS <= set(status)
    assert (status["state"], status["epoch"], status["epochs"], status["steps_per_epoch"], status["step"]) == \
        ("finished", 2, 2, 17, 34)
    assert status["error"] is None and status["params"] == 269_722 and status["macs"] > 40e6
    assert status["started_at"] <= status["finished_at"] <= status["updated_at"] and status["elapsed_s"] > 0

    records = read_metrics(trained_run)
    steps = [r for r in records if r["kind"] == "step"]
    assert all(STEP_KEYS <= set(r) for r in steps) and [r["step"] for r in steps] == [5, 10, 15, 17, 20, 25, 30, 34]
    assert all(r["lr"] == pytest.approx(0.002) and r["images_per_s"] > 0 and r["train_loss"] > 0 for r in steps)
    epochs = epoch_lines(trained_run)
    assert [(r["epoch"], r["step"]) for r in epochs] == [(1, 17), (2, 34)]
    for r in epochs:
        assert EPOCH_KEYS <= set(r)
        assert all(0 <= r[k] <= 1 for k in ("train_top1", "val_top1", "val_top5", "val_macro_f1"))
        assert r["val_top5"] >= r["val_top1"] and r["epoch_time_s"] > 0
    # chance is 0.1 (6 +- 2.3 of the 60 validation images); two epochs land at 11-15 of them depending on the
    # CPU's float kernels (11 on an Intel Xeon with AVX-512), so the check is above chance, with the loss falling
    assert epochs[-1]["val_top1"] > 0.1 and epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    best = max(epochs, key=lambda r: r["val_top1"])
    assert (status["best_value"], status["best_epoch"]) == (best["val_top1"], best["epoch"])

    final = json.loads((trained_run / "artifacts" / "final_eval.json").read_text())
    assert final["split"] == "val" and final["top1"] == epochs[-1]["val_top1"] and len(final["class_names"]) == 10
    matrix = torch.tensor(final["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == 60 and matrix.diag().sum() / 60 == pytest.approx(final["top1"])
    assert [row["support"] for row in final["per_class"]] == matrix.sum(1).tolist()
    assert all({"class", "precision", "recall", "f1", "accuracy", "support"} <= set(row) for row in final["per_class"])

    for which in ("last", "best"):
        checkpoint = torch.load(trained_run / "checkpoints" / f"{which}.pt", weights_only=True)
        assert {"model", "optimizer", "scheduler", "epoch", "best_value", "rng", "config", "metrics"} <= set(checkpoint)
        assert {"torch", "numpy", "python", "data_order"} <= set(checkpoint["rng"])
        assert checkpoint["config"] == yaml.safe_load((trained_run / "config.yaml").read_text())
    assert torch.load(trained_run / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 2
    assert "finished" in (trained_run / "train.log").read_text()
    assert not list(trained_run.rglob("*.tmp"))

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(trained_run))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"step/train_loss", "step/lr", "step/images_per_s", "epoch/val_top1", "epoch/val_macro_f1"} <= tags
    assert [e.value for e in events.Scalars("epoch/val_top1")] == pytest.approx([r["val_top1"] for r in epochs])


def test_each_epoch_ends_with_a_system_line_splitting_its_time(trained_run):
    records = read_metrics(trained_run)
    systems = [r for r in records if r["kind"] == "system"]
    assert [(r["epoch"], r["step"]) for r in systems] == [(1, 17), (2, 34)]
    # after its epoch line: the checkpoint writes it times come after that line
    kinds = [r["kind"] for r in records]
    assert [kinds[i - 1] for i, kind in enumerate(kinds) if kind == "system"] == ["epoch", "epoch"]
    for line, epoch in zip(systems, epoch_lines(trained_run)):
        parts = {k: line[k] for k in SYSTEM_PHASES}
        assert all(parts[k] > 0 for k in ("data_s", "compute_s", "eval_s", "checkpoint_s")), parts
        assert parts["probe_s"] == 0  # a ResNet has no regulator to probe
        assert sum(parts.values()) + line["other_s"] == pytest.approx(line["wall_s"], rel=1e-6)
        assert line["other_s"] < 0.5 * line["wall_s"]  # the phases are most of the epoch
        # the epoch line's time (training + evaluation) is inside the system line's, which adds the checkpoints
        assert epoch["epoch_time_s"] <= line["wall_s"] <= epoch["epoch_time_s"] + parts["checkpoint_s"] + 1.0
        assert line["cpu_s"] > 0 and line["cpu_cores"] > 0 and line["max_rss_mb"] > 50
        assert "gpu_max_memory_mb" not in line  # CPU run


def test_eval_reproduces_the_runs_validation_numbers(trained_run, capsys):
    epochs = epoch_lines(trained_run)
    last = evaluate_run(trained_run, "val", "last", device="cpu")
    assert (last["loss"], last["top1"], last["top5"], last["macro_f1"]) == pytest.approx(
        (epochs[-1]["val_loss"], epochs[-1]["val_top1"], epochs[-1]["val_top5"], epochs[-1]["val_macro_f1"]), abs=1e-6)
    best_epoch = read_status(trained_run)["best_epoch"]
    best = evaluate_run(trained_run, "val", "best", device="cpu")
    assert best["top1"] == pytest.approx(epochs[best_epoch - 1]["val_top1"], abs=1e-6)
    assert best["epoch"] == best_epoch
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["eval", str(trained_run), "--which", "last", "--split", "test"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "on test, 120 images" in out and "confusion matrix" in out
    assert "hexagon" in out and "precision" in out


def test_load_run_model_reads_runs_and_shipped_checkpoints(trained_run, tmp_path):
    model, config = load_run_model(trained_run, "best")
    assert not model.training and config["model"]["name"] == "resnet20"
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    shipped = tmp_path / "shipped"
    (shipped / "checkpoints").mkdir(parents=True)
    raw = yaml.safe_load((trained_run / "config.yaml").read_text())
    del raw["model"]["num_classes"], raw["model"]["in_channels"]  # an older config: inferred from the weights
    (shipped / "config.yaml").write_text(yaml.safe_dump(raw))
    full = torch.load(trained_run / "checkpoints" / "best.pt", weights_only=True)
    torch.save({k: full[k] for k in ("model", "config", "metrics")}, shipped / "checkpoints" / "best.pt")
    again, _ = load_run_model(shipped)
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key])


def test_a_shipped_run_carries_the_weights_and_scores_of_its_final_evaluation(trained_run, tmp_path):
    from bench_scripts import load_bench

    from_run = load_bench("ship_checkpoint").from_run

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    final = json.loads((run / "artifacts" / "final_eval.json").read_text())
    assert final["checkpoint"] == "last"
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)  # make best differ from last
    best["model"] = {k: v + 1 if v.is_floating_point() else v for k, v in best["model"].items()}
    torch.save(best, run / "checkpoints" / "best.pt")
    from_run(run, tmp_path / "shipped", data_root="data/portable")
    shipped = torch.load(tmp_path / "shipped" / "checkpoints" / "best.pt", weights_only=True)
    scored = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.equal(shipped["model"][k], v.float()) for k, v in scored["model"].items())
    assert shipped["metrics"]["top1"] == final["top1"] and shipped["metrics"]["loss"] == final["loss"]
    config = yaml.safe_load((tmp_path / "shipped" / "config.yaml").read_text())
    assert config["data"]["root"] == "data/portable" and config["run"]["runs_root"] == "runs"
    status = json.loads((tmp_path / "shipped" / "status.json").read_text())
    assert {"pid_start", "host"} <= set(read_status(run))  # the run records which process trained it
    assert status["state"] == "finished" and status["pid"] is None
    assert not {"pid_start", "host"} & set(status)  # the shipped folder does not
    model, _ = load_run_model(tmp_path / "shipped")
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def _stop_after(monkeypatch, calls_until_stop: int) -> None:
    """The STOP file "appears" at the n-th check (one check per step, one after each epoch's validation)."""
    calls = {"n": 0}

    def stop_requested(self) -> bool:
        calls["n"] += 1
        return calls["n"] == calls_until_stop

    monkeypatch.setattr(RunFolder, "stop_requested", stop_requested)


@pytest.fixture(scope="module")
def stopped_after_epoch_1(tmp_path_factory) -> Path:
    """The tiny run stopped by its STOP check after epoch 1's validation; tests resume copies of it."""
    with pytest.MonkeyPatch.context() as patch:
        _stop_after(patch, 18)
        return train(tiny_config(tmp_path_factory.mktemp("stopped"), "stopped"), progress=False)


def copy_of(run_dir: Path, tmp_path: Path) -> Path:
    shutil.copytree(run_dir, tmp_path / run_dir.name)
    return tmp_path / run_dir.name


@pytest.mark.parametrize("where", ["mid-epoch", "epoch end"])
def test_resume_equals_the_uninterrupted_run(trained_run, stopped_after_epoch_1, tmp_path, monkeypatch, where):
    if where == "mid-epoch":
        _stop_after(monkeypatch, 10)
        stopped = train(tiny_config(tmp_path, "stopped"), progress=False)
    else:
        stopped = copy_of(stopped_after_epoch_1, tmp_path)
    status = read_status(stopped)
    assert status["state"] == "stopped"
    checkpoint = load_checkpoint(stopped / "checkpoints" / "last.pt")
    assert (checkpoint["epoch"], checkpoint["epoch_step"]) == ((0, 10) if where == "mid-epoch" else (1, 0))
    monkeypatch.undo()

    resumed = train(resume=stopped, progress=False)
    assert resumed == stopped and read_status(resumed)["state"] == "finished"
    expected = torch.load(trained_run / "checkpoints" / "last.pt", weights_only=True)
    got = torch.load(resumed / "checkpoints" / "last.pt", weights_only=True)
    for key, value in expected["model"].items():
        assert torch.equal(value, got["model"][key]), key
    assert [without_timing(r) for r in epoch_lines(resumed)] == [without_timing(r) for r in epoch_lines(trained_run)]
    steps = [r["step"] for r in read_metrics(resumed) if r["kind"] == "step"]
    assert steps == sorted(set(steps))  # nothing logged twice
    final = json.loads((resumed / "artifacts" / "final_eval.json").read_text())
    assert final["confusion_matrix"] == json.loads(
        (trained_run / "artifacts" / "final_eval.json").read_text())["confusion_matrix"]


@pytest.mark.parametrize("damage", ["{\"state\": \"stopp", "[1, 2]"])
def test_resume_rebuilds_a_damaged_status_from_last_pt_and_the_metrics(trained_run, stopped_after_epoch_1, tmp_path,
                                                                      damage):
    stopped = copy_of(stopped_after_epoch_1, tmp_path)
    (stopped / "status.json").write_text(damage)
    resumed = train(resume=stopped, progress=False)
    status = read_status(resumed)
    assert (status["state"], status["epoch"], status["step"]) == ("finished", 2, 34)
    assert status["best_value"] == max(r["val_top1"] for r in epoch_lines(trained_run))
    assert [without_timing(r) for r in epoch_lines(resumed)] == [without_timing(r) for r in epoch_lines(trained_run)]


def test_a_raw_pickle_as_a_checkpoint_is_one_sentence_without_a_torch_warning(tmp_path, recwarn):
    import pickle

    path = tmp_path / "last.pt"
    path.write_bytes(pickle.dumps({"model": {"w": [1.0]}}, protocol=4))
    with pytest.raises(ValueError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert "not a RegNet Lab checkpoint" in message and "raw pickle" in message and len(recwarn) == 0
    assert "--which" in message and "train --resume` cannot continue from this file" in message


def test_stop_file_ends_the_run_cleanly(tmp_path):
    run_dir = tmp_path / "long"

    def touch_stop_once_running():
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if read_status(run_dir)["step"] >= 5:
                    (run_dir / "STOP").touch()
                    return
            except (ValueError, KeyError):
                pass
            time.sleep(0.05)

    watcher = threading.Thread(target=touch_stop_once_running, daemon=True)
    watcher.start()
    path = train(fast_config(tmp_path, "long", "train.epochs=100"), progress=False)
    watcher.join()
    status = read_status(path)
    assert status["state"] == "stopped" and 5 <= status["step"] < 100 * 6 and status["error"] is None
    assert status["finished_at"] is not None
    checkpoint = load_checkpoint(path / "checkpoints" / "last.pt")
    assert checkpoint["step"] == status["step"]


def test_a_stopped_run_logs_its_final_step_and_its_epoch_agrees_with_the_log(tmp_path, monkeypatch):
    _stop_after(monkeypatch, 4)  # the 4th step of epoch 1 asks to stop; log_every=100 never logs on its own
    path = train(fast_config(tmp_path, "stopped", "train.log_every=100"), progress=False)
    status = read_status(path)
    steps = [r for r in read_metrics(path) if r["kind"] == "step"]
    assert (status["state"], status["step"], status["epoch"]) == ("stopped", 4, 0)
    assert [(r["epoch"], r["step"]) for r in steps] == [(1, 4)]  # the last trained step is not lost
    log = (path / "train.log").read_text()
    assert f"stopped in epoch 1 at step 4 ({status['epoch']}/{status['epochs']} epochs done" in log
    assert load_checkpoint(path / "checkpoints" / "last.pt")["step"] == steps[-1]["step"]


# Slow: a real `python -m regnet train` stopped by SIGTERM; by default test_crash's process-group test stops
# a forked CLI with SIGTERM and SIGINT, and test_train_ddp starts `-m regnet train` processes.
@pytest.mark.slow
def test_sigterm_stops_a_subprocess_with_exit_code_0(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # regnet is installed (pip install -e .): no path tricks
    process = subprocess.Popen(
        [sys.executable, "-m", "regnet", "train", "--model", "mnist_cnn", "--dataset", "shapes", "--epochs", "100",
         "--batch-size", "30", "--runs-root", str(tmp_path), "--run-id", "term", "--set", "data.size=200",
         "--set", "data.workers=0", "--set", "train.log_every=1"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_dir = tmp_path / "term"
    deadline = time.time() + 180
    while time.time() < deadline and process.poll() is None:
        if (run_dir / "status.json").exists() and read_status(run_dir).get("step", 0) >= 2:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert out.strip().splitlines()[-1] == str(run_dir)
    assert read_status(run_dir)["state"] == "stopped" and "SIGTERM" in (run_dir / "train.log").read_text()
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] >= 2


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    real_save = torch.save
    calls = {"n": 0}

    def save_until_the_disk_fills(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:  # epoch 1 writes last.pt and best.pt; epoch 2's last.pt hits a full disk
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_until_the_disk_fills)
    config = fast_config(tmp_path, "full")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--model", "mnist_cnn", "--dataset", "shapes", "--epochs", "2", "--batch-size", "30",
                  "--runs-root", str(tmp_path), "--run-id", "full", "--set", "data.size=200",
                  "--set", "data.workers=0", "--set", "optim.name=adam", "--set", "optim.lr=0.002"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    last_line = err.strip().splitlines()[-1]  # the lines before it are the run's log
    assert last_line.startswith("error: Could not write checkpoint") and "disk is full" in last_line
    assert "Traceback" not in err
    run_dir = tmp_path / "full"
    status = read_status(run_dir)
    assert status["state"] == "failed" and "disk is full" in status["error"]
    monkeypatch.undo()
    survivor = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert survivor["epoch"] == 1 and config.model.name == "mnist_cnn"
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert "Traceback" in (run_dir / "train.log").read_text()


def test_a_non_finite_loss_fails_the_run_with_one_sentence(tmp_path):
    config = fast_config(tmp_path, "nan", "optim.name=sgd", "optim.lr=1e12", "optim.momentum=0")
    with pytest.raises(RunFailed) as info:
        train(config, progress=False)
    status = read_status(tmp_path / "nan")
    assert status["state"] == "failed" and status["error"].startswith("The training loss became")
    assert "grad_clip" in status["error"] and info.value.message == status["error"]
    assert "NonFiniteLoss" in (tmp_path / "nan" / "train.log").read_text()


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_an_existing_run_id_is_never_overwritten(trained_run, capsys):
    before = {p: p.read_bytes() for p in trained_run.rglob("*") if p.is_file()}
    code, _, err = run_cli(["train", "--model", "resnet20", "--runs-root", str(trained_run.parent), "--run-id",
                            "base", "--set", "data.size=600"], capsys)
    assert code == 2 and err.startswith("error: Run folder") and "already exists" in err and err.count("\n") == 1
    assert {p: p.read_bytes() for p in trained_run.rglob("*") if p.is_file()} == before


def test_a_checkpoint_of_another_model_or_a_truncated_file_is_one_sentence(trained_run, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(trained_run, other)
    raw = yaml.safe_load((other / "config.yaml").read_text())
    raw["model"]["name"] = "resnet32"
    (other / "config.yaml").write_text(yaml.safe_dump(raw))
    code, _, err = run_cli(["eval", str(other)], capsys)
    assert code == 2 and "does not fit model resnet32" in err and err.count("\n") == 1

    broken = tmp_path / "broken"
    shutil.copytree(trained_run, broken)
    for name in ("best.pt", "last.pt"):
        data = (broken / "checkpoints" / name).read_bytes()
        (broken / "checkpoints" / name).write_bytes(data[: len(data) // 2])
    code, _, err = run_cli(["eval", str(broken)], capsys)
    assert code == 2 and "truncated or corrupt" in err and err.count("\n") == 1
    status = json.loads((broken / "status.json").read_text())
    status["state"] = "stopped"
    (broken / "status.json").write_text(json.dumps(status))
    code, _, err = run_cli(["train", "--resume", str(broken)], capsys)
    assert code == 2 and "truncated or corrupt" in err
    code, _, err = run_cli(["train", "--resume", str(trained_run)], capsys)
    assert code == 2 and "already finished" in err
    code, _, err = run_cli(["eval", str(tmp_path)], capsys)
    assert code == 2 and "is not a run folder" in err


def test_eval_and_compare_report_a_run_whose_process_is_gone_as_died(trained_run, tmp_path, capsys):
    killed = tmp_path / "killed"
    shutil.copytree(trained_run, killed)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    status = json.loads((killed / "status.json").read_text())
    (killed / "status.json").write_text(json.dumps({**status, "state": "running", "pid": gone.pid}))
    code, out, _ = run_cli(["eval", str(killed)], capsys)
    assert code == 0 and out.startswith(f"{killed} (died): best.pt")
    assert compare_runs([killed])[0]["state"] == "died"


def test_compare_lists_runs_with_params_and_metrics(trained_run, capsys):
    rows = compare_runs([trained_run])
    assert rows[0]["params"] == 269_722 and rows[0]["final_val_top1"] == epoch_lines(trained_run)[-1]["val_top1"]
    code, out, _ = run_cli(["compare", "--runs-root", str(trained_run.parent)], capsys)
    assert code == 0 and "base" in out and "269,722" in out


def test_early_stopping_with_amp_channels_last_clipping_and_smoothing(tmp_path):
    """An LR too small to change anything: val_top1 never improves, so patience 1 stops after epoch 2 of 4.

    60 images (2 steps an epoch): bfloat16 autocast is slow on a CPU, and the options need a step each only."""
    config = fast_config(tmp_path, "early", "data.size=60", "train.epochs=4", "train.early_stop_patience=1",
                         "optim.name=sgd", "optim.lr=1e-12", "train.amp=true", "train.channels_last=true",
                         "train.grad_clip=1.0", "train.label_smoothing=0.1")
    path = train(config, progress=False)
    status = read_status(path)
    assert (status["state"], status["epoch"], status["best_epoch"]) == ("finished", 2, 1)
    assert [r["epoch"] for r in epoch_lines(path)] == [1, 2]
    assert "early stop" in (path / "train.log").read_text()
    assert (path / "artifacts" / "final_eval.json").exists()
