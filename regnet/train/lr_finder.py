"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates"; fastai's lr_find).

Train from the config's fresh model while the LR grows log-evenly from
``min_lr`` to ``max_lr``, one batch per LR, and record the loss. The loss
falls once the LR is large enough to learn and explodes once it is too large;
the suggestion is the LR where the smoothed loss falls fastest (the steepest
negative slope against log LR), read before the loss's minimum. The curve is
written as CSV and JSON so that it can be plotted and the choice checked.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from torch import nn

from .build import build_model_from_config, check_names, load_data, make_loader, resolve_model
from .config import Config, config_to_dict
from .distributed import SeededShardSampler, autocast, resolve_device
from .loop import seed_everything
from regnet.runs import atomic_write_json, atomic_write_text
from .schedules import build_optimizer

SMOOTHING = 0.9  # exponential moving average of the loss, bias-corrected as in fastai
DIVERGED = 4.0  # stop once the smoothed loss exceeds 4x its best


def suggest_lr(lrs: list[float], smoothed: list[float]) -> float:
    """The LR of the steepest descent of the smoothed loss against log LR, before its minimum.

    Slopes are taken across a window of a tenth of the sweep, so that one noisy
    batch cannot make a slope; with too few points before the minimum, a tenth
    of the lowest-loss LR (the classic rule) is suggested instead.
    """
    lowest = min(range(len(smoothed)), key=lambda i: smoothed[i])
    w = max(1, len(smoothed) // 10)
    if lowest < 2 * w:
        return lrs[lowest] / 10
    logs = [math.log10(lr) for lr in lrs]
    slopes = {i: (smoothed[i + w] - smoothed[i - w]) / (logs[i + w] - logs[i - w]) for i in range(w, lowest - w + 1)}
    return lrs[min(slopes, key=slopes.get)]


def find_lr(config: Config, out_dir: str | Path, *, min_lr: float = 1e-6, max_lr: float = 10.0, steps: int = 100,
            device: str | None = None) -> dict:
    """Run the range test with the config's model, data, optimiser and batch size; write the curve to ``out_dir``."""
    if not 0 < min_lr < max_lr:
        raise ValueError(f"The LR range needs 0 < --min-lr < --max-lr, got {min_lr} and {max_lr}.")
    if steps < 5:
        raise ValueError(f"--steps must be at least 5 to draw a curve, got {steps}.")
    check_names(config)
    target = resolve_device(device or config.train.device)
    t = config.train
    seed_everything(t.seed)
    splits = load_data(config)
    resolve_model(config, splits.info)
    model = build_model_from_config(config).to(target)
    config.optim.lr = min_lr
    optimizer = build_optimizer(model, config.optim)
    factor = (max_lr / min_lr) ** (1 / (steps - 1))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: factor ** i)
    criterion = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)
    sampler = SeededShardSampler(len(splits.train), t.seed)
    loader = make_loader(splits.train, t.batch_size, sampler, config.data.workers, target)

    def batches():  # as many epochs as the sweep needs
        epoch = 0
        while True:
            sampler.set_epoch(epoch)
            yield from loader
            epoch += 1

    lrs, losses, smoothed = [], [], []
    average, best = 0.0, math.inf
    model.train()
    started = time.time()
    for _, (images, targets) in zip(range(steps), batches()):
        images, targets = images.to(target), targets.to(target)
        with autocast(target, t.amp, t.amp_dtype):
            loss = criterion(model(images), targets)
        value = loss.item()
        lrs.append(optimizer.param_groups[0]["lr"])
        losses.append(value)
        if not math.isfinite(value):
            smoothed.append(math.inf)
            break
        average = SMOOTHING * average + (1 - SMOOTHING) * value
        smoothed.append(average / (1 - SMOOTHING ** len(lrs)))
        best = min(best, smoothed[-1])
        if smoothed[-1] > DIVERGED * best:
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if t.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        optimizer.step()
        scheduler.step()

    finite = [i for i, s in enumerate(smoothed) if math.isfinite(s)]
    suggested = suggest_lr([lrs[i] for i in finite], [smoothed[i] for i in finite]) if finite else min_lr
    lowest = lrs[min(finite, key=lambda i: smoothed[i])] if finite else min_lr
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = [["lr", "loss", "smoothed_loss"], *[[f"{a:.6g}", f"{b:.6g}", f"{c:.6g}"]
                                                 for a, b, c in zip(lrs, losses, smoothed)]]
    atomic_write_text(out / "lr_find.csv", "".join(",".join(row) + "\n" for row in lines))
    result = {
        "model": config.model.name, "dataset": config.data.name, "optimizer": config.optim.name,
        "batch_size": t.batch_size, "min_lr": min_lr, "max_lr": max_lr, "steps": len(lrs),
        "suggested_lr": suggested, "lowest_loss_lr": lowest, "seconds": time.time() - started,
        "lrs": lrs, "losses": losses, "smoothed_losses": [s if math.isfinite(s) else None for s in smoothed],
        "config": config_to_dict(config),
    }
    atomic_write_json(out / "lr_find.json", result)
    return result

