"""``python -m regnet study``: the --models syntax, the Welch statistics, and a tiny study that is killed and
continued, its members listed like any run."""
from __future__ import annotations

import json
import os
import signal

import pytest
from scipy import stats

from faults.atomic_writes import killed_child, killing_env
from regnet.runs import STUDY, read_status, scan_runs
from regnet.train import cli
from regnet.train.config import Config
from regnet.train.study import mean_std, parse_models, plan_study, study_table, welch


TINY = ["--dataset", "shapes", "--epochs", "1", "--batch-size", "50", "--device", "cpu",
        "--set", "data.size=100", "--set", "data.workers=0", "--set", "train.log_every=1"]


def run_cli(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_models_syntax_carries_options_with_yaml_values():
    assert parse_models("resnet20,regnet20:memory=reset:sharing=block,regnet20:regulated_stages=[1,2]") == [
        ("resnet20", {}), ("regnet20", {"memory": "reset", "sharing": "block"}),
        ("regnet20", {"regulated_stages": [1, 2]})]
    for bad, words in (("regnet20:memory", "is not OPTION=VALUE"), ("resnet20,resnet20", "distinct"),
                       (":memory=reset", "no model name"), ("regnet21", "Unknown model")):
        with pytest.raises(ValueError, match=words):
            parse_models(bad)


def test_welch_interval_and_p_value_match_scipy():
    a, b = [0.81, 0.83, 0.82], [0.84, 0.85, 0.83, 0.86]
    w = welch(a, b)
    test = stats.ttest_ind(b, a, equal_var=False)
    interval = test.confidence_interval(0.95)
    assert w["diff"] == pytest.approx(0.025)
    assert (w["low"], w["high"], w["p"]) == pytest.approx((interval.low, interval.high, test.pvalue))
    assert welch([0.8], [0.9])["p"] is None and welch([0.8], [0.9])["diff"] == pytest.approx(0.1)
    assert welch([0.5, 0.5], [0.5, 0.5])["low"] is None  # no spread: no t statistic
    assert mean_std([1.0, 3.0]) == {"n": 2, "mean": 2.0, "std": pytest.approx(2 ** 0.5)}


def test_plan_is_seed_major_and_checks_every_member_first(tmp_path):
    base = Config()
    base.run.runs_root, base.model.options = str(tmp_path), {"cell": "gru"}
    plan = plan_study(base, [("resnet20", {}), ("regnet20", {"memory": "reset"})], 2, "s")
    assert [(m.label, m.seed) for m in plan] == [("resnet20", 0), ("regnet20:memory=reset", 0),
                                                ("resnet20", 1), ("regnet20:memory=reset", 1)]
    assert plan[1].run_id == "s-regnet20-memory_reset-seed0" and plan[1].config.run.runs_root == str(tmp_path / "s")
    assert plan[0].config.model.options == {} and plan[1].config.model.options == {"cell": "gru", "memory": "reset"}
    with pytest.raises(ValueError, match="regulated_stages"):
        plan_study(base, [("resnet20", {}), ("regnet20", {"regulated_stages": [5]})], 2, "s")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("argv, words", [
    (["--seeds", "0"], "--seeds must be at least 1"),
    (["--parallel", "0"], "--parallel must be at least 1"),
    (["--model", "resnet20"], "drop --model"),
    (["--models", "resnet20:memory=reset"], "Unknown option(s) memory"),
])
def test_bad_study_input_is_one_sentence(argv, words, tmp_path, capsys):
    args = ["study", "--models", "resnet20", "--runs-root", str(tmp_path), *TINY, *argv]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and words in err, err
    assert not any(tmp_path.iterdir())


def test_a_folder_that_is_not_a_study_is_refused(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    code, _, err = run_cli(["study", "--models", "resnet20", "--name", "taken", "--runs-root", str(tmp_path), *TINY],
                           capsys)
    assert code == 2 and "is not a study folder" in err, err


def test_a_killed_study_continues_and_tabulates_every_member(tmp_path, capsys):
    args = ["study", "--models", "resnet20,regnet20:memory=reset", "--seeds", "1", "--name", "tiny",
            "--runs-root", str(tmp_path), *TINY]
    # One member at a time: the first member dies at its third atomic write (mid-run), then the study
    # itself (a fork of this process, spared an interpreter's start-up) at its third (the second member's
    # config): what a kill -9 of the whole study leaves.
    def study_whose_members_die_at_their_third_write():
        os.environ.update({**killing_env(3), "OMP_NUM_THREADS": "1"})
        cli.main(args)

    assert killed_child(3, study_whose_members_die_at_their_third_write) == -signal.SIGKILL
    folder = tmp_path / "tiny"
    first = folder / "tiny-resnet20-seed0"
    assert read_status(first)["state"] == "running" and not (folder / "tiny-regnet20-memory_reset-seed0").exists()

    args += ["--parallel", "2"]
    code, out, err = run_cli([*args, "--json", str(tmp_path / "table.json")], capsys)
    assert code == 0, err
    assert "0 finished, 1 to resume, 1 to start" in out
    assert "resumed" in (first / "train.log").read_text()
    table = json.loads((tmp_path / "table.json").read_text())
    assert [m["model"] for m in table["models"]] == ["resnet20", "regnet20:memory=reset"]
    for m in table["models"]:
        assert m["seeds"] == [0] and 0 <= m["val_top1"]["mean"] <= 1 and m["train_time_s"]["mean"] > 0
    assert table["comparisons"][0]["val_top1"]["p"] is None  # one seed each: no interval
    assert json.loads((folder / STUDY).read_text())["table"]["models"] == table["models"]
    assert study_table(folder)["models"] == table["models"]  # read back from the folder alone
    # Members are ordinary run folders, found by every run listing; the study's own files are not runs.
    runs, _ = scan_runs(tmp_path)
    assert sorted(p.name for p in runs) == ["tiny-regnet20-memory_reset-seed0", "tiny-resnet20-seed0"]
    code, out, _ = run_cli(args, capsys)  # nothing left to do: the same table again
    assert code == 0 and "2 finished, 0 to resume, 0 to start" in out
