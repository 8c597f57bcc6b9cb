"""``shapes``: a synthetic 10-class data set of coloured shapes on cluttered, textured backgrounds.

Why it exists: it needs no download, a ResNet-20 learns it well above chance in a few CPU minutes
(about 60 % validation accuracy after 3 epochs on 4000 images), and every image comes with its
object mask, the ground truth that attribution maps are scored against. The class is the shape,
never the colour; position, scale, rotation and colour are random and the background carries
noise, lines and blobs as distractors. Generation is vectorised over the whole data set with one
seeded ``torch.Generator``, so a seed always gives the same images.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from functools import lru_cache
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

# Channel statistics of ShapesDataset(6000, seed=0) at 32 px, fixed so a trained model's
# normalisation does not drift with the data-set size (a test checks they still hold).
SHAPES_STATS = ((0.396, 0.395, 0.396), (0.195, 0.195, 0.194))

# Difficulty knobs, tuned on 4000 images (SGD 0.1, batch 128): a ResNet-20 reaches about 60 % validation
# accuracy after 3 epochs and about 95 % after 10, so it learns quickly without being trivial.
_N_LINES = 3  # distractor slots per image; each slot is used with probability _DISTRACTOR_P
_N_BLOBS = 3
_DISTRACTOR_P = 0.4
_RADIUS = (0.3, 0.45)  # object radius as a fraction of the image side
_BLOTCHES = 0.06  # amplitude of the background's smooth colour blotches
_NOISE = 0.03  # pixel noise over everything
_BACKGROUND_SV = ((0.0, 0.4), (0.2, 0.6))  # saturation and value ranges of the background colour
_OBJECT_SV = ((0.5, 1.0), (0.6, 1.0))


def _regular_polygon(rho, phi, sides: int, radius: float):
    """Inside a regular polygon of circumradius ``radius``: within the apothem along the nearest edge's normal."""
    sector = 2 * math.pi / sides
    return rho * torch.cos(torch.remainder(phi, sector) - sector / 2) < radius * math.cos(math.pi / sides)


def _star(rho, phi):
    spoke = torch.remainder(phi / (2 * math.pi / 5), 1.0)
    return rho < 0.4 + 0.6 * (1 - 2 * (spoke - 0.5).abs()) ** 1.5


def _bars(u, v):
    return (u.abs() < 0.8) & (v.abs() < 0.77) & (torch.remainder(v + 0.77, 0.62) < 0.3)


# Each shape fits the unit disc in its own (u, v) frame; (rho, phi) are the polar coordinates of (u, v).
# No class is a rotation of another (hence no diamond beside the square); circle vs hexagon is the hard pair.
_SHAPES: dict[str, Callable] = {
    "circle": lambda u, v, rho, phi: rho < 0.9,
    "square": lambda u, v, rho, phi: torch.maximum(u.abs(), v.abs()) < 0.7,
    "triangle": lambda u, v, rho, phi: _regular_polygon(rho, phi, 3, 1.0),
    "cross": lambda u, v, rho, phi: ((u.abs() < 0.27) & (v.abs() < 0.95)) | ((v.abs() < 0.27) & (u.abs() < 0.95)),
    "ring": lambda u, v, rho, phi: (rho > 0.55) & (rho < 0.95),
    "star": lambda u, v, rho, phi: _star(rho, phi),
    "crescent": lambda u, v, rho, phi: (rho < 0.92) & ((u - 0.42) ** 2 + v ** 2 > 0.72 ** 2),
    "bars": lambda u, v, rho, phi: _bars(u, v),
    "ellipse": lambda u, v, rho, phi: (u / 0.95) ** 2 + (v / 0.45) ** 2 < 1,
    "hexagon": lambda u, v, rho, phi: _regular_polygon(rho, phi, 6, 0.95),
}
SHAPE_NAMES = list(_SHAPES)


def _uniform(n: int, low: float, high: float, g: torch.Generator, *shape: int) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, *shape, generator=g)


def _hsv_colours(n: int, g: torch.Generator, saturation: tuple[float, float], value: tuple[float, float]):
    """Random colours (n, 3) from hue, saturation and value ranges: one hue wheel for objects and clutter alike."""
    h = torch.rand(n, generator=g) * 6
    s = _uniform(n, *saturation, g)
    v = _uniform(n, *value, g)
    k = torch.remainder(torch.tensor([5.0, 3.0, 1.0]) + h[:, None], 6)
    return v[:, None] - v[:, None] * s[:, None] * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def _background(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    """Dull base colours with smooth colour blotches: texture without structure."""
    base = _hsv_colours(n, g, *_BACKGROUND_SV)[:, :, None, None]
    blotches = F.interpolate(torch.randn(n, 3, 4, 4, generator=g), size=(size, size), mode="bilinear",
                             align_corners=False)
    return base + _BLOTCHES * blotches


def _clutter(layers, xs, ys, g: torch.Generator) -> list[torch.Tensor]:
    """Mark random thin line segments and small blobs in ``layers``; returns their colours, one (n, 3) per layer.

    Distractors take their colours from the objects' hue wheel, so colour tells nothing about the class.
    """
    n, size, _ = layers.shape
    colours = []
    for slot in range(_N_LINES + _N_BLOBS):
        on = (torch.rand(n, generator=g) < _DISTRACTOR_P)[:, None, None]
        px, py = _uniform(n, 0, 1, g, 1, 1), _uniform(n, 0, 1, g, 1, 1)
        if slot < _N_LINES:
            angle = _uniform(n, 0, math.pi, g, 1, 1)
            cos, sin = torch.cos(angle), torch.sin(angle)
            half_length = _uniform(n, 0.15, 0.5, g, 1, 1)
            half_width = _uniform(n, 0.4, 0.9, g, 1, 1) / size
            along = (xs - px) * cos + (ys - py) * sin
            across = (ys - py) * cos - (xs - px) * sin
            mask = (along.abs() < half_length) & (across.abs() < half_width)
        else:
            rx, ry = _uniform(n, 0.03, 0.09, g, 1, 1), _uniform(n, 0.03, 0.09, g, 1, 1)
            mask = ((xs - px) / rx) ** 2 + ((ys - py) / ry) ** 2 < 1
        layers.masked_fill_(mask & on, len(colours) + 1)
        colours.append(_hsv_colours(n, g, (0.2, 1.0), (0.2, 1.0)))
    return colours


def _objects(labels, xs, ys, g: torch.Generator):
    """The object masks (n, H, W): each shape at a random centre, radius, rotation and slight stretch."""
    n = len(labels)
    radius = _uniform(n, *_RADIUS, g, 1, 1)
    cx = radius + (1 - 2 * radius) * torch.rand(n, 1, 1, generator=g)
    cy = radius + (1 - 2 * radius) * torch.rand(n, 1, 1, generator=g)
    angle = _uniform(n, 0, 2 * math.pi, g, 1, 1)
    stretch = _uniform(n, 0.9, 1.1, g, 1, 1)
    dx, dy = (xs - cx) / radius, (ys - cy) / radius
    u = (dx * torch.cos(angle) + dy * torch.sin(angle)) * stretch
    v = (-dx * torch.sin(angle) + dy * torch.cos(angle)) / stretch
    rho, phi = torch.sqrt(u ** 2 + v ** 2), torch.atan2(v, u)
    masks = torch.zeros(u.shape, dtype=torch.bool)
    for label, inside in enumerate(_SHAPES.values()):
        chosen = labels == label
        masks[chosen] = inside(u[chosen], v[chosen], rho[chosen], phi[chosen])
    return masks


@contextmanager
def _one_thread():
    """Generation is many short element-wise ops: extra threads only add contention (4x slower on a busy 2-core box)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@lru_cache(maxsize=4)
def generate_shapes(size: int, seed: int, image_size: int = 32):
    """(images uint8 (n, 3, S, S), masks bool (n, S, S), labels long (n,)) with classes balanced.

    Cached per process (the Data page, the Inspect page and evaluation ask for the same
    set again and again); the returned tensors are shared, so nobody may modify them in place.

    Each pixel gets a layer number (0 background, then distractors, the object last and on top),
    and one gather paints all layers at once: far cheaper than painting the image layer by layer.
    """
    with _one_thread():
        return _generate(size, seed, image_size)


def _generate(size: int, seed: int, image_size: int):
    g = torch.Generator().manual_seed(int(seed))
    n, s = size, image_size
    labels = (torch.arange(n) % len(SHAPE_NAMES))[torch.randperm(n, generator=g)]
    centres = (torch.arange(s, dtype=torch.float32) + 0.5) / s
    ys, xs = centres[None, :, None], centres[None, None, :]
    background = _background(n, s, g)
    layers = torch.zeros(n, s, s, dtype=torch.uint8)
    colours = _clutter(layers, xs, ys, g)
    masks = _objects(labels, xs, ys, g)
    layers.masked_fill_(masks, len(colours) + 1)
    colours.append(_hsv_colours(n, g, *_OBJECT_SV))
    palette = torch.stack([torch.zeros(n, 3)] + colours, dim=2)  # (n, 3, layers)
    painted = palette.gather(2, layers.view(n, 1, s * s).long().expand(n, 3, s * s)).view(n, 3, s, s)
    # The object gets mild shading across it; everything gets pixel noise.
    shading = 1 + (xs - 0.5) * _uniform(n, -0.3, 0.3, g, 1, 1, 1) * masks[:, None]
    images = torch.where(layers[:, None] > 0, painted * shading, background)
    images += _NOISE * torch.randn(n, 3, s, s, generator=g)
    return (images.clamp_(0, 1) * 255).round_().to(torch.uint8), masks, labels


class ShapesDataset(Dataset):
    """``size`` shapes images generated in memory from ``seed``; yields (uint8 CxHxW tensor or transformed, label)."""

    def __init__(self, size: int = 6000, seed: int = 0, image_size: int = 32, transform: Callable | None = None):
        self.images, self.masks, labels = generate_shapes(size, seed, image_size)
        self.targets = labels.tolist()
        self.classes = list(SHAPE_NAMES)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        image = self.images[i]
        return (self.transform(image) if self.transform else image), self.targets[i]

    def mask(self, i: int) -> torch.Tensor:
        """The object of image ``i`` as a bool HxW tensor (a copy, so callers cannot corrupt the data set)."""
        return self.masks[i].clone()
