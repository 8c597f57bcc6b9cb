"""Evaluation on a copy that holds only a test split, and Tiny-ImageNet without val/ (the Tiny-ImageNet study's final evaluation).

The fixtures are the real formats (JPEG/PNG class folders, Tiny-ImageNet's own layout), a few images each;
the run is a 1-epoch mnist_cnn on 16-pixel RGB images, trained once per module.
"""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from regnet.data import load_splits, load_test_only
from regnet.train import Config, train
from tests.test_cli import assert_one_sentence, run_cli
from tests.test_data import WNIDS, _save, _write_folder_tree, _write_tiny

CLASSES = ("cat", "dog", "fox")


def _folder_config(root, runs) -> Config:
    config = Config()
    config.model.name = "mnist_cnn"
    config.data.name, config.data.root, config.data.workers, config.data.val_ratio = "imagefolder", str(root), 0, 0.0
    config.train.epochs, config.train.batch_size = 1, 6
    config.run.runs_root = str(runs)
    return config


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A finished run trained on train/<class>/ of 16-pixel JPEG and PNG images, validated on val/."""
    base = tmp_path_factory.mktemp("folder_run")
    _write_folder_tree(base / "data", CLASSES, per_class=4, size=(16, 16), held_out="val")
    return train(_folder_config(base / "data", base / "runs"), progress=False)


def _write_test_only(root, classes=CLASSES, nested="test"):
    for c, name in enumerate(classes):
        for i in range(2):
            _save((root / nested if nested else root) / name / f"t{i}{'.png' if i else '.jpg'}", (16, 16),
                  seed=500 + 10 * c + i)


def test_the_run_records_its_class_list_and_side(folder_run):
    config = yaml_config(folder_run)
    assert config["model"]["class_names"] == list(CLASSES)
    assert config["model"]["input_side"] == 16


def yaml_config(run_dir):
    import yaml

    return yaml.safe_load((run_dir / "config.yaml").read_text())


@pytest.mark.parametrize("nested", ["test", None])
def test_eval_on_a_test_only_folder(folder_run, tmp_path, capsys, nested):
    _write_test_only(tmp_path / "copy", nested=nested)
    out_json = tmp_path / "result.json"
    code, out, err = run_cli(["eval", str(folder_run), "--split", "test", "--data-root", str(tmp_path / "copy"),
                              "--json", str(out_json)], capsys)
    assert code in (0, None), err
    result = json.loads(out_json.read_text())
    assert result["count"] == 6 and result["class_names"] == list(CLASSES)
    assert [row["support"] for row in result["per_class"]] == [2, 2, 2]
    assert "6 images" in out


def test_test_only_labels_follow_the_runs_class_order(tmp_path):
    # A copy with a subset of the classes keeps the run's indices: "fox" stays label 2.
    _write_test_only(tmp_path, classes=("fox",))
    splits = load_test_only("imagefolder", tmp_path, list(CLASSES), 16)
    assert splits.train is None and splits.val is None
    assert {label for _, label in splits.test} == {2}
    image, _ = splits.test[0]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32


def test_an_unknown_class_folder_is_one_sentence(folder_run, tmp_path, capsys):
    _write_test_only(tmp_path / "copy", classes=("cat", "wolf"))
    code, _, err = run_cli(["eval", str(folder_run), "--split", "test", "--data-root", str(tmp_path / "copy")],
                           capsys)
    assert_one_sentence(code, err, "wolf", "class list")


def test_a_full_copy_is_read_as_before(folder_run, tmp_path, capsys):
    # train/ beside test/: the ordinary loader, whose test split is the copy's test/ folder.
    _write_folder_tree(tmp_path / "full", CLASSES, per_class=2, size=(16, 16), held_out="test")
    code, out, err = run_cli(["eval", str(folder_run), "--split", "test", "--data-root", str(tmp_path / "full")],
                             capsys)
    assert code in (0, None), err
    assert "3 images" in out


def test_tiny_imagenet_without_val_carves_a_held_out_split(tmp_path):
    base = _write_tiny(tmp_path, train_wnids=WNIDS[:2], per_class=10)
    shutil.rmtree(base / "val")
    splits = load_splits("tiny_imagenet", base, val_ratio=0.0)
    assert len(splits.val) == 2 and len(splits.train) == 18 and splits.test is None
    assert "no held-out split" in splits.note and "10%" in splits.note
    assert load_splits("tiny_imagenet", _write_tiny(tmp_path / "full", WNIDS[:2]), val_ratio=0.0).note is None


def test_tiny_imagenet_config_runs_without_val_and_says_so(tmp_path):
    from regnet.train import load_config

    base = _write_tiny(tmp_path, train_wnids=WNIDS[:2], per_class=10)
    shutil.rmtree(base / "val")
    config = load_config("configs/tiny_imagenet_resnet.yaml")
    config.data.root, config.data.workers = str(base), 0
    config.train.epochs, config.train.batch_size = 1, 6
    config.model.options = {"blocks": [1, 1, 1]}
    config.run.runs_root = str(tmp_path / "runs")
    run = train(config, progress=False)
    assert "validating on 10% of the training images" in (run / "train.log").read_text()
    assert json.loads((run / "status.json").read_text())["state"] == "finished"


def test_tiny_imagenet_test_only_folder_of_wnids(tmp_path):
    # A test/<wnid>/ copy with words.txt beside it maps wnids to the run's class names.
    (tmp_path / "words.txt").write_text("n01443537\tgoldfish, Carassius auratus\n")
    _save(tmp_path / "test" / "n01443537" / "a.JPEG", (64, 64), seed=3)
    splits = load_test_only("tiny_imagenet", tmp_path, ["European fire salamander", "goldfish"], 64)
    assert [label for _, label in splits.test] == [1]
