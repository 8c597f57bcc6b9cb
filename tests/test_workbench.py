"""Runs as a workbench (issue 12): tags and notes, trash and restore, resume and clone, filters, stopping.

The contract side (regnet.runs.annotations, regnet.runs.trash) is tested on plain folders; the pages with
streamlit's AppTest on fixture runs roots, acting as a user would (choose a run, type, click).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import launcher
from dashboard.runs import RunFilter, discover_runs, filter_runs, progress, runs_table, summarise_metrics
from regnet.runs import (TRASH, parse_tags, read_note, read_tags, restore_run, scan_runs, trash_run, trashed_runs,
                         write_note, write_tags)
from test_dashboard_fixtures import T0, fake_training_process, write_run

APP = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"


# ------------------------------------------------------------------------------------------ contract

def test_tags_and_note_round_trip_through_the_run_folder(tmp_path):
    run = write_run(tmp_path, "a-run")
    assert read_tags(run) == [] and read_note(run) == ""
    assert write_tags(run, parse_tags(" baseline, lr sweep ,Baseline,, cifar/aug ")) == ["baseline", "lr sweep",
                                                                                         "cifar/aug"]
    write_note(run, "Diverged after epoch 3.\nTry lr 0.05.")
    assert json.loads((run / "tags.json").read_text()) == ["baseline", "lr sweep", "cifar/aug"]
    assert read_tags(run) == ["baseline", "lr sweep", "cifar/aug"]
    assert read_note(run) == "Diverged after epoch 3.\nTry lr 0.05."
    assert not list(run.glob(".*.tmp"))  # written atomically: no temp file left behind


def test_bad_tags_are_one_sentence_and_a_damaged_tags_file_reads_as_none(tmp_path):
    run = write_run(tmp_path, "a-run")
    with pytest.raises(ValueError, match="Tag '<script>' is not allowed; use 1 to 40"):
        parse_tags("ok, <script>")
    with pytest.raises(ValueError, match="too many"):
        parse_tags(",".join(f"t{i}" for i in range(40)))
    (run / "tags.json").write_text('{"not": "a list"')
    assert read_tags(run) == []
    (run / "tags.json").write_text('["fine", 3, "../../etc", "also fine"]')
    assert read_tags(run) == ["fine", "also fine"]


def test_a_deleted_run_goes_to_the_trash_with_its_launch_records_and_comes_back(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "keep")
    run = write_run(root, "gone")
    launches = root / ".launches"
    launches.mkdir()
    (launches / "gone.json").write_text("{}")
    (launches / "gone.log").write_text("output")
    trashed = trash_run(root, "gone")
    assert not run.exists() and (trashed.path / "status.json").is_file()
    assert trashed.path.parent.parent == root / TRASH and not (launches / "gone.json").exists()
    assert [path.name for path in scan_runs(root)[0]] == ["keep"]  # the trash is never listed as a run
    assert [(item.run_id, item.deletion) for item in trashed_runs(root)] == [("gone", trashed.deletion)]
    assert restore_run(root, trashed.deletion, "gone") == root / "gone"
    assert (root / "gone" / "status.json").is_file() and (launches / "gone.log").read_text() == "output"
    assert trashed_runs(root) == [] and not (root / TRASH / trashed.deletion).exists()


def test_trash_refuses_live_runs_taken_names_and_paths_outside_the_root(tmp_path):
    root = tmp_path / "runs"
    process = fake_training_process()
    try:
        write_run(root, "live", state="running", pid=process.pid)
        with pytest.raises(ValueError, match="is running; stop it before deleting it"):
            trash_run(root, "live")
    finally:
        process.kill()
        process.wait()
    with pytest.raises(ValueError, match="not allowed"):
        trash_run(root, "../outside")
    with pytest.raises(ValueError, match="no run folder"):
        trash_run(root, "missing")
    write_run(root, "twice")
    first = trash_run(root, "twice")
    write_run(root, "twice")
    with pytest.raises(ValueError, match="exists again"):
        restore_run(root, first.deletion, "twice")
    with pytest.raises(ValueError, match="not allowed"):
        restore_run(root, "..", "twice")


def test_dot_folders_are_skipped_by_the_listing(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "real")
    for hidden in (".trash/20260101-000000-abc/old", ".inspect-cache/x"):
        write_run(root / Path(hidden).parent, Path(hidden).name)
    assert [run.key for run in discover_runs(root) if run.source == "run"] == ["real"]


# ------------------------------------------------------------------------------------------ rows and filters

def test_images_per_s_is_the_runs_average_and_started_comes_from_the_run(tmp_path):
    run = write_run(tmp_path, "speeds", epochs_done=2, started_at=T0)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    speeds = iter([20.0, 60.0])
    for line in lines:
        if line["kind"] == "epoch":
            line["images_per_s"] = next(speeds)
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert summarise_metrics(lines).images_per_s == pytest.approx(30.0)  # 2 epochs of N images in N/20 + N/60 s
    no_start = write_run(tmp_path, "no-start")
    status = json.loads((no_start / "status.json").read_text())
    status["started_at"] = None
    (no_start / "status.json").write_text(json.dumps(status))
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.yaml").write_text((run / "config.yaml").read_text())  # no status, no metrics
    table = runs_table(discover_runs(tmp_path)).set_index("run")
    assert table.loc["speeds", "images/s"] == 30.0  # status.json says 123.4 (the last window)
    assert table.loc["speeds", "started"] == time.strftime("%Y-%m-%d %H:%M", time.localtime(T0))
    assert table.loc["no-start", "started"] == time.strftime("%Y-%m-%d %H:%M", time.localtime(T0 + 1))  # 1st line
    assert table.loc["bare", "started"] == "-"  # never the folder's mtime
    assert table.loc["speeds", "best"] == "50.00% val_top1" and table.loc["speeds", "best epoch"] == 2


def test_filters_match_text_model_data_set_state_and_tag(tmp_path):
    write_run(tmp_path, "r1", model="resnet20")
    write_run(tmp_path, "r2", model="regnet20", state="failed")
    write_run(tmp_path, "r3", model="regnet20", dataset="cifar10")
    write_tags(tmp_path / "r3", ["baseline"])
    write_note(tmp_path / "r2", "exploded at lr 1.0")
    runs = discover_runs(tmp_path)

    def keys(**wanted) -> list[str]:
        return sorted(run.key for run in filter_runs(runs, RunFilter(**wanted)))

    assert keys() == ["r1", "r2", "r3"]
    assert keys(models=("regnet20",)) == ["r2", "r3"] and keys(datasets=("cifar10",)) == ["r3"]
    assert keys(states=("failed",)) == ["r2"] and keys(tags=("baseline",)) == ["r3"]
    assert keys(text="EXPLODED") == ["r2"] and keys(text="regnet20 cifar") == ["r3"] and keys(text="nope") == []


def test_a_run_asked_to_stop_says_stopping_until_it_has_stopped(tmp_path):
    process = fake_training_process()
    try:
        run_dir = write_run(tmp_path, "live", state="running", epochs_done=1, epochs=3, pid=process.pid)
        [run] = discover_runs(tmp_path)
        assert run.shown_state == "running" and "ETA" in progress(run).text
        (run_dir / "STOP").touch()
        [run] = discover_runs(tmp_path)
        text = progress(run).text
        assert text.startswith("stopping... · 1/3 epochs done") and "ETA" not in text
        assert runs_table([run])["status"].item() == "stopping..."
    finally:
        process.kill()
        process.wait()
