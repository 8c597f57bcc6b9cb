"""How good are the attribution maps? Scored against the object masks of the ``shapes`` data set.

* pointing game: is the map's peak on the object (within ``tolerance`` pixels)?
* mass on object: the share of the map's importance that falls inside the mask;
* a random-map baseline for both, computed exactly from the mask areas;
* the weight-randomisation sanity check (Adebayo et al. 2018): maps of a model
  with re-initialised weights should not resemble the trained model's maps.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .attribution import attribute


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


def attribution_quality(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, targets: torch.Tensor,
                        methods: list[str], layer: str | None = None, tolerance: int = 1, **options) -> list[dict]:
    """Pointing-game and mass scores per method over a batch of images, beside the random-map baseline."""
    rows = []
    dilated_area = torch.stack([dilate(m, tolerance).float().mean() for m in masks])
    area = masks.float().mean((1, 2))
    for method in methods:
        hits, mass = [], []
        for x, m, t in zip(images, masks, targets):
            imp = attribute(model, x[None], method, int(t), layer=layer, **options).importance()
            hits.append(pointing_hit(imp, m, tolerance))
            mass.append(mass_on_object(imp, m))
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
                        layer: str | None = None, **options) -> dict:
    """Mean rank correlation of each map with the same method's map on a weight-randomised copy."""
    random_model = randomized_copy(model)
    trained, randomized = [], []
    for x, t in zip(images, targets):
        a = attribute(model, x[None], method, int(t), layer=layer, **options).importance()
        b = attribute(random_model, x[None], method, int(t), layer=layer, **options).importance()
        c = attribute(model, x[None], method, int(t), layer=layer, **options).importance()
        trained.append(spearman(a, c))
        randomized.append(spearman(a, b))
    return {"method": method, "repeat_rank_correlation": sum(trained) / len(trained),
            "randomized_rank_correlation": sum(randomized) / len(randomized)}
