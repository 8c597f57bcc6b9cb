"""Each damaged-file case of issue 11, through the CLI: one sentence (or a skipped, counted line), never a traceback.

The same folders are read by the dashboard in test_dashboard_contract.py.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from regnet.train import cli
from regnet.runs import read_all_metrics, read_metrics
from regnet.train.checkpoint import save_checkpoint
from regnet.train.runfolder import RunFolder
from test_dashboard_fixtures import write_run


def damaged_runs_root(root: Path) -> dict[str, Path]:
    """A runs root holding one run per damage the fault probe found, beside a sound one."""
    runs = {name: write_run(root, name, state="stopped", started_at=1_700_000_000.0 + i)
            for i, name in enumerate(["sound", "status-list", "status-fifo", "metrics-list-line", "metrics-utf8",
                                      "metrics-dir", "metrics-zero", "no-optimizer", "dead"])}
    (runs["status-list"] / "status.json").write_text("[1, 2]")
    (runs["status-fifo"] / "status.json").unlink()
    os.mkfifo(runs["status-fifo"] / "status.json")
    with open(runs["metrics-list-line"] / "metrics.jsonl", "a") as handle:
        handle.write("[1, 2]\n")
    with open(runs["metrics-utf8"] / "metrics.jsonl", "ab") as handle:
        handle.write(b'{"kind": "epoch", "val_top1": "\xff"}\n')
    (runs["metrics-dir"] / "metrics.jsonl").unlink()
    (runs["metrics-dir"] / "metrics.jsonl").mkdir()
    (runs["metrics-zero"] / "metrics.jsonl").unlink()
    os.symlink("/dev/zero", runs["metrics-zero"] / "metrics.jsonl")
    (runs["no-optimizer"] / "checkpoints").mkdir()
    save_checkpoint({"model": {"w": torch.zeros(1)}, "epoch": 1}, runs["no-optimizer"] / "checkpoints" / "last.pt")
    status = json.loads((runs["dead"] / "status.json").read_text())
    (runs["dead"] / "status.json").write_text(json.dumps({**status, "state": "running", "pid": 2**22 + 12345}))
    return runs


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def one_sentence(code: int, err: str, *words: str) -> None:
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and "unexpected" not in err
    for word in words:
        assert word in err, err


def test_compare_lists_every_run_and_says_what_is_damaged(tmp_path, capsys):
    runs = damaged_runs_root(tmp_path)
    code, out, err = run_cli(["compare", "--runs-root", str(tmp_path)], capsys)
    assert code == 0, err
    rows = {line.split()[0]: line for line in out.splitlines()[1:] if line and not line.startswith(("(", "note"))}
    assert set(rows) == set(runs)
    assert "died" in rows["dead"] and "stopped" in rows["sound"]
    notes = "\n".join(line for line in out.splitlines() if line.startswith("note:"))
    assert "status-list: " in notes and "holds a JSON list" in notes
    assert "status-fifo: " in notes and "not a regular file" in notes
    assert "metrics-list-line: skipped 1 damaged line" in notes and "metrics-utf8: skipped 1 damaged line" in notes
    assert "metrics-dir: " in notes and "metrics-zero: " in notes and "sound:" not in notes


@pytest.mark.parametrize("run, words", [
    ("status-list", ["holds a JSON list", "status.json", "no ", "last.pt to rebuild it from", "delete"]),
    ("status-fifo", ["not a regular file", "resume again to start the run over"]),
    ("no-optimizer", ["has no optimizer", "cannot be resumed"]),
])
def test_resume_of_a_damaged_run_is_one_sentence(tmp_path, capsys, run, words):
    runs = damaged_runs_root(tmp_path)
    code, _, err = run_cli(["train", "--resume", str(runs[run]), "--device", "cpu"], capsys)
    one_sentence(code, err, *words)


def test_resume_drops_damaged_metric_lines_and_refuses_a_metrics_folder(tmp_path):
    runs = damaged_runs_root(tmp_path)
    for name in ("metrics-list-line", "metrics-utf8"):
        folder = RunFolder(runs[name])
        folder.truncate_metrics(after_step=4)
        assert [r["step"] for r in read_metrics(runs[name])] == [1, 2, 3, 4, 4]  # epoch 1's lines, nothing damaged
        assert read_all_metrics(runs[name]).damaged == 0
    with pytest.raises(ValueError, match="metrics.jsonl is a folder"):
        RunFolder(runs["metrics-dir"]).truncate_metrics(after_step=4)


def test_eval_of_a_fifo_config_is_one_sentence_not_a_hang(tmp_path, capsys):
    runs = damaged_runs_root(tmp_path)
    (runs["sound"] / "config.yaml").unlink()
    os.mkfifo(runs["sound"] / "config.yaml")
    code, _, err = run_cli(["eval", str(runs["sound"])], capsys)
    one_sentence(code, err, "config.yaml", "not a regular file")


def test_the_cli_refuses_run_ids_the_dashboard_could_not_list(tmp_path, capsys):
    for bad in ("my run", "_x", "lr=0.1"):
        code, _, err = run_cli(["train", "--runs-root", str(tmp_path), "--run-id", bad, "--epochs", "1"], capsys)
        one_sentence(code, err, "is not allowed")
    assert not any(tmp_path.iterdir())
