"""Data sets by name: ``load_splits`` turns a name and a root into train/val/test splits plus a DatasetInfo.

One entry per data set maps its name to a loader (what the files are) and a checker (are they
there, without reading or downloading them, for the dashboard's pre-launch check); the splitting
and the transforms are the same code for every data set.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

from torchvision import datasets

from .errors import DataError
from .folders import (check_imagefolder, check_tiny_imagenet, held_out_tree, image_regime, load_held_out,
                      load_imagefolder, load_tiny_imagenet)
from .info import IMAGENET_STATS, TINY_IMAGENET_STATS, DatasetInfo, RawData, recognised_name
from .shapes import SHAPE_NAMES, SHAPES_STATS, ShapesDataset
from .splits import DatasetSplit, make_split, stratified_split, stratified_subset, targets_of
from .standard import check_cifar, check_mnist, load_cifar, load_mnist
from .transforms import build_transform

SHAPES_DEFAULT_SIZE = 6000
SHAPES_SEED = 0  # the data are fixed, so runs differ only by their split and training seeds
SHAPES_TEST_SEED = 1
# Folder data sets whose copies may lack the held-out split (Tiny-ImageNet without val/): with val_ratio 0,
# validation is carved from the training images instead of failing.
CARVE_WHEN_NO_HELD_OUT = ("tiny_imagenet",)
FALLBACK_VAL_RATIO = 0.1


@dataclass
class Splits:
    """The three splits of a data set; ``test`` is the official held-out split, or None where there is none."""

    train: DatasetSplit | None  # None (with val) for a copy that holds only a test split (``load_test_only``)
    val: DatasetSplit | None
    test: DatasetSplit | None
    info: DatasetInfo
    note: str | None = None  # a choice the loader made that the run's log should state


def load_shapes(root: Path, *, size: int | None = None, image_size: int | None = None, **_) -> RawData:
    """The synthetic data generated at the requested size; the held-out set is a fifth as many, another seed."""
    size = SHAPES_DEFAULT_SIZE if size is None else int(size)
    if size < len(SHAPE_NAMES):
        raise DataError(f"shapes needs at least {len(SHAPE_NAMES)} images (one per class), got size={size}; "
                        f"use e.g. {SHAPES_DEFAULT_SIZE}.")
    side = image_size or 32
    train = ShapesDataset(size, SHAPES_SEED, side)
    test = ShapesDataset(max(len(SHAPE_NAMES), size // 5), SHAPES_TEST_SEED, side)
    return RawData(train, test, list(SHAPE_NAMES), 3, side, "shapes", SHAPES_STATS)


def _no_files_needed(root: Path) -> None:
    """shapes is generated in memory, so any root will do."""


@dataclass(frozen=True)
class _Entry:
    load: Callable[..., RawData]
    check: Callable[[Path], None]


_DATASETS: dict[str, _Entry] = {
    "cifar10": _Entry(partial(load_cifar, cls=datasets.CIFAR10), partial(check_cifar, cls=datasets.CIFAR10)),
    "cifar100": _Entry(partial(load_cifar, cls=datasets.CIFAR100), partial(check_cifar, cls=datasets.CIFAR100)),
    "mnist": _Entry(partial(load_mnist, cls=datasets.MNIST), partial(check_mnist, cls=datasets.MNIST)),
    "fashion_mnist": _Entry(partial(load_mnist, cls=datasets.FashionMNIST),
                            partial(check_mnist, cls=datasets.FashionMNIST)),
    "imagefolder": _Entry(load_imagefolder, check_imagefolder),
    "tiny_imagenet": _Entry(load_tiny_imagenet, check_tiny_imagenet),
    "shapes": _Entry(load_shapes, _no_files_needed),
}


def list_datasets() -> list[str]:
    """Every data-set name ``load_splits`` accepts."""
    return list(_DATASETS)


def _squash(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def resolve_name(name: str) -> str:
    """The registered name for ``name``, ignoring case, dashes and underscores ("Fashion-MNIST" works)."""
    by_squashed = {_squash(known): known for known in _DATASETS}
    if isinstance(name, str) and _squash(name) in by_squashed:
        return by_squashed[_squash(name)]
    close = difflib.get_close_matches(_squash(str(name)), list(by_squashed), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(by_squashed[c] for c in close)}? " if close else ""
    raise DataError(f"Unknown data set {name!r}; {hint}choose one of {', '.join(_DATASETS)}.")


def _check_image_size(image_size) -> None:
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8):
        raise DataError(f"image_size must be a whole number of pixels of at least 8, got {image_size!r}; "
                        "leave it unset for the data set's natural size.")


def load_splits(name: str, root="data", *, val_ratio: float = 0.1, split_seed: int = 0, augment: bool = True,
                color_jitter: bool = False, download: bool = True, image_size: int | None = None,
                size: int | None = None) -> Splits:
    """Load a data set by name and split it into train / val / test with their own transforms.

    ``root`` holds the files (torchvision sets are downloaded there when absent and ``download`` is
    true); ``image_size`` overrides the natural side. ``size`` limits the training data that train and
    val are carved from to a seeded, stratified subset (``split_seed``) of that many images, for every
    data set (``shapes`` generates that many). ``val`` is carved from it (seeded, stratified) when
    ``val_ratio > 0``, else it is the official held-out split. The test split is never cut. Only
    ``train`` is augmented, and only when ``augment`` is true.
    """
    name = resolve_name(name)
    _check_image_size(image_size)
    if not 0.0 <= val_ratio < 1.0:
        raise DataError(f"val_ratio must be at least 0 and below 1, got {val_ratio}; use e.g. 0.1, "
                        "or 0 to validate on the official held-out split.")
    raw = _DATASETS[name].load(Path(root).expanduser(), download=download, image_size=image_size, size=size)
    info, transform = _describe(name, raw, image_size, color_jitter)
    train_tf, eval_tf = transform(train=augment), transform(train=False)
    note = None
    if val_ratio == 0 and raw.held_out is None:
        if name not in CARVE_WHEN_NO_HELD_OUT:
            raise DataError(f"{name} in {root} has no held-out split to validate on; set val_ratio > 0 "
                            "(e.g. 0.1) to carve one from the training data.")
        val_ratio = FALLBACK_VAL_RATIO
        note = (f"{name} in {root} has no held-out split (no val/ folder): validating on "
                f"{FALLBACK_VAL_RATIO:.0%} of the training images, carved stratified with split seed {split_seed}")
    pool, size_note = _training_pool(name, raw.train, size, split_seed)
    if val_ratio > 0:
        pool_targets = targets_of(raw.train)
        train_at, val_at = stratified_split([pool_targets[i] for i in pool], val_ratio, split_seed)
        train_idx, val = [pool[i] for i in train_at], make_split(raw.train, [pool[i] for i in val_at], eval_tf)
    else:
        train_idx = pool
        val = make_split(raw.held_out, range(len(raw.held_out)), eval_tf)
    train = make_split(raw.train, train_idx, train_tf)
    test = make_split(raw.held_out, range(len(raw.held_out)), eval_tf) if raw.held_out is not None else None
    return Splits(train, val, test, info, "; ".join(n for n in (note, size_note) if n) or None)


def _training_pool(name: str, train, size: int | None, seed: int) -> tuple[list[int], str | None]:
    """The training images a run may use: all, or a seeded stratified subset of ``size`` (and a note when
    ``size`` asks for more than there are)."""
    count = len(train)
    if size is None or size == count:
        return list(range(count)), None
    if size > count:
        return list(range(count)), f"data.size {size} is more than the {count:,} training images of {name}: using all"
    return stratified_subset(targets_of(train), size, seed), None


def _describe(name: str, raw: RawData, image_size: int | None, color_jitter: bool = False):
    """The DatasetInfo of ``raw`` and its transform (call it with ``train=``), the same for every split."""
    side = image_size or raw.natural_size
    mean, std = raw.stats
    info = DatasetInfo(recognised_name(name, raw.class_names), len(raw.class_names), raw.in_channels, side,
                       list(raw.class_names), mean, std, raw.family)
    transform = partial(build_transform, raw.family, side, mean, std, color_jitter=color_jitter,
                        resize=not raw.fixed_size or side != raw.natural_size)
    return info, transform


def test_only_tree(name: str, root) -> Path | None:
    """The class folders of a folder data set's copy that holds only a test split; None for any other copy."""
    if resolve_name(name) not in ("imagefolder", "tiny_imagenet"):
        return None
    return held_out_tree(Path(root).expanduser())


def load_test_only(name: str, root, class_names: list[str], side: int | None = None) -> Splits | None:
    """The test split of an image-folder copy that holds only ``test/<class>/`` (or a flat ``<class>/`` tree).

    The images are labelled by the run's ``class_names`` and get its evaluation transform (``side``: the
    side it was trained on; None probes the first image, as training did). None when ``root`` has a
    training tree, or the data set is not read from folders: ``load_splits`` then reads it as usual.
    """
    name = resolve_name(name)
    split_dir = test_only_tree(name, root)
    if split_dir is None:
        return None
    images = load_held_out(split_dir, class_names, wnid_words=name == "tiny_imagenet")
    if name == "tiny_imagenet":
        family, natural, stats = "tiny", 64, TINY_IMAGENET_STATS
    else:
        family, natural = image_regime(side or max(images[0][0].size))
        stats = IMAGENET_STATS
    raw = RawData(None, images, list(class_names), 3, natural, family, stats, fixed_size=False)
    info, transform = _describe(name, raw, side)
    return Splits(None, None, make_split(images, range(len(images)), transform(train=False)), info)


def check_data_available(name: str, root="data") -> None:
    """Raise DataError if ``load_splits(name, root)`` would not find its files; never reads or downloads them."""
    _DATASETS[resolve_name(name)].check(Path(root).expanduser())
