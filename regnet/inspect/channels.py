"""A channel explorer for the regulator, after LSTMVis and OpenAI Microscope: which images drive a channel
of H, C or a gate, which classes a channel serves, and where a pattern of active channels recurs.

A channel is also followed along a stage's steps (one index) and across a run's epoch snapshots (one
index per snapshot, :func:`across_epochs`).

The *index* of a split holds, for every image and every (stage, step, state) of the regulator, each
channel's spatial mean (or max) over the image, float16, built in one pass (:func:`build_index`). Every
query below reads the index alone, except those that show maps, which rerun the model on the few images
they show. Stages and steps are numbered from 1, as on the page; a state is ``hidden``, ``cell`` or a
gate's name (ConvLSTM ``i f o g``, ConvGRU ``z r candidate``).
"""
from __future__ import annotations

import threading
from typing import Callable, Iterable

import torch
from torch import nn

from regnet.models import regulated_blocks
from regnet.models.parallel import map_batches

from .pooling import numbered_blocks, pooled_pass

def state_taps(model: nn.Module) -> dict[str, nn.Module]:
    """``{"S.T.state": tap}`` for every regulated block's H, C (ConvLSTM) and gates; empty for a ResNet."""
    taps: dict[str, nn.Module] = {}
    if not regulated_blocks(model):  # also a model without residual stages (mnist_cnn, rcnn_classifier)
        return taps
    for block in numbered_blocks(model):
        if block.regulated:
            t = block.module.taps
            named = {"hidden": t.hidden, "cell": t.cell, **dict(t.gates.items())}
            taps.update({f"{block.stage}.{block.step}.{name}": tap for name, tap in named.items() if tap is not None})
    return taps


def _require_regulator(model: nn.Module) -> dict[str, nn.Module]:
    taps = state_taps(model)
    if not taps:
        raise ValueError("This model has no regulator (a ResNet or another plain network), so it has no channels "
                         "to explore; choose a RegNet run (e.g. regnet20).")
    return taps


def state_key(model: nn.Module, stage: int, step: int, state: str) -> str:
    """The index key of a (stage, step, state) choice; a ValueError naming the choices when one is not there."""
    taps = _require_regulator(model)
    stages = sorted({int(k.split(".")[0]) for k in taps})
    if stage not in stages:
        raise ValueError(f"Stage {stage} has no regulator; choose a stage among {_listed(stages)}.")
    steps = sorted({int(k.split(".")[1]) for k in taps if int(k.split(".")[0]) == stage})
    if step not in steps:
        raise ValueError(f"Stage {stage} has no step {step}; choose a step among {_listed(steps)}.")
    names = [k.split(".")[2] for k in taps if k.startswith(f"{stage}.{step}.")]
    if state not in names:
        raise ValueError(f"The regulator has no state {state!r}; choose one of {_listed(names)}.")
    return f"{stage}.{step}.{state}"


def check_channel(model: nn.Module, key: str, channel: int, image: torch.Tensor) -> None:
    """A ValueError naming the state's channels when ``channel`` is not one of them (``image``: one input,
    (C, H, W), run once to read the state's width)."""
    width = state_maps(model, image[None], key).shape[1]
    if not 0 <= channel < width:
        raise ValueError(f"Stage {key.split('.')[0]}'s regulator has channels 0-{width - 1}; channel {channel} "
                         "is not one of them.")


def _listed(items) -> str:
    items = [str(i) for i in items]
    return ", ".join(items[:-1]) + f" or {items[-1]}" if len(items) > 1 else items[0]


def build_index(model: nn.Module, batches: Iterable, reduce: str = "mean",
                progress: Callable[[int], None] | None = None) -> dict:
    """Every regulator channel's spatial ``reduce`` (mean or max) per image of ``batches``, in one pass.

    ``{"reduce", "labels": (N,), "predictions": (N,), "centers": {"S.T.state": (C,)},
    "values": {"S.T.state": (N, C) float16}}``: each channel's values less their mean over the split
    (``centers``), so that float16 keeps the small differences between images of a gate that stays near 0.5
    (read them back with :func:`channel_values`); half the size of float32.
    """
    _require_regulator(model)
    result = pooled_pass(model, batches, state_taps, reduce, progress)
    centers = {k: v.double().mean(0).float() for k, v in result["features"].items()}
    return {"reduce": reduce, "labels": result["labels"], "predictions": result["predictions"], "centers": centers,
            "values": {k: (v - centers[k]).half() for k, v in result["features"].items()}}


def channel_values(index: dict, key: str) -> torch.Tensor:
    """(N, C) float32: every image's value of every channel of one (stage, step, state)."""
    return index["values"][key].float() + index["centers"][key]


def top_images(index: dict, key: str, channel: int, k: int = 10, bottom: bool = False) -> list[dict]:
    """The ``k`` images whose channel value is highest (``bottom``: lowest), in that order."""
    column = index["values"][key][:, channel].float() + index["centers"][key][channel]
    values, order = column.topk(min(k, len(column)), largest=not bottom)
    return [{"index": int(i), "label": int(index["labels"][i]), "value": float(v)} for v, i in zip(values, order)]


def class_means(index: dict, key: str, num_classes: int) -> torch.Tensor:
    """(classes, channels): each channel's mean value over the images of each class (NaN for an absent class)."""
    values, labels = channel_values(index, key), index["labels"]
    sums = torch.zeros(num_classes, values.shape[1]).index_add_(0, labels, values)
    counts = torch.bincount(labels, minlength=num_classes).float()[:, None]
    return sums / counts


def selectivity(means: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per channel: the preferred class, and the class-selectivity index of Morcos et al. (2018),
    ``(mu_max - mu_rest) / (|mu_max| + |mu_rest|)`` (0: no preference, 1: only one class drives it);
    absolute values in the denominator because gates and H take signs a ReLU unit does not. Classes
    without images (NaN rows of :func:`class_means`, e.g. in a small sample) are left out."""
    present = (~means.isnan()).sum(0)
    best, preferred = means.nan_to_num(nan=-torch.inf).max(0)
    rest = (means.nansum(0) - best) / (present - 1).clamp_min(1)
    return {"preferred": preferred, "index": (best - rest) / (best.abs() + rest.abs()).clamp_min(1e-8)}


def class_channels(index: dict, key: str, cls: int, num_classes: int, k: int = 10) -> list[dict]:
    """The channels a class drives most: ranked by (class mean - other classes' mean) / channel's spread."""
    means = class_means(index, key, num_classes)
    spread = index["values"][key].float().std(0).clamp_min(1e-8)  # centring leaves the spread as it was
    rest = (means.sum(0) - means[cls]) / (num_classes - 1)
    effect = (means[cls] - rest) / spread
    chosen = effect.topk(min(k, len(effect))).indices
    sel = selectivity(means)
    return [{"channel": int(c), "effect": float(effect[c]), "class_mean": float(means[cls, c]),
             "rest_mean": float(rest[c]), "selectivity": float(sel["index"][c]),
             "preferred": int(sel["preferred"][c])} for c in chosen]


def across_steps(index: dict, stage: int, state: str, channel: int, num_classes: int) -> dict[int, list[float]]:
    """{step: each class's mean value of the channel} along the stage's steps (where the state exists)."""
    steps = sorted(int(k.split(".")[1]) for k in index["values"]
                   if k.startswith(f"{stage}.") and k.endswith(f".{state}"))
    return {t: class_means(index, f"{stage}.{t}.{state}", num_classes)[:, channel].tolist() for t in steps}


def channel_summary(index: dict, key: str, channel: int, num_classes: int, k: int = 10) -> dict:
    """One channel of one index: ``mean`` over all images, ``class_means`` (one per class, NaN for an absent
    class), ``selectivity`` and ``preferred`` class (as :func:`selectivity`), and ``top``, the indices in the
    split of its ``k`` highest images (as :func:`top_images`)."""
    means = class_means(index, key, num_classes)[:, channel]
    sel = selectivity(means[:, None])
    column = index["values"][key][:, channel].double() + index["centers"][key][channel]
    return {"mean": float(column.mean()), "class_means": means.tolist(), "selectivity": float(sel["index"][0]),
            "preferred": int(sel["preferred"][0]), "top": [r["index"] for r in top_images(index, key, channel, k)]}


def top_overlap(previous: list[int], current: list[int]) -> float:
    """The share of ``current``'s images that are also in ``previous`` (1: the same top set, 0: all new)."""
    return len(set(previous) & set(current)) / max(len(current), 1)


def across_epochs(indexes: dict[int, dict], key: str, channel: int, num_classes: int, k: int = 10) -> list[dict]:
    """One channel followed across epoch snapshots: one row per epoch of ``indexes`` ({epoch: index of that
    snapshot on the same images}), in epoch order, each ``{"epoch", **channel_summary(...), "overlap"}``;
    ``overlap`` is :func:`top_overlap` of the previous row's top ``k`` with this one's (None for the first),
    how much of the set of images that drive the channel most survives an epoch of training."""
    rows, previous = [], None
    for epoch in sorted(indexes):
        row = {"epoch": epoch, **channel_summary(indexes[epoch], key, channel, num_classes, k)}
        row["overlap"] = None if previous is None else top_overlap(previous, row["top"])
        rows.append(row)
        previous = row["top"]
    return rows


def state_maps(model: nn.Module, images: torch.Tensor, key: str, batch: int = 16) -> torch.Tensor:
    """(B, C, H, W): the maps of one (stage, step, state) for a batch of images (the model is rerun, in
    chunks of ``batch`` side by side, one torch thread each, as the index's pass runs)."""
    latest = threading.local()
    hook = state_taps(model)[key].register_forward_hook(lambda m, i, out: setattr(latest, "maps", out.float().cpu()))
    device = next(model.parameters()).device

    def one(chunk: torch.Tensor) -> torch.Tensor:
        model(chunk.to(device))
        return latest.maps

    try:
        with torch.inference_mode():
            return torch.cat(list(map_batches(one, images.split(batch), device)))
    finally:
        hook.remove()


def on_channels(maps: torch.Tensor, region: tuple[int, int, int, int], threshold: float) -> torch.Tensor:
    """(C,) bool: the channels "on" in a region ``(top, left, bottom, right)`` (end-exclusive) of one
    image's (C, H, W) maps, a channel being on where its mean over the region is at least ``threshold``."""
    top, left, bottom, right = region
    return maps[:, top:bottom, left:right].mean((1, 2)) >= threshold


def jaccard(query: torch.Tensor, sets: torch.Tensor) -> torch.Tensor:
    """Jaccard similarity of a (C,) bool pattern with each row of (..., C) bool patterns (1 when both empty)."""
    inter = (sets & query).sum(-1).float()
    union = (sets | query).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def best_windows(maps: torch.Tensor, query: torch.Tensor, window: tuple[int, int],
                 threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each image of (N, C, H, W) maps, the window of the query's size whose on-pattern best matches
    ``query``: (Jaccard (N,), top (N,), left (N,)); the first best window in row order on ties."""
    pooled = nn.functional.avg_pool2d(maps, window, stride=1)  # (N, C, H', W'): each window's mean
    scores = jaccard(query, (pooled >= threshold).permute(0, 2, 3, 1))  # (N, H', W')
    best, where = scores.flatten(1).max(1)
    return best, where // pooled.shape[3], where % pooled.shape[3]


def pattern_match(model: nn.Module, index: dict, key: str, images: Callable[[list[int]], torch.Tensor],
                  query_maps: torch.Tensor, region: tuple[int, int, int, int], threshold: float,
                  top: int = 12, candidates: int = 64) -> dict:
    """The images (and positions) of the split whose channels best match a region's on/off pattern.

    The pattern is :func:`on_channels` of ``query_maps`` (one image's (C, H, W) maps) in ``region``. Images
    are first ranked by the Jaccard similarity of the pattern with their whole-image pattern from the
    index (value at least ``threshold``); the best ``candidates`` are then rerun (``images(indices)`` gives
    their input tensors) and scored at their best window of the region's size, and ranked by that.
    """
    query = on_channels(query_maps, region, threshold)
    coarse = jaccard(query, channel_values(index, key) >= threshold)
    shortlist = coarse.topk(min(candidates, len(coarse))).indices.tolist()
    maps = state_maps(model, images(shortlist), key)
    window = (region[2] - region[0], region[3] - region[1])
    scores, tops, lefts = best_windows(maps, query, window, threshold)
    order = scores.argsort(descending=True, stable=True)[:top].tolist()
    return {"channels_on": query.nonzero().flatten().tolist(),
            "matches": [{"index": shortlist[i], "label": int(index["labels"][shortlist[i]]),
                         "jaccard": float(scores[i]), "top": int(tops[i]), "left": int(lefts[i]),
                         "window": list(window)} for i in order]}
