"""dashboard.run_listing without a browser: incremental metrics reading, smoothing, run discovery, summaries."""
from __future__ import annotations

import json
import math
import os

import pytest

from regnet.dashboard.run_listing import (MetricsTail, curves_long, discover_runs, ema, metrics_frame, progress,
                            read_run, runs_table)
from regnet.runs import check_run_id, read_metrics_since, run_dir_in
from test_dashboard_fixtures import fake_training_process, fixture_runs_root, write_run


def line(**row) -> bytes:
    return (json.dumps(row) + "\n").encode()


def test_metrics_tail_reads_only_new_bytes_and_restarts_on_truncation(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(line(kind="step", step=1) + b"garbage\n")
    tail = MetricsTail()
    read = tail.read(path)
    assert [r["step"] for r in read.rows] == [1] and read.damaged == 1
    first_offset = tail.offset(path)
    with open(path, "ab") as handle:
        handle.write(line(kind="step", step=2))
    read = tail.read(path)
    assert [r["step"] for r in read.rows] == [1, 2] and read.damaged == 1
    assert tail.offset(path) == first_offset + len(line(kind="step", step=2))

    path.write_bytes(line(kind="step", step=9))  # rewritten shorter (e.g. a resumed run starting over)
    read = tail.read(path)
    assert [r["step"] for r in read.rows] == [9] and read.damaged == 0 and read.problem is None


def test_ema_values():
    assert ema([1.0, 2.0, 3.0], 0.5) == [1.0, 1.5, 2.25]
    assert ema([4.0, 0.0, 8.0], 0.0) == [4.0, 0.0, 8.0]
    smoothed = ema([2.0, math.nan, 4.0], 0.75)
    assert smoothed[0] == 2.0 and math.isnan(smoothed[1]) and smoothed[2] == pytest.approx(0.75 * 2 + 0.25 * 4)
    assert ema([], 0.9) == []
    with pytest.raises(ValueError, match="Smoothing weight"):
        ema([1.0], 1.0)


def test_metrics_frame_puts_step_and_epoch_lines_on_one_epoch_axis():
    rows = [{"kind": "step", "epoch": 1, "step": s, "train_loss": 1.0} for s in (1, 2, 3, 4)]
    rows += [{"kind": "epoch", "epoch": 1, "step": 4, "val_top1": 0.5}, {"kind": "other"}]
    frame = metrics_frame(rows)  # steps per epoch taken from the epoch line
    assert list(frame["x_epoch"]) == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert list(metrics_frame(rows, steps_per_epoch=2)["x_epoch"][:2]) == [0.5, 1.0]
    assert metrics_frame([]).empty


def test_run_ids_never_leave_the_root(tmp_path):
    assert check_run_id("20250101-120000-regnet20-shapes-ab12") == "20250101-120000-regnet20-shapes-ab12"
    for bad in ("", "../etc", "a/b", "..", ".hidden", "a..b", "/abs", "x" * 200, None, "my run", "_x"):
        with pytest.raises(ValueError):
            check_run_id(bad)
    (tmp_path / "runs").mkdir()
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", tmp_path / "runs" / "sneaky")
    with pytest.raises(ValueError, match="outside"):
        run_dir_in(tmp_path / "runs", "sneaky")
    assert run_dir_in(tmp_path / "runs", "ok") == tmp_path / "runs" / "ok"


def test_discovery_lists_runs_newest_first_with_shipped_runs_last(tmp_path):
    process = fake_training_process()
    try:
        fixture_runs_root(tmp_path / "runs", live_pid=process.pid)
        write_run(tmp_path / "checkpoints", "resnet20-shapes", epochs_done=3, epochs=3)
        runs = discover_runs(tmp_path / "runs", tmp_path / "checkpoints")
        keys = [run.key for run in runs]
        assert keys == ["r3-regnet20-shapes-live", "r2-regnet20-shapes", "r1-resnet20-shapes",
                        "r4-regnet20-shapes-corrupt", "r0-broken", "shipped/resnet20-shapes"]
        by_key = {run.key: run for run in runs}
        assert by_key["r3-regnet20-shapes-live"].state == "running" and by_key["r3-regnet20-shapes-live"].active
        assert by_key["r2-regnet20-shapes"].state == "failed"
        assert by_key["r2-regnet20-shapes"].error.startswith("CUDA is not available")
        assert by_key["r0-broken"].state == "unknown" and "status.json" in by_key["r0-broken"].problem
        assert by_key["shipped/resnet20-shapes"].source == "shipped"
        table = runs_table(runs)
        assert [key.startswith("shipped/") for key in table["run"]] == [False] * 5 + [True]
        assert table.loc[table["run"] == "r1-resnet20-shapes", "best"].item() == "75.00% val_top1 @ 3"
        assert table.loc[table["run"] == "r1-resnet20-shapes", "epochs done"].item() == "3/3"
    finally:
        process.kill()
        process.wait()


def test_missing_root_and_dead_processes(tmp_path):
    assert discover_runs(tmp_path / "missing", tmp_path / "missing-too") == []
    gone = fake_training_process()
    gone.kill()
    gone.wait()
    run_dir = write_run(tmp_path, "dead", state="running", pid=gone.pid)
    run = read_run(run_dir, "dead")
    assert run.state == "died" and "ended without writing a final status" in run.error and "--resume" in run.error
    (run_dir / "STOP").touch()
    run = read_run(run_dir, "dead")
    assert run.state == "stopped" and run.error is None  # the user asked for this end: no red box


def test_launch_record_without_run_folder_shows_as_starting_then_failed(tmp_path):
    launches = tmp_path / ".launches"
    launches.mkdir()
    process = fake_training_process()
    log = launches / "new-run.log"
    log.write_text("error: Unknown model 'regnet21'.\n")
    (launches / "new-run.json").write_text(json.dumps({"run_id": "new-run", "pid": process.pid, "log": str(log),
                                                       "started_at": 5.0, "model": "regnet21",
                                                       "dataset": "shapes"}))
    try:
        [run] = discover_runs(tmp_path)
        assert (run.key, run.state, run.model) == ("new-run", "starting", "regnet21")
    finally:
        process.kill()
        process.wait()
    [run] = discover_runs(tmp_path)
    assert run.state == "failed" and run.error == "error: Unknown model 'regnet21'."
    assert run.log_path == log


def test_progress_text_and_eta(tmp_path):
    run = read_run(write_run(tmp_path, "p", state="running", epochs_done=1, epochs=4, pid=os.getpid()), "p")
    run.state = "running"  # the test process is alive but is not a regnet process; force the state
    state = progress(run)
    assert state.fraction == 0.25
    assert state.eta_s == pytest.approx(30.0)  # 10 s for a quarter of the steps
    assert "1/4 epochs done" in state.text and "step 4/16" in state.text and "ETA 30s" in state.text
    run.state = "finished"
    assert progress(run).fraction == 1.0 and progress(run).eta_s is None


def test_hparams_best_and_final_follow_the_contracts_one_best_and_curves_csv(tmp_path):
    from regnet.dashboard import tables

    a_dir = write_run(tmp_path, "a", epochs_done=3, epochs=3)
    status = json.loads((a_dir / "status.json").read_text())
    (a_dir / "status.json").write_text(json.dumps({**status, "best_epoch": 2, "best_value": 0.5}))
    runs = [read_run(a_dir, "a"), read_run(write_run(tmp_path, "b", model="resnet20", epochs_done=2), "b")]
    frames = {run.key: metrics_frame(read_metrics_since(run.metrics_path).rows, run.steps_per_epoch) for run in runs}
    table = tables.hparams_table(runs, tables.run_configs(runs), ["val_top1", "val_loss"]).frame.set_index("run")
    assert table.loc["a", "best val top-1 %"] == 50.0 and table.loc["a", "final val top-1 %"] == 75.0
    assert table.loc["a", "best val loss"] == 0.6 and table.loc["a", "final val loss"] == 0.4  # at epoch 2, at 3
    assert table.loc["b", "best val loss"] == table.loc["b", "final val loss"]  # b's best epoch is its last
    assert table.loc["b", "model"] == "resnet20"
    long = curves_long(frames)
    assert set(long["run"]) == {"a", "b"}
    assert len(long[(long["run"] == "a") & (long["metric"] == "val_top1")]) == 3
    assert len(long[(long["run"] == "a") & (long["metric"] == "train_loss")]) == 12 + 3


def test_the_listing_rereads_a_folder_only_when_its_status_changed(tmp_path, monkeypatch):
    import regnet.dashboard.run_listing as runs_module

    for index in range(30):
        write_run(tmp_path, f"run-{index:02d}", started_at=1_700_000_000.0 + index)
    index = runs_module.RunIndex()
    reads = []
    real = runs_module._read_recorded
    monkeypatch.setattr(runs_module, "_read_recorded", lambda *args: reads.append(args[1]) or real(*args))
    assert len(discover_runs(tmp_path, index=index)) == 30 and len(reads) == 30
    reads.clear()
    assert len(discover_runs(tmp_path, index=index)) == 30 and reads == []
    status = json.loads((tmp_path / "run-07" / "status.json").read_text())
    (tmp_path / "run-07" / "status.json").write_text(json.dumps({**status, "epoch": 3, "state": "finished"}))
    listed = {run.key: run for run in discover_runs(tmp_path, index=index)}
    assert reads == ["run-07"] and listed["run-07"].epoch == 3
