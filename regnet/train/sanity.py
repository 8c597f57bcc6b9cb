"""Sanity checks to run before a long training run (Karpathy's "recipe for training neural networks").

1. The initial loss should be near ln(classes): a fresh classifier should be
   unsure, and a far larger loss points at a bad init or a bad final layer.
2. The model should overfit one small batch to a loss near zero: if it cannot,
   something between the data and the loss is broken.
3. The baselines any trained model must beat: always predicting the majority
   class, and guessing uniformly at random (top-1 = 1/classes, loss = ln(classes)).

``synthetic=True`` reads no data at all: images are standard-normal noise of
the model's natural input shape and labels are uniform over its classes (for
regnet20: 3x32x32, 10 classes, CIFAR-10's shape). Checks 1 and 2 mean the same
on noise as on real images; the majority baseline is then that of random labels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from regnet.models import model_info

from .build import build_model_from_config, check_names, load_data, resolve_model
from .config import Config
from .distributed import resolve_device
from .loop import seed_everything

INITIAL_LOSS_TOLERANCE = 0.25  # |initial loss - ln C| / ln C
OVERFIT_TARGET = 0.01
OVERFIT_LR = 3e-3


@dataclass
class Check:
    name: str
    value: str
    expected: str
    passed: bool | None  # None: a reference figure, not a check


@dataclass
class SanityReport:
    description: str
    checks: list[Check]

    @property
    def passed(self) -> bool:
        return all(c.passed is not False for c in self.checks)

    def format(self) -> str:
        lines = [self.description, f"{'check':<32} {'value':<34} {'expected':<22} result"]
        for c in self.checks:
            result = "-" if c.passed is None else ("ok" if c.passed else "FAIL")
            lines.append(f"{c.name:<32} {c.value:<34} {c.expected:<22} {result}")
        lines.append("all checks passed" if self.passed else "some checks FAILED")
        return "\n".join(lines)


@dataclass
class _SanityData:
    description: str
    images: torch.Tensor  # a pool for the initial-loss batch and the overfit batch
    labels: torch.Tensor
    num_classes: int
    train_targets: list[int]
    val_targets: list[int]


def _synthetic_data(config: Config, count: int) -> _SanityData:
    info = model_info(config.model.name)
    channels, height, width = info.input_size
    classes = config.model.num_classes or info.num_classes
    config.model.num_classes, config.model.in_channels = classes, config.model.in_channels or channels
    config.model.options = {**info.options, **config.model.options}
    generator = torch.Generator().manual_seed(config.train.seed)
    images = torch.randn(count, config.model.in_channels, height, width, generator=generator)
    labels = torch.randint(classes, (count,), generator=generator)
    val = torch.randint(classes, (count,), generator=generator).tolist()
    return _SanityData(f"random images and labels of {config.model.name}'s natural input "
                       f"({config.model.in_channels}x{height}x{width}, {classes} classes); no data read",
                       images, labels, classes, labels.tolist(), val)


def _real_data(config: Config, count: int) -> _SanityData:
    splits = load_data(config, augment=False)
    resolve_model(config, splits.info)
    generator = torch.Generator().manual_seed(config.train.seed)
    picks = torch.randperm(len(splits.train), generator=generator)[:count].tolist()
    images = torch.stack([splits.train[i][0] for i in picks])
    labels = torch.tensor([splits.train[i][1] for i in picks])
    info = splits.info
    return _SanityData(f"{info.name} from {config.data.root} ({info.in_channels}x{info.image_size}x{info.image_size}, "
                       f"{info.num_classes} classes)", images, labels, info.num_classes, splits.train.targets,
                       splits.val.targets)


def run_sanity(config: Config, *, synthetic: bool = False, batch_size: int = 64, overfit_batch: int = 16,
               overfit_steps: int = 300, device: str | None = None) -> SanityReport:
    check_names(config)
    target = resolve_device(device or config.train.device)
    seed_everything(config.train.seed)
    pool = max(batch_size, overfit_batch)
    data = _synthetic_data(config, pool) if synthetic else _real_data(config, pool)
    model = build_model_from_config(config).to(target)
    criterion = nn.CrossEntropyLoss()
    chance = math.log(data.num_classes)
    checks = []

    # 1. the initial loss, in training mode as the first step sees it
    model.train()
    with torch.no_grad():
        initial = criterion(model(data.images[:batch_size].to(target)), data.labels[:batch_size].to(target)).item()
    checks.append(Check("initial loss", f"{initial:.4f} (batch of {min(batch_size, len(data.images))})",
                        f"ln({data.num_classes}) = {chance:.4f}",
                        abs(initial - chance) <= INITIAL_LOSS_TOLERANCE * chance))

    # 2. overfit one batch with Adam (robust to the config's LR, which is tuned for full training)
    images, labels = data.images[:overfit_batch].to(target), data.labels[:overfit_batch].to(target)
    optimizer = torch.optim.Adam(model.parameters(), lr=OVERFIT_LR)
    loss = math.inf
    steps = 0
    for steps in range(1, overfit_steps + 1):
        optimizer.zero_grad(set_to_none=True)
        batch_loss = criterion(model(images), labels)
        batch_loss.backward()
        optimizer.step()
        loss = batch_loss.item()
        if loss < OVERFIT_TARGET:
            break
    checks.append(Check(f"overfit one batch ({len(labels)} images)", f"loss {loss:.5f} after {steps} steps",
                        f"< {OVERFIT_TARGET}", loss < OVERFIT_TARGET))

    # 3. baselines
    counts = torch.bincount(torch.tensor(data.train_targets), minlength=data.num_classes)
    majority = int(counts.argmax())
    val = torch.tensor(data.val_targets)
    checks.append(Check("majority-class baseline", f"top-1 {(val == majority).float().mean().item():.4f} "
                        f"(always class {majority})", "a model must beat", None))
    checks.append(Check("uniform-random baseline", f"top-1 {1 / data.num_classes:.4f}, loss {chance:.4f}",
                        "a model must beat", None))
    return SanityReport(f"sanity: {config.model.name} on {data.description}, device {target}", checks)
