"""Optimisers and learning-rate schedules, every schedule stepped once per iteration.

Each schedule is a multiplier of the base LR as a function of the global step
(``lr_multiplier``), wrapped in ``LambdaLR``: one code path, a state dict of
plain numbers (so checkpoints load with ``weights_only=True``), and a curve
that a test can check point by point. Multistep milestones are fractions of
all epochs and fall on epoch boundaries, as in the paper's recipes (LR / 10
at 50% and 75% of training); a milestone that would round to epoch 0 moves
to the end of epoch 1, so a short run (1 or 2 epochs) trains at the
configured LR first instead of never seeing it. One-cycle follows torch's ``OneCycleLR`` for the
LR (cosine up from lr/25 over ``warmup_epochs``, or 30% of the steps, then
cosine down to lr/25/1e4) but leaves momentum fixed.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .config import OptimConfig, ScheduleConfig

ONECYCLE_START_DIVISOR = 25.0  # as torch's OneCycleLR: start at lr / 25 ...
ONECYCLE_END_DIVISOR = 1e4  # ... and end at lr / 25 / 1e4


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov), Adam or AdamW; weight decay applies to every parameter, as in the paper's recipe."""
    params = model.parameters()
    if config.name == "sgd":
        if config.nesterov and config.momentum <= 0:
            raise ValueError("Nesterov SGD needs a positive optim.momentum; set optim.momentum=0.9 or nesterov=false.")
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                               weight_decay=config.weight_decay)
    if config.name == "adam":
        return torch.optim.Adam(params, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay)
    if config.name == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay)
    raise ValueError(f"Unknown optimiser {config.name!r}; choose sgd, adam or adamw.")


def lr_multiplier(config: ScheduleConfig, step: int, epochs: int, steps_per_epoch: int) -> float:
    """The factor on the base LR for the iteration after ``step`` iterations have been taken."""
    total = max(epochs * steps_per_epoch, 1)
    if config.name == "constant":
        return 1.0
    if config.name == "multistep":
        milestone_steps = [max(round(m * epochs), 1) * steps_per_epoch for m in config.milestones]
        return config.gamma ** sum(step >= m for m in milestone_steps)
    if config.name == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(step / total, 1.0)))
    if config.name == "warmup_cosine":
        warmup = round(config.warmup_epochs * steps_per_epoch)
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min((step - warmup) / max(total - warmup, 1), 1.0)))
    if config.name == "onecycle":
        rise = round(config.warmup_epochs * steps_per_epoch) if config.warmup_epochs else round(0.3 * total)
        rise = min(max(rise, 1), total)
        start, end = 1 / ONECYCLE_START_DIVISOR, 1 / ONECYCLE_START_DIVISOR / ONECYCLE_END_DIVISOR
        if step < rise:
            return start + (1 - start) * 0.5 * (1 - math.cos(math.pi * step / rise))
        progress = min((step - rise) / max(total - rise, 1), 1.0)
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * progress))
    raise ValueError(f"Unknown schedule {config.name!r}; "
                     f"choose multistep, cosine, warmup_cosine, onecycle or constant.")


def build_scheduler(optimizer: torch.optim.Optimizer, config: ScheduleConfig, epochs: int,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    lr_multiplier(config, 0, epochs, steps_per_epoch)  # unknown names fail here, before training starts
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(config, step, epochs, steps_per_epoch)
    )
