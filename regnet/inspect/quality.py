"""How good are the attribution maps? Scored against the object masks of the ``shapes`` data set.

* pointing game: is the map's peak on the object (within ``tolerance`` pixels)?
* mass on object: the share of the map's importance that falls inside the mask;
* a random-map baseline for both, computed exactly from the mask areas;
* the weight-randomisation sanity check (Adebayo et al. 2018): maps of a model
  with re-initialised weights should not resemble the trained model's maps.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

from .attribution import Attribution, MethodSettings, attribute_many


def dilate(mask: torch.Tensor, tolerance: int) -> torch.Tensor:
    if tolerance <= 0:
        return mask.bool()
    k = 2 * tolerance + 1
    return nn.functional.max_pool2d(mask[None, None].float(), k, stride=1, padding=tolerance)[0, 0].bool()


def pointing_hit(importance: torch.Tensor, mask: torch.Tensor, tolerance: int = 1) -> bool:
    """True if the most important pixel lies on the (dilated) object; an all-zero map never hits."""
    if importance.max() <= 0:
        return False
    peak = int(importance.flatten().argmax())
    return bool(dilate(mask, tolerance).flatten()[peak])


def mass_on_object(importance: torch.Tensor, mask: torch.Tensor) -> float:
    total = float(importance.sum())
    return float((importance * mask.float()).sum()) / total if total > 0 else 0.0


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Rank correlation of two maps (ties broken by position, fine for continuous maps)."""
    ra = a.flatten().argsort().argsort().double()
    rb = b.flatten().argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / denom if denom > 0 else 0.0


def importances(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, method: str,
                settings: MethodSettings = MethodSettings(), chunk: int = 8,
                progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """Importance maps (N, H, W) of a batch, ``chunk`` images per call so memory stays bounded;
    ``progress`` gets the number of images done after each chunk."""
    maps = []
    for start in range(0, len(images), chunk):
        xs, ts = images[start:start + chunk], targets[start:start + chunk]
        raw = attribute_many(model, xs, method, ts, settings)
        maps += [Attribution(r, method, int(t)).importance() for r, t in zip(raw, ts)]
        if progress is not None:
            progress(start + len(xs))
    return torch.stack(maps)


def attribution_quality(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, targets: torch.Tensor,
                        methods: list[str], settings: MethodSettings = MethodSettings(), tolerance: int = 1,
                        progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """Pointing-game and mass scores per method over a batch of images, beside the random-map baseline.

    ``progress`` gets (images scored, images to score) over all methods, for a progress bar.
    """
    rows = []
    dilated_area = torch.stack([dilate(m, tolerance).float().mean() for m in masks])
    area = masks.float().mean((1, 2))
    total = len(images) * len(methods)
    for k, method in enumerate(methods):
        report = None if progress is None else (lambda done, k=k: progress(k * len(images) + done, total))
        maps = importances(model, images, targets, method, settings, progress=report)
        hits = [pointing_hit(imp, m, tolerance) for imp, m in zip(maps, masks)]
        mass = [mass_on_object(imp, m) for imp, m in zip(maps, masks)]
        rows.append({"method": method, "pointing_game": sum(hits) / len(hits), "mass_on_object": sum(mass) / len(mass)})
    rows.append({"method": "random map", "pointing_game": float(dilated_area.mean()),
                 "mass_on_object": float(area.mean())})
    return rows


def randomized_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """The same architecture with every layer re-initialised (the cascading test's last step)."""
    torch.manual_seed(seed)
    clone = copy.deepcopy(model)
    for module in clone.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    # BatchNorm's running statistics are buffers, not parameters: reset them too.
    for module in clone.modules():
        if hasattr(module, "reset_running_stats"):
            module.reset_running_stats()
    return clone.eval()


def randomization_check(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, method: str,
                        settings: MethodSettings = MethodSettings()) -> dict:
    """Mean rank correlation of each map with the same method's map on a weight-randomised copy."""
    random_model = randomized_copy(model)
    first = importances(model, images, targets, method, settings)
    again = importances(model, images, targets, method, settings)
    randomized = importances(random_model, images, targets, method, settings)
    trained = [spearman(a, c) for a, c in zip(first, again)]
    versus = [spearman(a, b) for a, b in zip(first, randomized)]
    return {"method": method, "repeat_rank_correlation": sum(trained) / len(trained),
            "randomized_rank_correlation": sum(versus) / len(versus)}
