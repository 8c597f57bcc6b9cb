"""A split decoded once into one uint8 tensor on the training device, served in batches augmented there.

The standard path decodes, augments and normalises every image in DataLoader
workers, one image at a time: on a GPU that feeds a few thousand images per
second, far below what the models train at. Data sets that fit in memory
(CIFAR-10/100, MNIST, Fashion-MNIST, shapes, Tiny-ImageNet) can instead live
on the device as one tensor, with the pad-crop, the flip and the
normalisation done on whole batches there, as the fastest CIFAR trainers do.
The augmentations are the standard path's (``regnet.data.transforms``): the
same padding, the same uniform crop offsets, the same flip rate, the same
normalisation; only the random numbers come from the device's own generator
(the global one, which the training loop seeds per epoch and checkpoints).

Tiny-ImageNet's random-resized crop is drawn exactly as torchvision draws its
parameters and resampled with ``torchvision.ops.roi_align`` (bilinear, area
averaged), so its pixels differ from torchvision's antialiased resize by
interpolation rounding.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torchvision.ops import roi_align
from torchvision.transforms.v2 import functional as TF

from .errors import DataError
from .info import DatasetInfo
from .splits import DatasetSplit

ON_DEVICE_FAMILIES = ("cifar", "mnist", "shapes", "tiny")
TINY_SCALE = (0.8, 1.0)  # transforms.build_transform's RandomResizedCrop for the "tiny" family
TINY_RATIO = (3 / 4, 4 / 3)
CROP_ATTEMPTS = 10  # torchvision's RandomResizedCrop.get_params tries this often before its central fallback


def check_on_device(info: DatasetInfo, color_jitter: bool) -> None:
    """One sentence if this data set cannot be served from the device (before anything is decoded)."""
    if info.family not in ON_DEVICE_FAMILIES:
        raise DataError(f"data.on_device keeps a whole split in memory, which suits CIFAR, MNIST, shapes and "
                        f"Tiny-ImageNet, not {info.name} ({info.family} images); set data.on_device: false.")
    if color_jitter:
        raise DataError("data.on_device does not do colour jitter; set data.color_jitter: false or "
                        "data.on_device: false.")


def decode_split(split: DatasetSplit, side: int) -> torch.Tensor:
    """Every image of ``split`` as one uint8 (N, C, side, side) tensor, before any random augmentation.

    Torchvision's in-memory arrays (CIFAR, MNIST) and the generated shapes are
    sliced at once; other sources are decoded image by image, each brought to
    ``side`` by the standard path's resize and centre crop where it is not
    that size already.
    """
    base, indices = split.base, torch.as_tensor(split.indices, dtype=torch.long)
    whole = _in_memory(base)
    if whole is not None and tuple(whole.shape[-2:]) == (side, side):
        return whole[indices].contiguous()
    images = [_decode_one(base[i][0], side) for i in split.indices]
    if not images:
        raise DataError("The split is empty; there is nothing to put on the device.")
    return torch.stack(images)


def _in_memory(base) -> torch.Tensor | None:
    """The whole base data set as a uint8 NCHW tensor where it already is one array (no decoding)."""
    data = getattr(base, "images", None)  # ShapesDataset
    if data is None:
        data = getattr(base, "data", None)  # torchvision's CIFAR (NHWC ndarray) and MNIST (NHW tensor)
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(data)
    if not isinstance(data, torch.Tensor) or data.dtype != torch.uint8:
        return None
    if data.dim() == 3:
        return data.unsqueeze(1)
    if data.dim() == 4 and data.shape[-1] in (1, 3) and data.shape[1] not in (1, 3):
        return data.permute(0, 3, 1, 2)
    return data if data.dim() == 4 else None


def _decode_one(image, side: int) -> torch.Tensor:
    tensor = TF.to_image(image)
    if tuple(tensor.shape[-2:]) != (side, side):
        tensor = TF.center_crop(TF.resize(tensor, side, antialias=True), side)
    return tensor.as_subclass(torch.Tensor)


class Augmenter:
    """The family's training augmentation on a uint8 (B, C, H, W) batch; returns float32 in [0, 255]."""

    def __init__(self, family: str, side: int):
        self.family, self.side = family, side
        # transforms.build_transform: RandomCrop(side, padding=...) with a flip for cifar/shapes, no flip for mnist
        self.padding = max(1, side // 14) if family == "mnist" else max(1, side // 8)
        self.flip = family != "mnist"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.family == "tiny":
            out = resized_crops(images.float(), self.side, *crop_boxes(len(images), *images.shape[-2:],
                                                                       images.device))
        else:
            out = padded_crops(images, self.padding, *crop_offsets(len(images), 2 * self.padding, images.device))
            out = out.float()
        if self.flip:
            flips = torch.rand(len(images), device=images.device) < 0.5
            out = torch.where(flips[:, None, None, None], out.flip(3), out)
        return out


def crop_offsets(batch: int, span: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Top and left offsets uniform in [0, span], as ``RandomCrop`` draws them on the padded image."""
    return (torch.randint(0, span + 1, (batch,), device=device),
            torch.randint(0, span + 1, (batch,), device=device))


def padded_crops(images: torch.Tensor, padding: int, top: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    """Each image zero-padded by ``padding`` and cropped back to its size at its own (top, left)."""
    b, c, h, w = images.shape
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    rows = (top[:, None] + torch.arange(h, device=images.device))[:, None, :, None]
    cols = (left[:, None] + torch.arange(w, device=images.device))[:, None, None, :]
    batch = torch.arange(b, device=images.device)[:, None, None, None]
    channel = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def crop_boxes(batch: int, height: int, width: int, device) -> tuple[torch.Tensor, ...]:
    """(top, left, crop height, crop width) per image, drawn as ``RandomResizedCrop.get_params`` draws them.

    Up to ten tries of an area fraction uniform in ``TINY_SCALE`` and a
    log-uniform aspect ratio; the first that fits is taken, else the whole
    image (the central fallback of a square image whose ratio is in range).
    """
    area = height * width
    scale = torch.empty(batch, CROP_ATTEMPTS, device=device).uniform_(*TINY_SCALE) * area
    log_ratio = torch.empty(batch, CROP_ATTEMPTS, device=device).uniform_(math.log(TINY_RATIO[0]),
                                                                          math.log(TINY_RATIO[1]))
    ratio = torch.exp(log_ratio)
    w = torch.sqrt(scale * ratio).round().long()
    h = torch.sqrt(scale / ratio).round().long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.where(fits.any(1), fits.float().argmax(1), -1)
    pick = first.clamp(min=0)[:, None]
    h = torch.where(first >= 0, h.gather(1, pick)[:, 0], height)
    w = torch.where(first >= 0, w.gather(1, pick)[:, 0], width)
    top = (torch.rand(batch, device=device) * (height - h + 1)).floor().long()
    left = (torch.rand(batch, device=device) * (width - w + 1)).floor().long()
    return top, left, h, w


def resized_crops(images: torch.Tensor, side: int, top, left, h, w) -> torch.Tensor:
    """Each float image's box resampled to ``side`` x ``side`` (bilinear, averaged over each output pixel's area)."""
    boxes = torch.stack([torch.arange(len(images), device=images.device).to(images.dtype), left.to(images.dtype),
                         top.to(images.dtype), (left + w).to(images.dtype), (top + h).to(images.dtype)], 1)
    return roi_align(images, boxes, (side, side), spatial_scale=1.0, sampling_ratio=-1, aligned=True)


class DeviceBatches:
    """A split on the device, iterated like the engine's DataLoader: (images, targets) batches in sampler order.

    ``images`` are normalised float32 NCHW as the standard transforms yield
    them; ``augment`` applies the family's training augmentation first.
    ``len()`` is the number of batches, ``dataset`` the split, as a DataLoader has them.
    """

    def __init__(self, split: DatasetSplit, info: DatasetInfo, batch_size: int, sampler, device: torch.device,
                 augment: bool):
        check_on_device(info, color_jitter=False)
        self.dataset, self.batch_size, self.sampler, self.device = split, batch_size, sampler, device
        self.images = decode_split(split, info.image_size).to(device)
        self.targets = torch.as_tensor(split.targets, dtype=torch.long, device=device)
        self.mean = torch.tensor(info.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(info.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.augmenter = Augmenter(info.family, info.image_size) if augment else None

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self):
        order = torch.as_tensor(list(self.sampler), dtype=torch.long, device=self.device)
        for start in range(0, len(order), self.batch_size):
            index = order[start:start + self.batch_size]
            yield self.batch(self.images[index]), self.targets[index]

    def batch(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images augmented (if training) and normalised exactly as ``ToDtype(scale=True)`` + ``Normalize``."""
        out = self.augmenter(images) if self.augmenter is not None else images.float()
        return (out * (1.0 / 255) - self.mean) / self.std  # the standard path's arithmetic, bit for bit


def evaluation_batches(split: DatasetSplit, info: DatasetInfo, batch_size: int, device: torch.device | str = "cpu",
                       *, count: int | None = None, workers: int = 0):
    """The first ``count`` (default: all) images of an evaluation split in order, batched for inference.

    Where the family allows, the split is decoded once into one tensor and
    normalised batch by batch (the standard path's numbers, bit for bit,
    without a per-image transform or worker processes); other sets go through
    a DataLoader.
    """
    order = range(len(split) if count is None else min(count, len(split)))
    if info.family in ON_DEVICE_FAMILIES:
        return DeviceBatches(split, info, batch_size, order, torch.device(device), augment=False)
    from torch.utils.data import DataLoader

    return DataLoader(split, batch_size=batch_size, sampler=order, num_workers=workers,
                      pin_memory=torch.device(device).type == "cuda")


__all__ = ["evaluation_batches", "DeviceBatches", "check_on_device", "decode_split", "Augmenter", "ON_DEVICE_FAMILIES"]
