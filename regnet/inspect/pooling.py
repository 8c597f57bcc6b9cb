"""Every block of a network numbered as the paper numbers them, and per-channel summaries of their maps
collected over a whole split in one pass.

The paper (Fig. 1b) numbers a network's residual blocks 1..N through the network (regnet20's last stage
holds blocks 7, 8 and 9); :func:`numbered_blocks` is that numbering, and every per-block figure of the lab
uses it. :func:`pooled_pass` reads maps through forward hooks on the blocks' public taps (the block output
``taps.output``, the regulator's ``taps.hidden``, ``taps.cell`` and ``taps.gates``), so it observes the
model's own forward and never forks it.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from regnet.models import folded_for_inference, regulated_blocks
from regnet.models.parallel import map_batches

REDUCTIONS = {"mean": lambda m: m.mean((2, 3)), "max": lambda m: m.amax((2, 3))}


@dataclass(frozen=True)
class NumberedBlock:
    """Block ``number`` (1..N through the network) is block ``step`` of stage ``stage`` (both from 1)."""

    number: int
    stage: int
    step: int
    module: nn.Module
    regulated: bool

    @property
    def output(self) -> nn.Module:
        """The module whose forward output is the block's output (a regulated block returns (out, state))."""
        return self.module.taps.output if self.regulated else self.module


def numbered_blocks(model: nn.Module) -> list[NumberedBlock]:
    """Every residual block in forward order, numbered 1..N as in the paper; a ValueError for a model
    without residual stages (they have no blocks to number)."""
    stages = getattr(model, "stages", None)
    if stages is None:
        raise ValueError(f"{type(model).__name__} has no residual stages; per-block probes and channels need "
                         "a ResNet or RegNet (e.g. resnet20, regnet20).")
    regulated = set(map(id, regulated_blocks(model)))
    flat = [(s, t, block) for s, stage in enumerate(stages, 1) for t, block in enumerate(stage.blocks, 1)]
    return [NumberedBlock(n, s, t, block, id(block) in regulated) for n, (s, t, block) in enumerate(flat, 1)]


class _Latest(threading.local):
    """What the hooks saw in the calling thread's last forward pass, per key (batches run side by side)."""

    def __init__(self):
        self.values: dict[str, torch.Tensor] = {}

    def take(self) -> dict[str, torch.Tensor]:
        values, self.values = self.values, {}
        return values


@contextmanager
def _hooked(modules: dict[str, nn.Module], reduce: str) -> Iterator[_Latest]:
    """Hooks that keep each module's output, reduced over its positions to (batch, channels), per key."""
    reduction = REDUCTIONS[reduce]
    latest = _Latest()
    hooks = [module.register_forward_hook(
        lambda m, i, out, key=key: latest.values.__setitem__(key, reduction(out.float()).cpu()))
        for key, module in modules.items()]
    try:
        yield latest
    finally:
        for hook in hooks:
            hook.remove()


def pooled_pass(model: nn.Module, batches: Iterable, taps: Callable[[nn.Module], dict[str, nn.Module]],
                reduce: str = "mean", progress: Callable[[int], None] | None = None) -> dict:
    """One inference pass over ``batches`` ((images, labels) pairs): every tap's map reduced per channel.

    ``taps(model)`` names the modules to read in the model it is given (a folded, channels-last copy of
    ``model``, so ``model`` itself is left as it was); ``reduce`` is ``mean`` or ``max`` over positions.
    Batches run side by side on a CPU (``map_batches``: a small model's ops lose more to a thread pool than
    they gain). Returns ``{"labels": (N,), "predictions": (N,), "features": {key: (N, C) float32}}``;
    ``progress`` gets the number of images done after each batch.
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"Unknown reduction {reduce!r}; choose {' or '.join(REDUCTIONS)}.")
    folded = folded_for_inference(model).to(memory_format=torch.channels_last)
    device = next(folded.parameters()).device
    labels, predictions, parts, seen = [], [], [], 0
    with torch.inference_mode(), _hooked(taps(folded), reduce) as latest:
        def one(batch) -> tuple:
            x, y = batch
            logits = folded(x.to(device).contiguous(memory_format=torch.channels_last))
            return torch.as_tensor(y).cpu(), logits.argmax(1).cpu(), latest.take()

        for y, predicted, values in map_batches(one, batches, device):
            labels.append(y)
            predictions.append(predicted)
            parts.append(values)
            seen += len(y)
            if progress is not None:
                progress(seen)
    if seen == 0:
        raise ValueError("The split is empty; there is nothing to analyse.")
    return {"labels": torch.cat(labels), "predictions": torch.cat(predictions),
            "features": {key: torch.cat([p[key] for p in parts]) for key in parts[0]}}
