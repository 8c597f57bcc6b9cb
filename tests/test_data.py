"""regnet.data: every loader runs on tiny fixture files written in the real on-disk formats.

No test downloads anything (missing-data cases pass download=False) and none reads ../shared.
"""
from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import datasets

from regnet.data import (
    DataError,
    ShapesDataset,
    check_data_available,
    denormalize,
    list_datasets,
    load_splits,
    stratified_split,
    stratified_subset,
)
from regnet.data.info import DatasetInfo


# ---- fixture writers: the real formats, tiny ---------------------------------------------------

def _write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file as LeCun's MNIST distribution has it: magic 0x0803 (images) or 0x0801 (labels), big-endian dims."""
    magic = 0x800 + array.ndim
    path.write_bytes(struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
                     + array.astype(np.uint8).tobytes())


def _write_mnist(root: Path, folder: str, n_train: int = 40, n_test: int = 20) -> None:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28))
        images[0] = 255  # a known image to check the normalisation against
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)


def _write_cifar10(root: Path, per_batch: int = 10) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8),
                 "labels": [i % 10 for i in range(per_batch)], "batch_label": name}
        (folder / name).write_bytes(pickle.dumps(batch))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names, "num_vis": 3072}))


def _write_cifar100(root: Path, n: int = 200) -> None:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("train", "test"):
        batch = {"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                 "fine_labels": [i % 100 for i in range(n)], "coarse_labels": [i % 20 for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"c{i}" for i in range(100)],
                                                "coarse_label_names": [f"s{i}" for i in range(20)]}))


@pytest.fixture
def data_no_cifar_md5(monkeypatch):
    """torchvision checks each CIFAR batch against the official md5 sums, which tiny fixture batches cannot match.

    Clearing the sums (check_integrity with md5=None only checks that the file exists) lets the rest of
    torchvision's real loading path, and ours, run on the fixtures.
    """
    for cls in (datasets.CIFAR10, datasets.CIFAR100):
        monkeypatch.setattr(cls, "train_list", [[name, None] for name, _ in cls.train_list])
        monkeypatch.setattr(cls, "test_list", [[name, None] for name, _ in cls.test_list])
        monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": None})


def _save(path: Path, size=(32, 32), mode="RGB", seed=0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3 if mode == "RGB" else 1))
    Image.fromarray(pixels.astype(np.uint8).squeeze(), mode).save(path)


def _write_folder_tree(root: Path, classes=("cat", "dog", "fox"), per_class: int = 6, size=(32, 32),
                       held_out: str | None = "val") -> None:
    for c, name in enumerate(classes):
        for i in range(per_class):
            suffix = ".png" if i % 2 else ".jpg"
            _save(root / "train" / name / f"{i}{suffix}", size, seed=10 * c + i)
        if held_out:
            _save(root / held_out / name / "h0.png", size, seed=100 + c)


WNIDS = ["n01443537", "n01629819", "n01641577"]


def _write_tiny(root: Path, train_wnids=WNIDS[:2], per_class: int = 5) -> Path:
    base = root / "tiny-imagenet-200"
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    (base / "words.txt").write_text("n01443537\tgoldfish, Carassius auratus\n"
                                    "n01629819\tEuropean fire salamander, Salamandra salamandra\n"
                                    "n01641577\tbullfrog, Rana catesbeiana\n")
    for c, wnid in enumerate(train_wnids):
        for i in range(per_class):
            grey = c == 0 and i == 0  # Tiny-ImageNet really has some greyscale JPEGs
            _save(base / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", (64, 64), "L" if grey else "RGB", 7 * c + i)
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t63\t63\n")
    lines = []
    for i, wnid in enumerate(WNIDS * 2):  # the absent wnid's val images must be dropped
        _save(base / "val" / "images" / f"val_{i}.JPEG", (64, 64), "L" if i == 0 else "RGB", 50 + i)
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return base


def _one_sentence(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and message.endswith((".", "?")), message
    return message


# ---- the names ---------------------------------------------------------------------------------

def test_list_datasets_is_the_contracts_list():
    assert list_datasets() == ["cifar10", "cifar100", "mnist", "fashion_mnist", "imagefolder", "tiny_imagenet",
                               "shapes"]


def test_unknown_name_suggests_close_names():
    with pytest.raises(DataError) as error:
        load_splits("cifar11")
    message = _one_sentence(error)
    assert "cifar10" in message and "'cifar11'" in message


def test_names_ignore_case_and_dashes():
    splits = load_splits("Sha-pes", size=50)
    assert splits.info.name == "shapes"


# ---- MNIST and Fashion-MNIST: real IDX files -------------------------------------------------

def test_mnist_reads_idx_files(tmp_path):
    _write_mnist(tmp_path, "MNIST")
    splits = load_splits("mnist", tmp_path, val_ratio=0.25, download=False)
    info = splits.info
    assert (info.num_classes, info.in_channels, info.image_size, info.family) == (10, 1, 28, "mnist")
    assert info.class_names == [str(d) for d in range(10)]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (30, 10, 20)
    image, label = splits.test[0]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32 and label == 0
    expected = (1.0 - 0.1307) / 0.3081  # image 0 is all 255
    assert torch.allclose(image, torch.full_like(image, expected), atol=1e-4)
    assert splits.test.targets == [i % 10 for i in range(20)]


def test_fashion_mnist_accepts_the_raw_folder_as_root(tmp_path):
    _write_mnist(tmp_path, "FashionMNIST")
    splits = load_splits("fashion_mnist", tmp_path / "FashionMNIST" / "raw", val_ratio=0, download=False)
    assert splits.info.class_names[0] == "T-shirt/top" and splits.info.mean == (0.2860,)
    assert len(splits.val) == len(splits.test) == 20  # val_ratio=0 validates on the official test split
    check_data_available("fashion_mnist", tmp_path)


def test_mnist_missing_files_say_where_they_go(tmp_path):
    with pytest.raises(DataError) as error:
        load_splits("mnist", tmp_path, download=False)
    message = _one_sentence(error)
    assert str(tmp_path / "MNIST" / "raw") in message and "train-images-idx3-ubyte.gz" in message


def test_mnist_truncated_file_is_a_data_error(tmp_path):
    _write_mnist(tmp_path, "MNIST")
    image_file = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    image_file.write_bytes(image_file.read_bytes()[:500])
    with pytest.raises(DataError, match="Could not read"):
        load_splits("mnist", tmp_path, download=False)


# ---- CIFAR: real pickle batches ------------------------------------------------------------------

def test_cifar10_reads_pickle_batches(tmp_path, data_no_cifar_md5):
    _write_cifar10(tmp_path)
    splits = load_splits("cifar10", tmp_path, val_ratio=0.2, split_seed=1, download=False)
    info = splits.info
    assert (info.num_classes, info.in_channels, info.image_size, info.family) == (10, 3, 32, "cifar")
    assert info.class_names[:2] == ["airplane", "automobile"]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (40, 10, 10)
    assert sorted(splits.val.targets) == list(range(10))  # stratified: one of each class
    image, _ = splits.val[0]
    assert image.shape == (3, 32, 32)
    assert not hasattr(splits.val, "mask")  # only shapes has object masks


def test_cifar10_image_size_override(tmp_path, data_no_cifar_md5):
    _write_cifar10(tmp_path)
    splits = load_splits("cifar10", tmp_path / "cifar-10-batches-py", download=False, image_size=48)
    assert splits.info.image_size == 48
    assert splits.train[0][0].shape == splits.val[0][0].shape == (3, 48, 48)


def test_cifar100_reads_fine_labels(tmp_path, data_no_cifar_md5):
    _write_cifar100(tmp_path)
    splits = load_splits("cifar100", tmp_path, val_ratio=0.5, download=False)
    assert splits.info.num_classes == 100 and splits.info.class_names[99] == "c99"
    assert sorted(splits.val.targets) == list(range(100))


def test_cifar_missing_batches_say_where_they_go(tmp_path):
    with pytest.raises(DataError) as error:
        load_splits("cifar10", tmp_path, download=False)
    message = _one_sentence(error)
    assert str(tmp_path / "cifar-10-batches-py") in message and "data_batch_1" in message


# ---- image folders -----------------------------------------------------------------------------

def test_imagefolder_small_images_get_cifar_treatment(tmp_path):
    _write_folder_tree(tmp_path / "pets")
    splits = load_splits("imagefolder", tmp_path / "pets", val_ratio=0.0)
    info = splits.info
    assert info.class_names == ["cat", "dog", "fox"] and info.in_channels == 3
    assert (info.family, info.image_size) == ("cifar", 32)
    assert len(splits.train) == 18 and splits.val.targets == [0, 1, 2] == splits.test.targets
    assert splits.train.targets == [0] * 6 + [1] * 6 + [2] * 6
    assert splits.train[7][0].shape == (3, 32, 32)


def test_an_image_folder_of_cifar10s_classes_is_named_cifar10_and_others_keep_their_name(tmp_path):
    from regnet.data import recognised_name
    from regnet.data.info import CIFAR10_CLASSES

    _write_folder_tree(tmp_path / "CIFAR-10-images", classes=CIFAR10_CLASSES, per_class=2, held_out=None)
    assert load_splits("imagefolder", tmp_path, val_ratio=0.5).info.name == "cifar10"
    assert recognised_name("imagefolder", ["cat", "dog", "fox"]) == "imagefolder"
    assert recognised_name("imagefolder", list(CIFAR10_CLASSES)[::-1]) == "imagefolder"  # another label order
    assert recognised_name("shapes", CIFAR10_CLASSES) == "shapes"


def test_imagefolder_finds_the_folder_inside_an_unpacked_archive(tmp_path):
    _write_folder_tree(tmp_path / "CIFAR-10-images", held_out=None)
    splits = load_splits("imagefolder", tmp_path, val_ratio=1 / 3)
    assert splits.test is None and len(splits.val) == 6 and len(splits.train) == 12


def test_imagefolder_large_images_get_imagenet_transforms(tmp_path):
    _write_folder_tree(tmp_path, classes=("a", "b"), per_class=2, size=(96, 80), held_out="test")
    _save(tmp_path / "train" / "a" / "odd.png", (70, 120), seed=5)  # sizes may differ in a folder
    splits = load_splits("imagefolder", tmp_path, val_ratio=0, image_size=64)
    assert (splits.info.family, splits.info.image_size) == ("imagenet", 64)
    assert all(splits.train[i][0].shape == (3, 64, 64) for i in range(len(splits.train)))
    assert splits.val[0][0].shape == splits.test[0][0].shape == (3, 64, 64)


def test_imagefolder_corrupt_image_is_a_data_error(tmp_path):
    _write_folder_tree(tmp_path)
    bad = tmp_path / "val" / "dog" / "h0.png"
    bad.write_bytes(b"not a png at all")
    splits = load_splits("imagefolder", tmp_path, val_ratio=0)
    assert splits.val[0][0].shape == (3, 32, 32)
    with pytest.raises(DataError) as error:
        splits.val[1]
    assert str(bad) in _one_sentence(error)


@pytest.mark.parametrize("make, fragment", [
    (lambda root: root.mkdir(), "No train/ folder"),
    (lambda root: _save(root / "train" / "x.png"), "no class folders"),
    (lambda root: (root / "train" / "cat").mkdir(parents=True), "has no images"),
    (lambda root: (_write_folder_tree(root, held_out=None), _save(root / "val" / "wolf" / "w.png")), "train/ lacks"),
])
def test_imagefolder_bad_layouts_explain_the_fix(tmp_path, make, fragment):
    root = tmp_path / "tree"
    make(root)
    with pytest.raises(DataError) as error:
        load_splits("imagefolder", root)
    assert fragment in _one_sentence(error)


def test_flat_val_folder_points_to_tiny_imagenet(tmp_path):
    _write_folder_tree(tmp_path, held_out=None)
    _save(tmp_path / "val" / "val_0.JPEG")
    with pytest.raises(DataError, match="tiny_imagenet"):
        load_splits("imagefolder", tmp_path)


# ---- Tiny-ImageNet's own layout ----------------------------------------------------------------

def test_tiny_imagenet_layout_with_a_class_subset(tmp_path):
    _write_tiny(tmp_path)
    splits = load_splits("tiny_imagenet", tmp_path, val_ratio=0.0)
    info = splits.info
    assert info.class_names == ["goldfish", "European fire salamander"]  # words.txt, present wnids only
    assert (info.num_classes, info.image_size, info.family) == (2, 64, "tiny")
    assert splits.val.targets == [0, 1, 0, 1]  # the absent third wnid's val images are dropped
    grey_train = splits.train[0][0]
    grey_val = splits.val[0][0]
    assert grey_train.shape == grey_val.shape == (3, 64, 64)


def test_tiny_imagenet_missing_annotations_are_named(tmp_path):
    base = _write_tiny(tmp_path)
    (base / "val" / "val_annotations.txt").unlink()
    with pytest.raises(DataError) as error:
        load_splits("tiny_imagenet", base)
    assert "val_annotations.txt" in _one_sentence(error)
    check_data_available("tiny_imagenet", base)


def test_tiny_imagenet_stray_folder_is_named(tmp_path):
    base = _write_tiny(tmp_path)
    _save(base / "train" / "n99999999" / "images" / "x.JPEG", (64, 64))
    with pytest.raises(DataError, match="n99999999"):
        load_splits("tiny_imagenet", tmp_path)


# ---- availability checks and general bad input ---------------------------------------------------

@pytest.mark.parametrize("name", ["cifar10", "cifar100", "mnist", "fashion_mnist", "imagefolder", "tiny_imagenet"])
def test_check_data_available_raises_for_an_empty_dir(tmp_path, name):
    with pytest.raises(DataError) as error:
        check_data_available(name, tmp_path)
    assert str(tmp_path) in _one_sentence(error)
    assert list(tmp_path.iterdir()) == []  # it looked, and neither downloaded nor created anything


@pytest.mark.parametrize("name", ["cifar10", "imagefolder", "tiny_imagenet", "mnist"])
def test_missing_root_is_named(tmp_path, name):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as error:
        load_splits(name, missing, download=False)
    assert str(missing) in _one_sentence(error) and "does not exist" in str(error.value)


def test_check_data_available_passes_on_fixtures(tmp_path, data_no_cifar_md5):
    _write_cifar10(tmp_path)
    _write_mnist(tmp_path, "MNIST")
    _write_folder_tree(tmp_path / "tree")
    for name, root in (("cifar10", tmp_path), ("mnist", tmp_path), ("imagefolder", tmp_path / "tree"),
                       ("shapes", tmp_path / "anything")):
        assert check_data_available(name, root) is None


@pytest.mark.parametrize("kwargs, fragment", [
    ({"val_ratio": 1.0}, "val_ratio"),
    ({"val_ratio": -0.1}, "val_ratio"),
    ({"image_size": 4}, "image_size"),
    ({"image_size": 32.5}, "image_size"),
    ({"size": 5}, "size=5"),
])
def test_bad_arguments_are_data_errors(kwargs, fragment):
    with pytest.raises(DataError) as error:
        load_splits("shapes", **{"size": 50, **kwargs})
    assert fragment in _one_sentence(error)


def test_val_ratio_zero_without_held_out_split(tmp_path):
    _write_folder_tree(tmp_path, held_out=None)
    with pytest.raises(DataError) as error:
        load_splits("imagefolder", tmp_path, val_ratio=0)
    assert "val_ratio > 0" in _one_sentence(error)


# ---- splits --------------------------------------------------------------------------------------

def test_stratified_split_is_stratified_and_reproducible():
    targets = [0] * 50 + [1] * 30 + [2] * 20
    train, val = stratified_split(targets, 0.2, seed=0)
    assert sorted(train + val) == list(range(100)) and not set(train) & set(val)
    assert [sum(targets[i] == c for i in val) for c in range(3)] == [10, 6, 4]
    assert stratified_split(targets, 0.2, seed=0) == (train, val)
    assert stratified_split(targets, 0.2, seed=1)[1] != val


@pytest.mark.parametrize("ratio, which", [(0.1, "validation"), (0.9, "training")])
def test_stratified_split_refuses_an_empty_side(ratio, which):
    with pytest.raises(DataError, match=f"{which} split empty"):
        stratified_split([0, 1, 2], ratio, seed=0)


def test_load_splits_split_depends_on_split_seed_only():
    a = load_splits("shapes", size=200, split_seed=0)
    b = load_splits("shapes", size=200, split_seed=0)
    c = load_splits("shapes", size=200, split_seed=1)
    assert a.val.indices == b.val.indices and a.val.indices != c.val.indices
    assert sorted(a.val.targets) == sorted(c.val.targets) == sorted(list(range(10)) * 2)


# ---- transforms ----------------------------------------------------------------------------------

def test_train_is_augmented_and_val_is_deterministic():
    splits = load_splits("shapes", size=100, val_ratio=0.5)
    torch.manual_seed(0)
    assert torch.equal(splits.val[3][0], splits.val[3][0])
    train_views = [splits.train[3][0] for _ in range(8)]
    assert any(not torch.equal(train_views[0], view) for view in train_views[1:])
    plain = load_splits("shapes", size=100, val_ratio=0.5, augment=False)
    base_index = plain.train.indices[3]
    expected = (plain.train.base.images[base_index].float() / 255 - torch.tensor(plain.info.mean)[:, None, None]) \
        / torch.tensor(plain.info.std)[:, None, None]
    assert torch.allclose(plain.train[3][0], expected, atol=1e-5)


def test_color_jitter_only_when_asked():
    names = [type(t).__name__ for t in load_splits("shapes", size=50, color_jitter=True).train.transform.transforms]
    plain = [type(t).__name__ for t in load_splits("shapes", size=50).train.transform.transforms]
    assert "ColorJitter" in names and "ColorJitter" not in plain


def test_denormalize_inverts_the_normalisation():
    info = DatasetInfo("x", 10, 3, 4, [], (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), "cifar")
    original = torch.rand(2, 3, 4, 4)
    normalised = (original - torch.tensor(info.mean)[:, None, None]) / torch.tensor(info.std)[:, None, None]
    assert torch.allclose(denormalize(normalised, info), original, atol=1e-6)
    assert denormalize(normalised[0] * 100, info).max() <= 1.0


# ---- shapes --------------------------------------------------------------------------------------

def test_shapes_are_deterministic_per_seed_and_balanced():
    a, b, c = ShapesDataset(200, seed=3), ShapesDataset(200, seed=3), ShapesDataset(200, seed=4)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks) and a.targets == b.targets
    assert not torch.equal(a.images, c.images)
    assert torch.bincount(torch.tensor(a.targets)).tolist() == [20] * 10
    assert a.images.dtype == torch.uint8 and a.images.shape == (200, 3, 32, 32)


def test_shape_masks_cover_the_object():
    data = ShapesDataset(200, seed=0)
    images = data.images.float() / 255
    contrasts, flatter = [], []
    for i in range(len(data)):
        mask = data.mask(i)
        assert mask.shape == (32, 32) and mask.dtype == torch.bool and mask.sum() > 50
        inside, outside = images[i][:, mask], images[i][:, ~mask]
        # The object is one flat colour; the background around it is textured and cluttered.
        flatter.append(inside.std(dim=1).mean() < outside.std(dim=1).mean())
        contrasts.append((inside.median(dim=1).values - outside.median(dim=1).values).abs().max())
    contrasts = torch.stack(contrasts)
    assert contrasts.min() > 0.1 and (contrasts > 0.2).float().mean() > 0.9
    assert sum(flatter) >= 0.95 * len(data)


def test_split_masks_follow_the_split_index():
    splits = load_splits("shapes", size=100)
    for i in (0, 5):
        assert torch.equal(splits.val.mask(i), splits.val.base.mask(splits.val.indices[i]))
    assert splits.test.mask(0).shape == (32, 32)
    assert splits.info.class_names[0] == "circle" and splits.info.num_classes == 10


def test_shapes_statistics_match_the_fixed_normalisation():
    data = ShapesDataset(1000, seed=0)
    pixels = data.images.float() / 255
    info = load_splits("shapes", size=20, val_ratio=0.5).info
    assert torch.allclose(pixels.mean(dim=(0, 2, 3)), torch.tensor(info.mean), atol=0.02)
    assert torch.allclose(pixels.std(dim=(0, 2, 3)), torch.tensor(info.std), atol=0.02)


def test_shapes_image_size_generates_at_that_size():
    splits = load_splits("shapes", size=50, image_size=48)
    assert splits.info.image_size == 48 and splits.val[0][0].shape == (3, 48, 48)
    assert splits.val.mask(0).shape == (48, 48)


def test_size_is_a_seeded_stratified_subset_of_any_data_set(tmp_path):
    # 40 cat, 20 dog, 20 fox images on disk; data.size=20 keeps their 2:1:1 shares, then val is carved from those.
    _write_folder_tree(tmp_path, per_class=0, held_out="val")
    for c, (name, count) in enumerate((("cat", 40), ("dog", 20), ("fox", 20))):
        for i in range(count):
            _save(tmp_path / "train" / name / f"{i}.png", (8, 8), seed=100 * c + i)
    whole = load_splits("imagefolder", tmp_path, val_ratio=0.1, split_seed=0)
    assert (len(whole.train), len(whole.val)) == (72, 8)
    cut = load_splits("imagefolder", tmp_path, val_ratio=0.1, split_seed=0, size=20)
    assert (len(cut.train), len(cut.val), len(cut.test)) == (17, 3, 3)  # the held-out test split is never cut
    used = cut.train.indices + cut.val.indices
    assert len(set(used)) == 20 and [(cut.train.targets + cut.val.targets).count(k) for k in range(3)] == [10, 5, 5]
    again = load_splits("imagefolder", tmp_path, val_ratio=0.1, split_seed=0, size=20)
    assert (again.train.indices, again.val.indices) == (cut.train.indices, cut.val.indices)
    assert sorted(load_splits("imagefolder", tmp_path, val_ratio=0.1, split_seed=1, size=20).train.indices) != \
        sorted(cut.train.indices)
    everything = load_splits("imagefolder", tmp_path, val_ratio=0.1, size=500)
    assert len(everything.train) == 72 and "data.size 500 is more than the 80 training images" in everything.note
    with pytest.raises(DataError, match="data.size must be between 3 .one image per class. and 80"):
        load_splits("imagefolder", tmp_path, size=2)


def test_stratified_subset_takes_exactly_size_by_largest_remainder():
    targets = [0] * 50 + [1] * 30 + [2] * 20
    for size in (3, 10, 11, 99):
        subset = stratified_subset(targets, size, seed=0)
        assert len(subset) == size == len(set(subset)) and subset == sorted(subset)
    assert [[targets[i] for i in stratified_subset(targets, 11, seed=0)].count(k) for k in range(3)] == [6, 3, 2]
