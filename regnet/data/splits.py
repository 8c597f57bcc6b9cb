"""Seeded stratified splits, and the split views that give each split its own transform.

Train and validation are carved from one base data set but need different transforms
(augmentation on train only), so a split is a view: base + indices + transform.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.ops import masks_to_boxes

from .errors import DataError


def targets_of(dataset: Dataset) -> list[int]:
    """The labels of a base data set as a plain list of ints (torchvision's MNIST keeps a tensor)."""
    targets = dataset.targets
    return targets.tolist() if isinstance(targets, torch.Tensor) else [int(t) for t in targets]


def _shuffled_classes(labels: torch.Tensor, seed: int) -> list[torch.Tensor]:
    """Each class's indices in a seeded order: one ``torch.Generator`` permutes the classes in sorted order,
    so the same seed gives the same order on every machine."""
    generator = torch.Generator().manual_seed(int(seed))
    classes = []
    for label in torch.unique(labels).tolist():
        members = (labels == label).nonzero().flatten()
        classes.append(members[torch.randperm(len(members), generator=generator)])
    return classes


def stratified_split(targets: Sequence[int], val_ratio: float, seed: int) -> tuple[list[int], list[int]]:
    """Split indices into (train, val) so every class gives ``round(n_class * val_ratio)`` to val.

    Seeded per class (``_shuffled_classes``); indices come back sorted.
    """
    if not 0.0 < val_ratio < 1.0:
        raise DataError(f"val_ratio must lie between 0 and 1 to carve a split, got {val_ratio}; use e.g. 0.1.")
    labels = torch.as_tensor(list(targets), dtype=torch.long)
    val_parts = [members[: int(len(members) * val_ratio + 0.5)] for members in _shuffled_classes(labels, seed)]
    val = torch.cat(val_parts) if val_parts else torch.empty(0, dtype=torch.long)
    for side, count, fix in (("validation", len(val), "raise"), ("training", len(labels) - len(val), "lower")):
        if count == 0:
            raise DataError(f"val_ratio {val_ratio} leaves the {side} split empty for {len(labels)} images; "
                            f"{fix} val_ratio or add images.")
    in_val = torch.zeros(len(labels), dtype=torch.bool)
    in_val[val] = True
    return (~in_val).nonzero().flatten().tolist(), in_val.nonzero().flatten().tolist()


def stratified_subset(targets: Sequence[int], size: int, seed: int) -> list[int]:
    """Exactly ``size`` indices (sorted) that keep every class's share of ``targets``, seeded per class.

    Each class gets ``floor(n_class * size / n)``; the images left over go to the classes with the largest
    remainders (ties to the lower label), so the subset is as balanced as the data it comes from.
    """
    labels = torch.as_tensor(list(targets), dtype=torch.long)
    classes = _shuffled_classes(labels, seed)
    if not len(classes) <= size <= len(labels):
        raise DataError(f"data.size must be between {len(classes)} (one image per class) and {len(labels)} "
                        f"(all of them), got {size}.")
    shares = [len(members) * size / len(labels) for members in classes]
    counts = [int(share) for share in shares]
    by_remainder = sorted(range(len(classes)), key=lambda c: (counts[c] - shares[c], c))
    for c in by_remainder[: size - sum(counts)]:
        counts[c] += 1
    return sorted(torch.cat([members[:count] for members, count in zip(classes, counts)]).tolist())


class DatasetSplit(Dataset):
    """``base`` restricted to ``indices`` with its own ``transform``; yields (float CxHxW tensor, int label)."""

    def __init__(self, base: Dataset, indices: Sequence[int], transform: Callable):
        self.base = base
        self.indices = list(indices)
        self.transform = transform
        base_targets = targets_of(base)
        self.targets = [base_targets[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        image, label = self.base[self.indices[i]]
        return self.transform(image), int(label)


class MaskedDatasetSplit(DatasetSplit):
    """A split of a data set with object masks (shapes): ``mask(i)`` is the i-th image's object.

    The mask matches the image before augmentation, i.e. exactly what the evaluation splits yield.
    """

    def mask(self, i: int) -> torch.Tensor:
        return self.base.mask(self.indices[i])


class BoxedDatasetSplit(MaskedDatasetSplit):
    """A masked split that yields (image, label, box): the object mask's box (x0, y0, x1, y1, exclusive ends),
    cropped and flipped together with its image by the same v2 transform, for a detector's training target."""

    def __getitem__(self, i: int):
        image, label = self.base[self.indices[i]]
        mask = self.mask(i)
        box = masks_to_boxes(mask[None]) + torch.tensor([0.0, 0.0, 1.0, 1.0])
        box = tv_tensors.BoundingBoxes(box, format="XYXY", canvas_size=tuple(mask.shape))
        image, box = self.transform(image, box)
        return image, int(label), box[0]


def with_object_boxes(split: DatasetSplit) -> BoxedDatasetSplit:
    """The same split (base, indices, transform), yielding each image's object box as well."""
    if not isinstance(split, MaskedDatasetSplit):
        raise DataError("This data set has no object masks, so it has no object boxes; choose boxes='image' "
                        "(or 'foreground' for digits on black), or train on shapes.")
    return BoxedDatasetSplit(split.base, split.indices, split.transform)


def make_split(base: Dataset, indices: Sequence[int], transform: Callable) -> DatasetSplit:
    """A split view; it has ``mask(i)`` exactly when the base data set has masks (test with ``hasattr``)."""
    cls = MaskedDatasetSplit if hasattr(base, "mask") else DatasetSplit
    return cls(base, indices, transform)
