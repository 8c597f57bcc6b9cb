"""A name -> builder registry, as in timm: ``list_models()`` is how users discover what exists."""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

from torch import nn

from .detection import BOX_RULES, RCNNClassifier
from .networks import MnistCNN, TinyResNet, cifar_net, imagenet_net


@dataclass(frozen=True)
class ModelInfo:
    """What the CLI, the dashboard and the benchmarks need to know about a model before building it."""

    name: str
    family: str  # cifar | imagenet | mnist | tiny
    builder: Callable[..., nn.Module]
    input_size: tuple[int, int, int]  # natural (C, H, W)
    num_classes: int
    regulated: bool
    options: dict[str, object] = field(default_factory=dict)  # option -> default
    choices: dict[str, tuple] = field(default_factory=dict)  # option -> allowed values


_REGISTRY: dict[str, ModelInfo] = {}
_REGULATOR_OPTIONS = {"cell": "lstm", "gates": "efficient", "se": False}
_REGULATOR_CHOICES = {"cell": ("lstm", "gru", "rnn"), "gates": ("efficient", "full"), "se": (False, True)}


def register(info: ModelInfo) -> None:
    _REGISTRY[info.name] = info


for _depth in (20, 32, 44, 56, 110):
    register(ModelInfo(f"resnet{_depth}", "cifar", partial(cifar_net, _depth, regulated=False), (3, 32, 32), 10,
                       False, {"se": False}, {"se": (False, True)}))
    register(ModelInfo(f"regnet{_depth}", "cifar", partial(cifar_net, _depth, regulated=True), (3, 32, 32), 10,
                       True, dict(_REGULATOR_OPTIONS), dict(_REGULATOR_CHOICES)))
for _depth in (18, 34, 50, 101):
    register(ModelInfo(f"resnet{_depth}", "imagenet", partial(imagenet_net, _depth, regulated=False),
                       (3, 224, 224), 1000, False, {"se": False}, {"se": (False, True)}))
    register(ModelInfo(f"regnet{_depth}", "imagenet", partial(imagenet_net, _depth, regulated=True),
                       (3, 224, 224), 1000, True, dict(_REGULATOR_OPTIONS), dict(_REGULATOR_CHOICES)))
register(ModelInfo("mnist_cnn", "mnist", MnistCNN, (1, 28, 28), 10, False, {"image_size": 28}))
register(ModelInfo("rcnn_classifier", "mnist", RCNNClassifier, (1, 28, 28), 10, False,
                   {"image_size": 28, "boxes": "auto"}, {"boxes": BOX_RULES}))
register(ModelInfo(
    "tiny_resnet", "tiny", TinyResNet, (3, 64, 64), 200, False,
    {"blocks": (2, 2, 2), "dropout": 0.1, "activation": "relu", "batch_norm": True},
    {"activation": ("relu", "gelu", "selu", "leaky_relu", "elu"), "batch_norm": (False, True)},
))


def list_models() -> list[str]:
    """Every registered model name, in a stable order."""
    return sorted(_REGISTRY, key=lambda n: (_REGISTRY[n].family, n.rstrip("0123456789"), len(n), n))


def model_info(name: str) -> ModelInfo:
    """The registry entry for ``name``; an unknown name raises ``ValueError`` with close matches."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"Unknown model {name!r}.{hint} `python -m regnet models` lists them all.") from None


def build_model(name: str, num_classes: int | None = None, in_channels: int | None = None, **options) -> nn.Module:
    """Build a registered model; unknown names and options raise one clear ``ValueError``."""
    info = model_info(name)
    unknown = sorted(set(options) - set(info.options))
    if unknown:
        accepted = ", ".join(info.options) or "no options"
        raise ValueError(f"Unknown option(s) {', '.join(unknown)} for model {name!r}; it accepts: {accepted}.")
    for key, value in options.items():
        allowed = info.choices.get(key)
        if allowed is not None and value not in allowed:
            raise ValueError(f"Option {key}={value!r} is not valid for {name!r}; choose one of {allowed}.")
    return info.builder(
        num_classes=num_classes or info.num_classes,
        in_channels=in_channels or info.input_size[0],
        **options,
    )


def natural_input_size(name: str, in_channels: int | None = None) -> tuple[int, int, int]:
    """The (C, H, W) the model was designed for, with ``in_channels`` swapped in if given."""
    c, h, w = model_info(name).input_size
    return (in_channels or c, h, w)
