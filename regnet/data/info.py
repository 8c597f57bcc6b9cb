"""What a loaded data set is (``DatasetInfo``) and what each source hands the registry (``RawData``).

Kept apart from the registry so the source modules (torchvision sets, folders, shapes) can
describe themselves without importing the registry that imports them.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import Dataset

# Per-channel statistics of each data set's training images, as published and widely reused:
# normalising with a data set's own statistics keeps the first layer's inputs near zero mean, unit variance.
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
MNIST_STATS = ((0.1307,), (0.3081,))
FASHION_MNIST_STATS = ((0.2860,), (0.3530,))
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
TINY_IMAGENET_STATS = ((0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821))

# torchvision's CIFAR10.classes, which is also how the JPEG copies name their class folders.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def recognised_name(name: str, class_names) -> str:
    """The name a data set is shown and filtered by: an image folder holding exactly CIFAR-10's classes is
    "cifar10", like the torchvision copy, so every listing and filter groups the two; others keep ``name``."""
    return "cifar10" if name == "imagefolder" and tuple(class_names) == CIFAR10_CLASSES else name


@dataclass(frozen=True)
class DatasetInfo:
    """What a model builder, a trainer and a dashboard need to know about a loaded data set.

    ``image_size`` is the side of the square tensors the splits yield; ``family`` picks the
    transforms: one of "cifar", "mnist", "imagenet", "tiny", "shapes".
    """

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    family: str


@dataclass(frozen=True)
class RawData:
    """A source's untransformed data: datasets yielding (PIL image or uint8 CxHxW tensor, int label).

    ``held_out`` is the official test split (or None). ``fixed_size`` is False when the images may
    differ in size (image folders), so the transforms must resize them to one size before batching.
    """

    train: Dataset
    held_out: Dataset | None
    class_names: list[str]
    in_channels: int
    natural_size: int
    family: str
    stats: tuple[tuple[float, ...], tuple[float, ...]]
    fixed_size: bool = True
