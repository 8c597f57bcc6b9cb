"""dashboard.launcher: configs, run ids, launching a separate process, STOP and the grace-period kill."""
from __future__ import annotations

import os
import time

import pytest
import yaml

from regnet.dashboard import launcher
from regnet.dashboard.run_listing import discover_runs, read_run
from regnet.runs import is_run_id
from regnet.train.config import OPTIMIZERS, Config, ConfigError, config_to_dict
from test_dashboard_fixtures import fake_training_process, write_run


def test_the_form_starts_from_the_engines_defaults():
    assert launcher.DEFAULT_CONFIG == config_to_dict(Config())  # the engine's defaults, not a copy of them
    assert launcher.DEFAULT_CONFIG["train"]["epochs"] == 10 and launcher.OPTIMIZERS == OPTIMIZERS


def test_ready_configs_are_read_and_bad_ones_explained(tmp_path):
    (tmp_path / "c10_regnet20.yaml").write_text(yaml.safe_dump({"model": {"name": "resnet20"},
                                                                "train": {"epochs": 164}}))
    (tmp_path / "broken.yaml").write_text("model: [unclosed\n")
    found = launcher.ready_configs(tmp_path)
    assert list(found) == ["broken", "c10_regnet20"]
    config = launcher.load_ready_config(found["c10_regnet20"])
    assert config["train"]["epochs"] == 164 and config["optim"]["name"] == "sgd"
    assert config["model"]["name"] == "resnet20" and config["model"]["options"] == {}  # none of another model
    with pytest.raises(ValueError, match="broken.yaml could not be read"):
        launcher.load_ready_config(found["broken"])
    assert launcher.ready_configs(tmp_path / "none") == {}


def test_new_run_ids_are_unique_and_path_safe():
    ids = {launcher.new_run_id("regnet20", "image/folder..x") for _ in range(20)}
    assert len(ids) == 20
    for run_id in ids:
        assert is_run_id(run_id) and "regnet20-image-folder.x" in run_id


def test_a_launch_that_fails_shows_up_as_a_failed_run_with_its_error(tmp_path):
    config = {"data": {"name": "mnist", "root": str(tmp_path / "no-data")}, "train": {"epochs": 1}}
    launch = launcher.start_run(config, tmp_path, run_id="bad-model")
    assert launch.command[1:5] == ["-m", "regnet", "train", "--config"] and "--run-id" in launch.command
    record = tmp_path / ".launches" / "bad-model.json"
    assert record.exists() and yaml.safe_load((tmp_path / ".launches" / "bad-model.yaml").read_text())["run"][
        "run_id"] == "bad-model"
    deadline = time.time() + 60
    while time.time() < deadline and launcher._CHILDREN[launch.pid].poll() is None:
        time.sleep(0.2)
    launcher.reap()
    assert launch.pid not in launcher._CHILDREN
    [run] = discover_runs(tmp_path)
    assert run.key == "bad-model" and run.state == "failed" and run.error
    assert launch.log_path.read_text().strip()
    with pytest.raises(ValueError, match="is not allowed"):
        launcher.start_run(config, tmp_path, run_id="../escape")


@pytest.mark.parametrize("config, words", [
    ({"optim": {"lr": 0}}, "optim.lr must be greater than 0, got 0."),
    ({"train": {"epochs": "ten"}}, "train.epochs must be a whole number, got 'ten'."),
    ({"model": {"name": "resnet20", "options": {"cell": "gru"}}}, "Unknown option(s) cell for model 'resnet20'"),
    ({"model": {"name": "no_such_model"}}, "Unknown model 'no_such_model'"),
])
def test_a_config_the_engine_would_refuse_is_never_launched(tmp_path, config, words):
    with pytest.raises(ConfigError) as error:
        launcher.start_run(config, tmp_path, run_id="refused")
    assert str(error.value).startswith(words) and "\n" not in str(error.value)
    assert not list(tmp_path.iterdir())  # no run folder, no launch record


def test_a_cloned_run_starts_the_form_as_a_new_run_and_its_bad_values_are_named(tmp_path):
    run_dir = write_run(tmp_path, "old")
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["optim"]["lr"] = 0.0  # hand-edited
    config["model"].update(num_classes=10, class_names=[str(k) for k in range(10)])
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    form = launcher.config_of_run(run_dir)
    assert form["run"]["run_id"] is None and form["model"]["num_classes"] is None and form["optim"]["lr"] == 0.0
    with pytest.raises(ConfigError, match=r"optim.lr must be greater than 0, got 0.0.") as error:
        launcher.start_run(form, tmp_path / "runs")
    assert [p.key for p in error.value.problems] == ["optim.lr"] and not (tmp_path / "runs").exists()


def test_existing_run_folders_are_never_reused(tmp_path):
    write_run(tmp_path, "taken")
    with pytest.raises(ValueError, match="already exists"):
        launcher.start_run(launcher.DEFAULT_CONFIG, tmp_path, run_id="taken")


def test_stop_asks_first_and_kills_the_process_group_only_after_the_grace_period(tmp_path):
    process = fake_training_process()
    try:
        run_dir = write_run(tmp_path, "live", state="running", pid=process.pid)
        run = read_run(run_dir, "live")
        assert run.state == "running" and launcher.count_running([run]) == 1
        assert launcher.enforce_stops([run], grace_s=5) == []  # nobody asked it to stop

        launcher.request_stop(run_dir)
        asked = (run_dir / "STOP").stat().st_mtime
        launcher.request_stop(run_dir)  # asking twice keeps the first request time
        assert (run_dir / "STOP").stat().st_mtime == asked
        run = read_run(run_dir, "live")
        assert launcher.enforce_stops([run], grace_s=5, now=asked + 1) == []  # still within the grace period
        assert process.poll() is None

        started = time.time()
        assert launcher.enforce_stops([run], grace_s=5, now=asked + 6) == ["live"]
        assert time.time() - started < 1.0  # it signals and returns, it does not wait
        assert process.wait(timeout=10) != 0
        run = read_run(run_dir, "live")  # killed after the user asked it to stop: it stopped, no error box
        assert run.state == "stopped" and run.error is None and run.state in launcher.RESUMABLE_STATES
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_run_that_does_not_lead_its_group_is_signalled_alone(tmp_path, monkeypatch):
    signalled = []
    monkeypatch.setattr(os, "getpgid", lambda pid: pid + 1)
    monkeypatch.setattr(os, "kill", lambda pid, sig: signalled.append(("kill", pid, sig)))
    monkeypatch.setattr(os, "killpg", lambda pid, sig: signalled.append(("killpg", pid, sig)))
    launcher._signal(12345, 15)
    assert signalled == [("kill", 12345, 15)]


def test_a_launch_gives_its_run_folder_the_name_tags_and_note_and_runs_shows_them_at_once(tmp_path):
    import json

    from regnet.runs import read_note, read_tags

    config = {"model": {"name": "resnet20"}, "data": {"name": "shapes", "size": 100, "workers": 0},
              "train": {"epochs": 1, "batch_size": 20, "device": "cpu", "log_every": 1}}
    with pytest.raises(ValueError, match="Tag 'a b!' is not allowed"):
        launcher.start_run(config, tmp_path, run_id="tagged", tags=["a b!"])
    assert not list(tmp_path.iterdir())  # refused before anything is written
    launch = launcher.start_run(config, tmp_path, run_id="lstm-lr0.05", tags=["sweep", "Sweep", "base line"],
                                note="lr sweep, first try")
    try:
        assert launch.command[launch.command.index("--run-id") + 1] == "lstm-lr0.05"
        assert launch.command[-6:] == ["--tag", "sweep", "--tag", "base line", "--note", "lr sweep, first try"]
        record = json.loads((tmp_path / ".launches" / "lstm-lr0.05.json").read_text())
        assert record["tags"] == ["sweep", "base line"] and record["note"] == "lr sweep, first try"
        [run] = discover_runs(tmp_path)  # before its folder exists, the launch record says what it was given
        assert run.key == "lstm-lr0.05" and run.tags == ("sweep", "base line") and run.note == "lr sweep, first try"
        run_dir = tmp_path / "lstm-lr0.05"
        deadline = time.time() + 120
        while time.time() < deadline and not (run_dir / "config.yaml").exists():
            assert launcher._CHILDREN[launch.pid].poll() is None, launch.log_path.read_text()
            time.sleep(0.2)
        assert read_tags(run_dir) == ["sweep", "base line"] and read_note(run_dir) == "lr sweep, first try"
        launcher.request_stop(run_dir)
        assert launcher._CHILDREN[launch.pid].wait(timeout=120) == 0
    finally:
        if launcher._CHILDREN[launch.pid].poll() is None:
            os.killpg(launch.pid, 9)
    [run] = discover_runs(tmp_path)
    assert run.tags == ("sweep", "base line") and run.note == "lr sweep, first try"  # now from the run folder
