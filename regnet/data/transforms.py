"""The standard transforms of each data-set family, and the inverse of their normalisation.

Augmentation belongs to the training split only (augmenting the evaluation data is one of the
mistakes DESIGN.md lists), so every family has a ``train`` and an evaluation pipeline; the
evaluation pipeline is deterministic.
"""
from __future__ import annotations

import torch
from torchvision.transforms import v2

from .info import DatasetInfo

IMAGENET_RESIZE_RATIO = 256 / 224  # the classic "resize to 256, centre-crop 224" evaluation


def build_transform(family: str, image_size: int, mean, std, *, train: bool, color_jitter: bool = False,
                    resize: bool = False) -> v2.Compose:
    """The pipeline from a PIL image or uint8 tensor to a normalised float CxHxW tensor.

    ``train`` switches the family's augmentation on. ``resize`` makes the small-image families
    (cifar, mnist, shapes) first bring every image to ``image_size``, needed when the size is
    overridden or the source images may differ in size.
    """
    steps: list = [v2.ToImage()]
    if family == "imagenet":
        if train:
            steps += [v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()]
        else:
            steps += [v2.Resize(round(image_size * IMAGENET_RESIZE_RATIO), antialias=True), v2.CenterCrop(image_size)]
    elif family == "tiny":
        if train:
            steps += [v2.RandomResizedCrop(image_size, scale=(0.8, 1.0), antialias=True), v2.RandomHorizontalFlip()]
        else:
            steps += [v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)]
    elif family in ("cifar", "mnist", "shapes"):
        if resize:
            steps += [v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)]
        if train and family == "mnist":
            # Digits are not mirror-symmetric, so MNIST gets a small shift and no flip.
            steps.append(v2.RandomCrop(image_size, padding=max(1, image_size // 14)))
        elif train:
            steps += [v2.RandomCrop(image_size, padding=max(1, image_size // 8)), v2.RandomHorizontalFlip()]
    else:
        raise ValueError(f"Unknown transform family {family!r}.")
    if train and color_jitter and len(mean) == 3:
        steps.append(v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std)), v2.ToPureTensor()]
    return v2.Compose(steps)


def denormalize(x: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    """Undo the normalisation of a CxHxW or NxCxHxW tensor and clamp to [0, 1], for display."""
    shape = (-1, 1, 1)
    mean = torch.tensor(info.mean, dtype=x.dtype, device=x.device).view(shape)
    std = torch.tensor(info.std, dtype=x.dtype, device=x.device).view(shape)
    return (x * std + mean).clamp(0.0, 1.0)
