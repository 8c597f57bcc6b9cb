"""``python -m regnet``: bad input is one sentence and exit code 2; the tools (sanity, lr-find, grid) work."""
from __future__ import annotations

import json
import pytest
import torch

from regnet.train import cli
from regnet.train.grid import split_values
from regnet.train.runfolder import read_status


TINY = ["--set", "data.size=200", "--set", "data.workers=0", "--batch-size", "30"]


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def assert_one_sentence(code: int, err: str, *words: str) -> None:
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err


@pytest.mark.parametrize("argv, words", [
    (["--model", "resnet21"], ["Unknown model 'resnet21'", "resnet20"]),
    (["--dataset", "cifar11"], ["Unknown data set 'cifar11'", "cifar10"]),
    (["--model", "regnet20", "--set", "model.options.cel=gru"], ["Unknown option(s) cel", "cell"]),
    (["--model", "regnet20", "--set", "model.options.cell=lstn"], ["cell='lstn' is not valid"]),
    (["--model", "resnet20", "--set", "model.options.cell=gru"], ["Unknown option(s) cell"]),
    (["--model", "resnet20", "--set", "model.options.memory=reset"], ["Unknown option(s) memory"]),
    (["--model", "regnet20", "--set", "model.options.sharing=layer"], ["sharing='layer' is not valid", "block"]),
    (["--model", "regnet20", "--set", "model.options.shortcut=C"], ["shortcut='C' is not valid"]),
    (["--model", "regnet20", "--set", "model.options.regulated_stages=[1,4]"],
     ["names stage(s) [4]", "its stages are 1, 2, 3"]),
    (["--model", "regnet18", "--set", "model.options.shortcut=B"], ["Unknown option(s) shortcut"]),
    (["--set", "train.epochs=ten"], ["train.epochs must be a whole number, got 'ten'"]),
    (["--set", "optim.lr=0"], ["optim.lr must be greater than 0, got 0."]),
    (["--lr", "0"], ["optim.lr must be greater than 0, got 0.0."]),
    (["--set", "data.val_ratio=1"], ["data.val_ratio must be less than 1, got 1."]),
    (["--set", "optim.lr"], ["not of the form KEY=VALUE"]),
    (["--set", "train.early_stop_metric=accuracy"], ["train.early_stop_metric must be 'val_top1', 'val_top5', 'val_macro_f1' or 'val_loss', got 'accuracy'"]),
    (["--device", "cuda:0"] if not torch.cuda.is_available() else ["--device", "tpu"], ["device"]),
    (["--config", "missing.yaml"], ["Config file missing.yaml does not exist"]),
])
def test_bad_train_input_is_one_sentence_and_no_run_folder(argv, words, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["train", "--runs-root", str(tmp_path / "runs"), *argv, *TINY], capsys)
    assert_one_sentence(code, err, *words)
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_a_config_file_with_a_wrong_type(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  name: resnet20\ntrain:\n  batch_size: [32]\n")
    code, _, err = run_cli(["train", "--config", str(path)], capsys)
    assert_one_sentence(code, err, "train.batch_size must be a whole number, got [32].")


def test_a_data_root_without_the_data(tmp_path, capsys):
    code, _, err = run_cli(["train", "--dataset", "mnist", "--data-root", str(tmp_path / "nowhere"),
                            "--runs-root", str(tmp_path / "runs")], capsys)
    assert_one_sentence(code, err, "Data root", "does not exist")
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(["train", "--dataset", "tiny_imagenet", "--model", "tiny_resnet", "--data-root",
                            str(tmp_path / "empty"), "--runs-root", str(tmp_path / "runs")], capsys)
    assert_one_sentence(code, err, "No Tiny-ImageNet in", "tiny-imagenet-200")
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_resume_refuses_other_options_and_non_runs(tmp_path, capsys):
    code, _, err = run_cli(["train", "--resume", str(tmp_path), "--epochs", "3"], capsys)
    assert_one_sentence(code, err, "--resume continues a run with its own config.yaml", "--epochs")
    code, _, err = run_cli(["train", "--resume", str(tmp_path)], capsys)
    assert_one_sentence(code, err, "is not a run folder")


def test_eval_and_compare_of_nothing(tmp_path, capsys):
    code, _, err = run_cli(["eval", str(tmp_path / "nope")], capsys)
    assert_one_sentence(code, err, "is not a run folder")
    code, _, err = run_cli(["compare", "--runs-root", str(tmp_path / "nope")], capsys)
    assert_one_sentence(code, err, "does not exist")


def test_sanity_on_cifar10_shaped_random_data(capsys):
    code, out, _ = run_cli(["sanity", "--model", "regnet20", "--synthetic"], capsys)
    assert code == 0, out
    assert "3x32x32, 10 classes" in out and "no data read" in out
    assert "ln(10) = 2.3026" in out and "all checks passed" in out
    lines = {line.split("  ")[0]: line for line in out.splitlines()}
    assert lines["initial loss"].rstrip().endswith("ok")
    assert "overfit one batch (16 images)" in out and "majority-class baseline" in out


def test_sanity_on_data_that_is_not_there_suggests_synthetic(tmp_path, capsys):
    code, _, err = run_cli(["sanity", "--model", "resnet20", "--dataset", "cifar10", "--data-root",
                            str(tmp_path / "nowhere")], capsys)
    assert_one_sentence(code, err, "does not exist", "--synthetic")


def test_lr_find_writes_the_curve_and_a_suggestion(tmp_path, capsys):
    out_dir = tmp_path / "lr"
    code, out, _ = run_cli(["lr-find", "--model", "mnist_cnn", "--dataset", "shapes", *TINY, "--steps", "12",
                            "--min-lr", "1e-4", "--max-lr", "1", "--out", str(out_dir)], capsys)
    assert code == 0 and out.strip().splitlines()[-1] == str(out_dir)
    result = json.loads((out_dir / "lr_find.json").read_text())
    assert 1e-5 <= result["suggested_lr"] <= 1 and len(result["lrs"]) == len(result["losses"]) <= 12
    assert result["lrs"] == sorted(result["lrs"]) and result["lrs"][0] == pytest.approx(1e-4)
    rows = (out_dir / "lr_find.csv").read_text().splitlines()
    assert rows[0] == "lr,loss,smoothed_loss" and len(rows) == len(result["lrs"]) + 1
    assert "suggested LR" in out


def test_grid_runs_every_combination_and_ranks_them(tmp_path, capsys):
    code, out, _ = run_cli(["grid", "--model", "mnist_cnn", "--dataset", "shapes", *TINY, "--epochs", "1",
                            "--runs-root", str(tmp_path), "--grid-id", "g", "--set", "optim.name=adam",
                            "--grid", "optim.lr=0.001,0.0001", "--grid", "train.label_smoothing=0.0,0.1"], capsys)
    assert code == 0, out
    runs = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("g-"))
    assert runs == ["g-01-lr_0.001-label_smoothing_0.0", "g-02-lr_0.001-label_smoothing_0.1",
                    "g-03-lr_0.0001-label_smoothing_0.0", "g-04-lr_0.0001-label_smoothing_0.1"]
    assert all(read_status(tmp_path / r)["state"] == "finished" for r in runs)
    summary = json.loads((tmp_path / "grids" / "g.json").read_text())
    values = [row["best_value"] for row in summary["ranking"]]
    assert values == sorted(values, reverse=True) and len(values) == 4
    assert "optim.lr=0.001" in out and "(ranked by best val_top1)" in out


def test_grid_checks_every_combination_before_running(tmp_path, capsys):
    code, _, err = run_cli(["grid", "--model", "regnet20", "--runs-root", str(tmp_path), "--grid",
                            "model.options.cell=lstm,gru,lsmt"], capsys)
    assert_one_sentence(code, err, "cell='lsmt' is not valid")
    assert not list(tmp_path.iterdir())


def test_grid_values_split_outside_brackets():
    assert split_values("0.1,0.05") == ["0.1", "0.05"]
    assert split_values("[0.5, 0.75],[0.3,0.6]") == ["[0.5, 0.75]", "[0.3,0.6]"]


def test_data_size_cuts_every_data_set_not_only_shapes(tmp_path, capsys):
    # An image folder the test writes: 3 classes of 10 images; data.size=15 trains on 12 and validates on 3.
    from PIL import Image

    for c, name in enumerate(("cat", "dog", "fox")):
        (tmp_path / "data" / "train" / name).mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (32, 32), (25 * c, 10 * i, 0)).save(tmp_path / "data" / "train" / name / f"{i}.png")
    code, out, err = run_cli(["train", "--model", "mnist_cnn", "--dataset", "imagefolder", "--data-root",
                              str(tmp_path / "data"), "--runs-root", str(tmp_path / "runs"), "--run-id", "cut",
                              "--epochs", "1", "--batch-size", "6", "--set", "data.size=15",
                              "--set", "data.workers=0"], capsys)
    assert code == 0, err
    log = (tmp_path / "runs" / "cut" / "train.log").read_text()
    assert "12 train / 3 val images" in log and "2 steps per epoch" in log


def test_a_ready_config_with_a_value_out_of_range(tmp_path, capsys):
    path = tmp_path / "zero_lr.yaml"
    path.write_text("model:\n  name: resnet20\noptim:\n  lr: 0\n")
    code, _, err = run_cli(["train", "--config", str(path), "--runs-root", str(tmp_path / "runs")], capsys)
    assert_one_sentence(code, err, "optim.lr must be greater than 0, got 0.")
    assert not (tmp_path / "runs").exists()


def test_config_takes_a_ready_config_by_name_from_any_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no configs/ here: the name is looked up where regnet.shipped finds them
    args = cli.build_parser().parse_args(["train", "--config", "shapes_regnet20", "--epochs", "1"])
    config = cli.config_from_args(args)
    assert (config.model.name, config.data.name, config.train.epochs) == ("regnet20", "shapes", 1)
    assert config.model.options["cell"] == "lstm"  # the ready config's, not the defaults'
    code, _, err = run_cli(["train", "--config", "shapes_regnet_20"], capsys)
    assert_one_sentence(code, err, "no ready config of that name", "shapes_regnet20")
    assert not (tmp_path / "runs").exists()


def test_train_refuses_a_bad_tag_and_tags_on_a_resume_in_one_sentence(tmp_path, capsys):
    code, _, err = run_cli(["train", "--dataset", "shapes", "--runs-root", str(tmp_path), "--tag", "ok",
                            "--tag", "no!", *TINY], capsys)
    assert_one_sentence(code, err, "Tag 'no!' is not allowed")
    assert not list(tmp_path.iterdir())  # refused before any run folder exists
    code, _, err = run_cli(["train", "--resume", str(tmp_path / "x"), "--tag", "ok", "--note", "n"], capsys)
    assert_one_sentence(code, err, "drop --note, --tag", "Runs page")
