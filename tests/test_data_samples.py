"""Shipped validation samples: bench/ship_samples.py writes them, regnet.data.load_sample_split reads them back.

The fixture is a tiny image-folder tree of real JPEG files and a run folder whose config points at it,
so every check compares the samples with the run's real validation split built by ``load_splits``.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.ship_samples import choose, sample_top1, write_samples
from regnet.data import SAMPLES_DIR, DataError, has_samples, load_sample_split
from regnet.models import build_model
from regnet.train.build import load_data
from regnet.train.checkpoint import save_checkpoint
from regnet.train.config import Config, config_to_dict, save_config
from regnet.train.evaluate import load_run_config

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("cat", "dog", "fox")
PER_CLASS = 3
CREDIT = "Fixture images, drawn at random for this test."


def _write_tree(root: Path, per_class: int = 12) -> None:
    """train/<class>/NNNN.jpg; the last class is 36 px so the evaluation transform's resize is exercised."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        side = 36 if c == len(CLASSES) - 1 else 32
        (root / "train" / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(side, side, 3)).astype(np.uint8)
            Image.fromarray(pixels).save(root / "train" / name / f"{i:04d}.jpg", quality=75)


@pytest.fixture
def run(tmp_path) -> Path:
    """A shipped-style run folder (untrained resnet20) whose config's data is the fixture tree."""
    _write_tree(tmp_path / "tree")
    config = Config()
    config.model.name, config.model.num_classes, config.model.in_channels = "resnet20", len(CLASSES), 3
    config.data.name, config.data.root = "imagefolder", str(tmp_path / "tree")
    config.data.val_ratio, config.data.split_seed = 0.5, 3
    folder = tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    save_config(config, folder / "config.yaml")
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=len(CLASSES))
    save_checkpoint({"model": model.state_dict(), "config": config_to_dict(config), "metrics": {}},
                    folder / "checkpoints" / "best.pt")
    return folder


def _ship(run: Path, **kwargs) -> dict:
    root = load_run_config(run).data.root
    return write_samples(run, root, title="Fixture", credit=CREDIT, per_class=PER_CLASS, **kwargs)


def _real_splits(run: Path):
    return load_data(load_run_config(run), augment=False)


def _one_sentence(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and message.endswith("."), message
    return message


def test_shipping_copies_per_class_validation_images_byte_for_byte(run):
    manifest = _ship(run)
    real = _real_splits(run)
    samples = run / SAMPLES_DIR
    written = sorted(p.relative_to(samples).as_posix() for p in samples.rglob("*.jpg"))
    assert written == sorted(entry["file"] for entry in manifest["images"])
    for c, name in enumerate(CLASSES):
        assert len(list((samples / name).iterdir())) == PER_CLASS
    for entry in manifest["images"]:
        assert entry["index"] in real.val.indices  # validation images only, never training ones
        source, label = real.val.base.samples[entry["index"]]
        assert entry["file"] == f"{CLASSES[label]}/{entry['index']:05d}.jpg" and entry["label"] == label
        assert (samples / entry["file"]).read_bytes() == Path(source).read_bytes()
        assert entry["source_file"] == Path(source).relative_to(load_run_config(run).data.root).as_posix()


def test_manifest_records_the_data_set_the_split_rule_and_the_credit(run):
    _ship(run)
    manifest = json.loads((run / SAMPLES_DIR / "manifest.json").read_text())
    info = _real_splits(run).info
    assert manifest["info"] == {"name": "imagefolder", "num_classes": 3, "in_channels": 3, "image_size": 32,
                                "class_names": list(CLASSES), "mean": list(info.mean), "std": list(info.std),
                                "family": "cifar"}
    source = manifest["source"]
    assert (source["split"], source["val_ratio"], source["split_seed"]) == ("validation split", 0.5, 3)
    assert (source["dataset"], source["split_size"], source["per_class"], source["sample_seed"]) == ("Fixture", 18,
                                                                                                     PER_CLASS, 0)
    assert manifest["count"] == len(manifest["images"]) == PER_CLASS * len(CLASSES)
    assert manifest["credit"] == CREDIT
    assert [e["index"] for e in manifest["images"]] == sorted(e["index"] for e in manifest["images"])


def test_sample_split_yields_what_the_validation_split_yields(run):
    manifest = _ship(run)
    real = _real_splits(run)
    split, info = load_sample_split(run / SAMPLES_DIR)
    assert info == real.info
    assert split.targets == [e["label"] for e in manifest["images"]] and len(split) == manifest["count"]
    for i, entry in enumerate(manifest["images"]):
        image, label = split[i]
        expected, expected_label = real.val[real.val.indices.index(entry["index"])]
        assert image.shape == (3, 32, 32) and torch.equal(image, expected) and label == expected_label


def test_the_choice_is_seeded_and_stratified(run):
    val = _real_splits(run).val
    first = choose(val, len(CLASSES), PER_CLASS, seed=0)
    assert first == choose(val, len(CLASSES), PER_CLASS, seed=0)
    assert any(choose(val, len(CLASSES), PER_CLASS, seed=s) != first for s in range(1, 5))
    labels = [val.base.targets[i] for i in first]
    assert [labels.count(c) for c in range(len(CLASSES))] == [PER_CLASS] * len(CLASSES)
    with pytest.raises(ValueError, match="fewer than --per-class 7"):
        choose(val, len(CLASSES), 7, seed=0)  # each class has 6 validation images


def test_reshipping_replaces_the_old_samples(run):
    _ship(run)
    (run / SAMPLES_DIR / "cat" / "stale.jpg").write_bytes(b"old")
    _ship(run, seed=1)
    assert not (run / SAMPLES_DIR / "cat" / "stale.jpg").exists()
    assert json.loads((run / SAMPLES_DIR / "manifest.json").read_text())["source"]["sample_seed"] == 1


def test_sample_top1_is_the_models_accuracy_on_its_samples(run):
    manifest = _ship(run)
    real = _real_splits(run)
    model = build_model("resnet20", num_classes=len(CLASSES))
    model.load_state_dict(torch.load(run / "checkpoints" / "best.pt", weights_only=True)["model"])
    model.eval()
    items = [real.val[real.val.indices.index(e["index"])] for e in manifest["images"]]
    with torch.no_grad():
        predicted = model(torch.stack([x for x, _ in items])).argmax(1)
    expected = (predicted == torch.tensor([y for _, y in items])).float().mean().item()
    assert sample_top1(run) == pytest.approx(expected)


def test_has_samples(run):
    assert not has_samples(run)
    _ship(run)
    assert has_samples(run) and not has_samples(run / "checkpoints")


def _edit_manifest(samples: Path, change) -> None:
    path = samples / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def _first_entry(manifest: dict) -> dict:
    return manifest["images"][0]


BAD_SAMPLES = {
    "no manifest": (lambda s: (s / "manifest.json").unlink(), "has no manifest.json, so its images have no labels"),
    "not JSON": (lambda s: (s / "manifest.json").write_text("{truncated"), "not readable JSON"),
    "not an object": (lambda s: (s / "manifest.json").write_text("[]"), "not a JSON object"),
    "unknown format": (lambda s: _edit_manifest(s, lambda m: m.update(format=2)), "format 2, expected 1"),
    "no info": (lambda s: _edit_manifest(s, lambda m: m.pop("info")), "'info' needs the keys"),
    "too few class names": (lambda s: _edit_manifest(s, lambda m: m["info"]["class_names"].pop()),
                            "'class_names' must be num_classes distinct names"),
    "short mean": (lambda s: _edit_manifest(s, lambda m: m["info"]["mean"].pop()), "'mean' and 'std' need"),
    "unknown family": (lambda s: _edit_manifest(s, lambda m: m["info"].update(family="audio")),
                       "Unknown transform family"),
    "wrong count": (lambda s: _edit_manifest(s, lambda m: m.update(count=1)), "'count' entries"),
    "label out of range": (lambda s: _edit_manifest(s, lambda m: _first_entry(m).update(label=3)),
                           "is not {'file': '<class>/<name>', 'label': <its index>}"),
    "file in another class": (lambda s: _edit_manifest(s, lambda m: _first_entry(m).update(label=1)),
                              "is not {'file': '<class>/<name>'"),
    "path outside the folder": (lambda s: _edit_manifest(s, lambda m: _first_entry(m).update(file="../config.yaml")),
                                "is not {'file': '<class>/<name>'"),
    "unknown class folder": (lambda s: shutil.copytree(s / "cat", s / "wolf"),
                             "has class folder(s) wolf that its manifest.json does not list"),
    "missing image": (lambda s: next((s / "dog").iterdir()).unlink(), "lacks 1 image(s) its manifest.json lists"),
}


@pytest.mark.parametrize("case", list(BAD_SAMPLES))
def test_bad_samples_folders_are_one_sentence(run, case):
    _ship(run)
    damage, fragment = BAD_SAMPLES[case]
    damage(run / SAMPLES_DIR)
    with pytest.raises(DataError) as error:
        load_sample_split(run / SAMPLES_DIR)
    assert fragment in _one_sentence(error)


def test_a_run_validating_on_a_held_out_split_is_refused(run):
    config = load_run_config(run)
    config.data.val_ratio = 0.0
    save_config(config, run / "config.yaml")
    with pytest.raises(ValueError, match="val_ratio 0"):
        _ship(run)


@pytest.mark.parametrize("name", ["cifar10-regnet20", "cifar10-resnet20"])
def test_the_shipped_cifar_checkpoints_carry_200_labelled_validation_images(name):
    folder = REPO / "checkpoints" / name
    assert has_samples(folder)
    split, info = load_sample_split(folder / SAMPLES_DIR)
    assert info.class_names == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                                "truck"]
    assert (info.name, info.family, info.image_size, info.in_channels) == ("cifar10", "cifar", 32, 3)
    assert len(split) == 200 and [split.targets.count(c) for c in range(10)] == [20] * 10
    image, label = split[len(split) - 1]
    assert image.shape == (3, 32, 32) and label == 9
    manifest = json.loads((folder / SAMPLES_DIR / "manifest.json").read_text())
    config = load_run_config(folder)
    assert (manifest["source"]["val_ratio"], manifest["source"]["split_seed"]) == (config.data.val_ratio,
                                                                                    config.data.split_seed)
    assert manifest["source"]["split_size"] == 5000 and "Krizhevsky" in manifest["credit"]
    assert sum(p.stat().st_size for p in (folder / SAMPLES_DIR).rglob("*") if p.is_file()) < 1_000_000


def test_the_runs_listing_names_the_shipped_cifar_runs_cifar10_and_its_filter_finds_them(tmp_path):
    from regnet.dashboard.run_listing import RunFilter, discover_runs, filter_runs

    runs = discover_runs(tmp_path / "runs", REPO / "checkpoints")
    found = [run.key for run in filter_runs(runs, RunFilter(datasets=("cifar10",)))]
    assert sorted(found) == ["shipped/cifar10-regnet20", "shipped/cifar10-resnet20"]
    assert not filter_runs(runs, RunFilter(datasets=("imagefolder",)))


def test_inspect_uses_the_whole_split_when_the_data_is_there_and_the_sample_when_it_is_not(run, tmp_path):
    from regnet.dashboard import inspect_cache

    _ship(run)
    root = load_run_config(run).data.root
    whole = inspect_cache.images_of(str(run), root)
    assert not whole.sample and len(whole.val) == len(_real_splits(run).val)
    missing = inspect_cache.images_of(str(run), str(tmp_path / "nowhere"))
    assert missing.sample and len(missing.val) == PER_CLASS * len(CLASSES)
    assert "shipped sample of 9 validation images" in missing.description
