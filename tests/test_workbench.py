"""Runs as a workbench (issue 12): tags and notes, trash and restore, resume and clone, filters, stopping.

The contract side (regnet.runs.annotations, regnet.runs.trash) is tested on plain folders; the pages with
streamlit's AppTest on fixture runs roots, acting as a user would (choose a run, type, click).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from regnet.dashboard import launcher
from regnet.dashboard.run_listing import RunFilter, discover_runs, filter_runs, progress, runs_table
from regnet.runs import (TRASH, MetricsChunk, epoch_metrics, parse_tags, read_note, read_tags, restore_run, scan_runs,
                         trash_run, trashed_runs, write_note, write_tags)
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
    assert epoch_metrics(MetricsChunk(lines)).images_per_s == pytest.approx(30.0)  # 2 epochs of N images in N/20 + N/60 s
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
    assert table.loc["speeds", "best"] == "50.00% val_top1 @ 2"  # the checkpointed best, with its metric


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


# ------------------------------------------------------------------------------------------ the pages (AppTest)

@pytest.fixture
def root(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    monkeypatch.setenv("REGNET_RUNS_ROOT", str(runs))
    monkeypatch.setenv("REGNET_CHECKPOINTS_ROOT", str(tmp_path / "checkpoints"))
    write_run(runs, "r1-resnet20-shapes", model="resnet20", epochs_done=3, epochs=3, started_at=T0 + 100)
    write_run(runs, "r2-regnet20-shapes", state="stopped", epochs_done=1, epochs=3, started_at=T0 + 200)
    return runs


def runs_page() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=90)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def work_on(at: AppTest, key: str) -> AppTest:
    at.selectbox(key="runs_work_on").select(key).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def table(at: AppTest):
    return at.dataframe[0].value.set_index("run")


def test_tags_and_a_note_typed_on_the_runs_page_are_stored_in_the_run_folder(root):
    at = work_on(runs_page(), "r2-regnet20-shapes")
    at.text_input(key="runs_tags_r2-regnet20-shapes").input("baseline, seed 0")
    at.text_area(key="runs_note_r2-regnet20-shapes").input("LR too high?")
    at.button(key="runs_save_r2-regnet20-shapes").click().run()
    assert read_tags(root / "r2-regnet20-shapes") == ["baseline", "seed 0"]
    assert read_note(root / "r2-regnet20-shapes") == "LR too high?"
    fresh = work_on(runs_page(), "r2-regnet20-shapes")  # a new session reads them back from the folder
    assert table(fresh).loc["r2-regnet20-shapes", "tags"] == "baseline, seed 0"
    assert fresh.text_area(key="runs_note_r2-regnet20-shapes").value == "LR too high?"
    fresh.multiselect(key="runs_f_tag").select("baseline").run()
    assert list(table(fresh).index) == ["r2-regnet20-shapes"]
    bad = work_on(runs_page(), "r1-resnet20-shapes")
    bad.text_input(key="runs_tags_r1-resnet20-shapes").input("ok, <b>")
    bad.button(key="runs_save_r1-resnet20-shapes").click().run()
    assert "Tag '<b>' is not allowed" in bad.error[0].value and read_tags(root / "r1-resnet20-shapes") == []


def test_search_and_filters_narrow_the_table(root):
    at = runs_page()
    assert set(table(at).index) == {"r1-resnet20-shapes", "r2-regnet20-shapes"}
    at.text_input(key="runs_search").input("resnet").run()
    assert list(table(at).index) == ["r1-resnet20-shapes"]
    at.text_input(key="runs_search").input("").run()
    at.multiselect(key="runs_f_state").select("stopped").run()
    assert list(table(at).index) == ["r2-regnet20-shapes"]
    assert "1 of 2 runs match." in "\n".join(c.value for c in at.caption)


def test_delete_asks_first_moves_the_run_to_the_trash_and_restore_brings_it_back(root):
    at = work_on(runs_page(), "r1-resnet20-shapes")
    at.button(key="runs_delete_r1-resnet20-shapes").click().run()
    assert (root / "r1-resnet20-shapes").is_dir()  # nothing moved before the confirmation
    assert "Move `r1-resnet20-shapes` to the trash" in at.warning[0].value
    at.button(key="runs_delete_yes_r1-resnet20-shapes").click().run()
    assert not (root / "r1-resnet20-shapes").exists()
    [deleted] = trashed_runs(root)
    assert deleted.run_id == "r1-resnet20-shapes" and "r1-resnet20-shapes" not in table(at).index
    assert "Moved `r1-resnet20-shapes` to the trash." in at.success[0].value
    at.button(key=f"runs_restore_{deleted.deletion}_r1-resnet20-shapes").click().run()
    assert (root / "r1-resnet20-shapes" / "status.json").is_file() and trashed_runs(root) == []
    assert "r1-resnet20-shapes" in table(at).index


def test_resume_launches_the_cli_resume_and_only_for_a_stopped_failed_or_died_run(root, monkeypatch):
    spawned = []
    monkeypatch.setattr(launcher, "_spawn", lambda command, runs_root, run_id, extra: spawned.append(
        (command, run_id, extra)) or launcher.Launch(run_id, 0, runs_root / run_id, runs_root / "log", command))
    at = work_on(runs_page(), "r1-resnet20-shapes")
    assert at.button(key="runs_resume_r1-resnet20-shapes").disabled  # finished: nothing to resume
    (root / "r2-regnet20-shapes" / "STOP").touch()  # how the stop that ended it left it
    at = work_on(at, "r2-regnet20-shapes")
    at.button(key="runs_resume_r2-regnet20-shapes").click().run()
    [(command, run_id, extra)] = spawned
    assert command == [sys.executable, "-m", "regnet", "train", "--resume", str((root / run_id).resolve())]
    assert run_id == "r2-regnet20-shapes" and extra["resumed"] is True
    assert not (root / run_id / "STOP").exists()  # the old stop request must not stop (or kill) the resumed run
    assert at.session_state["selected_runs"] == ["r2-regnet20-shapes"]
    assert "Resuming `r2-regnet20-shapes`" in at.success[0].value


def test_a_resumed_run_shows_as_starting_until_its_process_writes(root):
    process = fake_training_process()
    try:
        launches = root / ".launches"
        launches.mkdir()
        (launches / "r2-regnet20-shapes.json").write_text(json.dumps(
            {"run_id": "r2-regnet20-shapes", "pid": process.pid, "pid_start": None, "started_at": time.time(),
             "resumed": True, "log": str(launches / "r2-regnet20-shapes.log")}))
        stop = root / "r2-regnet20-shapes" / "STOP"
        stop.touch()
        os.utime(stop, (time.time() - 3600, time.time() - 3600))  # the request that stopped it, an hour ago
        runs = {run.key: run for run in discover_runs(root)}
        assert runs["r2-regnet20-shapes"].state == "starting" and runs["r1-resnet20-shapes"].state == "finished"
        assert runs["r2-regnet20-shapes"].stop_requested_at is None  # so enforce_stops never kills the new process
        assert launcher.enforce_stops(list(runs.values())) == [] and process.poll() is None
    finally:
        process.kill()
        process.wait()


def test_clone_opens_new_run_with_the_runs_config(root):
    at = work_on(runs_page(), "r1-resnet20-shapes")
    at.button(key="runs_clone_r1-resnet20-shapes").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.query_params["clone"] == ["r1-resnet20-shapes"] or at.query_params["clone"] == "r1-resnet20-shapes"
    assert at.selectbox(key="nr_start").value == "clone of r1-resnet20-shapes"
    assert (at.selectbox(key="nr_family").value, at.number_input(key="nr_epochs").value) == ("resnet", 3)
    assert at.selectbox(key="nr_dataset").value == "shapes"


def test_a_clone_of_a_run_that_is_not_listed_is_a_warning(root):
    at = AppTest.from_file(str(APP), default_timeout=90)
    at.query_params["clone"] = "../../etc"
    at.run()
    at.switch_page("views/new_run.py").run()
    assert not at.exception
    assert "There is no run '../../etc' to clone" in at.warning[0].value
    assert at.selectbox(key="nr_start").value == "defaults"


def test_runs_page_shows_the_tensorboard_command_and_stopping(root):
    process = fake_training_process()
    try:
        live = write_run(root, "r3-live", state="running", epochs_done=1, epochs=3, pid=process.pid,
                         started_at=T0 + 300)
        (live / "STOP").touch()
        at = runs_page()
        assert table(at).loc["r3-live", "status"] == "stopping..."
        assert any(f"tensorboard --logdir {root.resolve()}" in code.value for code in at.code)
        at.switch_page("views/new_run.py").run()
        assert any("stopping... · 1/3 epochs done" in md.value for md in at.markdown)
    finally:
        process.kill()
        process.wait()


def test_the_new_run_page_does_not_warn_about_the_run_it_just_started(root, monkeypatch):
    process = fake_training_process()

    def start_run(config, runs_root, run_id=None, tags=(), note=""):  # a launch record for a live stand-in process
        launches = Path(runs_root) / ".launches"
        launches.mkdir(exist_ok=True)
        (launches / "r9-new.json").write_text(json.dumps({"run_id": "r9-new", "pid": process.pid, "pid_start": None,
                                                          "started_at": time.time(), "log": str(launches / "x.log")}))
        return launcher.Launch("r9-new", process.pid, Path(runs_root) / "r9-new", launches / "x.log", [])

    monkeypatch.setattr(launcher, "start_run", start_run)
    try:
        at = runs_page()
        at.switch_page("views/new_run.py").run()
        at.button(key="nr_start_button").click().run()
        assert "Started `r9-new`" in at.success[0].value
        assert not any("running on this machine" in info.value for info in at.info)
    finally:
        process.kill()
        process.wait()


def test_error_boxes_carry_no_external_links_and_the_page_icon_is_local():
    import tomllib

    config = tomllib.loads((APP.parent / ".streamlit" / "config.toml").read_text())
    assert config["client"]["showErrorLinks"] is False  # no "Ask Google" / "Ask ChatGPT" on exceptions
    source = APP.read_text()
    assert 'page_icon=ui.page_icon()' in source and "page_icon=\":" not in source  # a ":material/..:" icon is fetched
