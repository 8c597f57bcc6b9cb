"""The run-folder contract (regnet.runs) on its own: names and ids, the atomic write, tolerant readers, liveness, best."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
import yaml

from faults.atomic_writes import killing_env
from regnet.data.info import CIFAR10_CLASSES
from regnet.runs import (RefusedPath, atomic_write, atomic_write_json, best_of, check_inside, checkpoint_path,
                         comparison_row, is_run_id, process_alive, process_identity, read_all_metrics,
                         read_config_dict, read_metrics_since, read_status, read_summary, remove_stale_temps,
                         reported_state, scan_runs)


def line(**row) -> bytes:
    return (json.dumps(row) + "\n").encode()


def test_the_run_id_rule_is_one_rule():
    for good in ("20250101-120000-regnet20-shapes", "a", "run_1.b-2", "A" * 128):
        assert is_run_id(good)
    for bad in ("", "my run", "_x", ".hidden", "-x", "a/b", "..", "a..b", "x" * 129, "lr=0.1", None, 3):
        assert not is_run_id(bad)


def test_atomic_write_replaces_whole_files_with_normal_permissions(tmp_path):
    target = tmp_path / "status.json"
    atomic_write_json(target, {"state": "running"})
    atomic_write(target, lambda handle: handle.write(b'{"state": "finished"}'))
    assert json.loads(target.read_text()) == {"state": "finished"}
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~_umask()
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]  # no temp file left

    def fail(handle):
        handle.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(target, fail)
    assert json.loads(target.read_text()) == {"state": "finished"} and len(list(tmp_path.iterdir())) == 1


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_kill_mid_write_leaves_the_old_file_and_a_temp_that_the_owner_removes(tmp_path):
    target = tmp_path / "status.json"
    target.write_text('{"state": "old"}')
    write = "import regnet.runs as r, sys; r.atomic_write_text(sys.argv[1], 'new')"
    env = killing_env(1)
    code = subprocess.run([sys.executable, "-c", write, str(target)], env=env).returncode
    assert code == -9 and target.read_text() == '{"state": "old"}'
    [temp] = [p for p in tmp_path.iterdir() if p.name != "status.json"]
    assert temp.name.startswith(".status.json.") and temp.name.endswith(".tmp")
    assert remove_stale_temps(tmp_path) == [temp] and not temp.exists()


@pytest.mark.parametrize("content, words", [
    (b"[1, 2]", "holds a JSON list"),
    (b"\xff\xfe{}", "not valid UTF-8"),
    (b'{"state": "runn', "not valid JSON"),
    (b"", "not valid JSON"),
])
def test_damaged_status_files_are_one_sentence(tmp_path, content, words):
    (tmp_path / "status.json").write_bytes(content)
    with pytest.raises(ValueError, match=words) as info:
        read_status(tmp_path)
    assert "\n" not in str(info.value)


def test_files_that_are_not_regular_are_refused_without_reading(tmp_path):
    os.mkfifo(tmp_path / "status.json")  # opening a FIFO to read would block forever
    with pytest.raises(ValueError, match="not a regular file"):
        read_status(tmp_path)
    (tmp_path / "config.yaml").mkdir()
    with pytest.raises(ValueError, match="folder"):
        read_config_dict(tmp_path)
    os.symlink("/dev/zero", tmp_path / "metrics.jsonl")
    chunk = read_all_metrics(tmp_path)
    assert chunk.rows == [] and "not a regular file" in chunk.problem
    with pytest.raises(ValueError, match="not a run folder"):
        read_status(tmp_path / "nowhere")


def test_metrics_tail_consumes_complete_lines_and_counts_damaged_ones(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(line(kind="step", step=1) + b"{not json\n" + b"\n" + b"[1, 2]\n" + b"\xff\xfe\n"
                     + line(kind="step", step=2) + b'{"kind": "st')
    chunk = read_metrics_since(path)
    assert [r["step"] for r in chunk.rows] == [1, 2]
    assert chunk.damaged == 3  # broken JSON, a JSON list, undecodable bytes; the blank line is not damage
    assert chunk.offset == path.stat().st_size - len(b'{"kind": "st')  # the line being written waits
    with open(path, "ab") as handle:
        handle.write(b'ep", "step": 3}\n')
    more = read_metrics_since(path, chunk.offset)
    assert more.rows == [{"kind": "step", "step": 3}] and more.offset == path.stat().st_size
    assert read_metrics_since(tmp_path / "nope.jsonl", 7).offset == 7


def test_metrics_are_read_whole_in_capped_chunks(tmp_path, monkeypatch):
    import regnet.runs.read as read

    monkeypatch.setattr(read, "METRICS_CHUNK_CAP", 64)
    (tmp_path / "metrics.jsonl").write_bytes(b"".join(line(kind="step", step=i) for i in range(50)))
    assert [r["step"] for r in read.read_all_metrics(tmp_path).rows] == list(range(50))


def test_liveness_survives_pid_reuse():
    me = process_identity()
    assert process_alive(me["pid"], me["pid_start"])
    assert not process_alive(me["pid"], me["pid_start"] + 1)  # same pid, another process's start time
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert not process_alive(gone.pid) and not process_alive(None) and not process_alive(True)
    assert reported_state({"state": "running", **me}) == "running"
    assert reported_state({"state": "running", "pid": gone.pid}) == "died"
    assert reported_state({"state": "running", **me, "pid_start": me["pid_start"] + 1}) == "died"
    assert reported_state({"state": "finished", "pid": gone.pid}) == "finished"
    assert reported_state({"state": "running", "pid": gone.pid, "host": "elsewhere"}) == "running"
    # A stop the user asked for (a STOP file) ends as stopped, even when the process had to be killed.
    assert reported_state({"state": "running", "pid": gone.pid}, stop_requested=True) == "stopped"
    assert reported_state({"state": "running", **me}, stop_requested=True) == "running"  # still stopping


def _run_folder(path, state="finished", pid=0, epochs=((1, 0.5, 0.9, 20.0), (2, 0.8, 0.6, 60.0), (3, 0.7, 0.7, 60.0))):
    """A run folder whose best (val_top1 0.8) is at epoch 2, not the last."""
    path.mkdir()
    (path / "config.yaml").write_text("model: {name: regnet20, options: {cell: gru}}\ndata: {name: shapes}\n"
                                      "train: {epochs: 5}\n")
    atomic_write_json(path / "status.json", {"state": state, "pid": pid, "model": "regnet20", "epoch": len(epochs),
                                             "best_metric": "val_top1", "best_value": 0.8, "best_epoch": 2,
                                             "elapsed_s": 30.0, "started_at": 100.0})
    rows = [line(kind="step", step=1, time=99.0, train_loss=2.0)]
    rows += [line(kind="epoch", epoch=e, step=4 * e, time=100.0 + e, val_top1=top1, val_loss=loss, images_per_s=speed)
             for e, top1, loss, speed in epochs]
    (path / "metrics.jsonl").write_bytes(b"".join(rows) + b"not json\n")
    return path


def test_a_summary_has_one_best_for_every_metric_and_the_final_epoch(tmp_path):
    summary = read_summary(_run_folder(tmp_path / "r"))
    assert (summary.state, summary.model, summary.dataset, summary.epoch, summary.epochs) == (
        "finished", "regnet20", "shapes", 3, 5)
    assert (summary.best.metric, summary.best.value, summary.best.epoch) == ("val_top1", 0.8, 2)
    assert summary.at_best["val_loss"] == 0.6 and summary.final["val_loss"] == 0.7  # the loss at the best epoch
    assert summary.images_per_s == pytest.approx(3 / (1 / 20 + 1 / 60 + 1 / 60))  # harmonic mean of the epochs
    row = comparison_row(summary)
    assert (row["best_val_top1"], row["final_val_top1"], row["best_val_loss"], row["epochs"]) == (0.8, 0.7, 0.6, "3/5")
    assert row["options"] == {"cell": "gru"} and "skipped 1 damaged line" in row["note"]
    json.dumps(row)  # plain values: grid and study write it as JSON


def test_a_summary_says_died_or_stopped_and_what_is_damaged(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    killed = _run_folder(tmp_path / "killed", state="running", pid=gone.pid)
    summary = read_summary(killed)
    assert summary.state == "died" and f"--resume {killed}" in summary.error
    (killed / "STOP").touch()
    assert read_summary(killed).state == "stopped" and read_summary(killed).error is None
    (tmp_path / "empty").mkdir()
    empty = read_summary(tmp_path / "empty")
    assert not empty.recorded and empty.state == "unknown" and "no status.json" in comparison_row(empty)["note"]


def test_best_is_the_checkpointed_best():
    best = best_of({"best_metric": "val_top1", "best_value": 0.8644, "best_epoch": 49})
    assert (best.metric, best.value, best.epoch) == ("val_top1", 0.8644, 49)
    assert best_of({"best_value": "high", "best_epoch": True}).value is None


def test_symlinks_out_of_the_runs_root_are_refused(tmp_path):
    root, outside = tmp_path / "runs", tmp_path / "outside"
    (root / "inside").mkdir(parents=True)
    (root / "inside" / "status.json").write_text("{}")
    (outside / "checkpoints").mkdir(parents=True)
    (outside / "status.json").write_text("{}")
    (outside / "checkpoints" / "best.pt").write_bytes(b"x")
    os.symlink(outside, root / "escape")
    os.symlink(root / "inside", root / "alias")  # a link that stays inside is an ordinary run
    (root / "my run").mkdir()
    (root / "my run" / "status.json").write_text("{}")
    runs, refused = scan_runs(root)
    assert [p.name for p in runs] == ["alias", "inside"] and [p.name for p in refused] == ["escape"]
    with pytest.raises(RefusedPath, match="refused"):
        check_inside(root, root / "escape")
    os.symlink(outside / "checkpoints" / "best.pt", root / "inside" / "best-link")
    (root / "inside" / "checkpoints").mkdir()
    os.symlink(outside / "checkpoints" / "best.pt", root / "inside" / "checkpoints" / "best.pt")
    with pytest.raises(RefusedPath):
        checkpoint_path(root / "inside")
    assert checkpoint_path(root / "inside", "last") is None


@pytest.mark.parametrize("classes, shown", [(CIFAR10_CLASSES, "cifar10"), (("cat", "dog"), "imagefolder"),
                                            (None, "imagefolder")])
def test_an_old_run_recorded_as_an_image_folder_is_named_by_its_class_folders(tmp_path, classes, shown):
    """Runs written before CIFAR-10 folders were named so say "imagefolder" in status.json; the listing names
    them by their data root's class folders (cifar10 for exactly CIFAR-10's), or keeps the name."""
    from test_dashboard_fixtures import write_run

    run_dir = write_run(tmp_path / "runs", "old-cifar", dataset="imagefolder")
    data = tmp_path / "jpegs"
    for name in classes or ():
        (data / "train" / name).mkdir(parents=True)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["data"]["root"] = str(data)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    assert read_summary(run_dir).dataset == shown
