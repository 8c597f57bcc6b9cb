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
    stages: int = 0  # residual stages, the range of ``regulated_stages``


_REGISTRY: dict[str, ModelInfo] = {}
# The regulator's options; the defaults are the paper's, the alternatives the seeds' variants (blocks.py).
_REGULATOR_OPTIONS = {"cell": "lstm", "gates": "efficient", "se": False, "sharing": "stage", "memory": "carry",
                      "h_norm": True, "fusion": "concat"}
_REGULATOR_CHOICES = {"cell": ("lstm", "gru", "rnn"), "gates": ("efficient", "full"), "se": (False, True),
                      "sharing": ("stage", "block"), "memory": ("carry", "reset"), "h_norm": (False, True),
                      "fusion": ("concat", "replace")}
_SHORTCUT = ({"shortcut": "A"}, {"shortcut": ("A", "B")})  # CIFAR only: ImageNet nets always project


def register(info: ModelInfo) -> None:
    _REGISTRY[info.name] = info


def _register_family(family: str, builder: Callable[..., nn.Module], depths: tuple[int, ...], stages: int,
                     input_size: tuple[int, int, int], num_classes: int, extra: tuple[dict, dict]) -> None:
    """``resnet<depth>`` and ``regnet<depth>`` of one family; ``extra``: (defaults, choices) both accept."""
    for depth in depths:
        plain = ({"se": False, **extra[0]}, {"se": (False, True), **extra[1]})
        regulated = ({**_REGULATOR_OPTIONS, **extra[0], "regulated_stages": tuple(range(1, stages + 1))},
                     {**_REGULATOR_CHOICES, **extra[1]})
        for prefix, flag, (options, choices) in (("resnet", False, plain), ("regnet", True, regulated)):
            register(ModelInfo(f"{prefix}{depth}", family, partial(builder, depth, regulated=flag), input_size,
                               num_classes, flag, dict(options), dict(choices), stages))


_register_family("cifar", cifar_net, (20, 32, 44, 56, 110), 3, (3, 32, 32), 10, _SHORTCUT)
_register_family("imagenet", imagenet_net, (18, 34, 50, 101), 4, (3, 224, 224), 1000, ({}, {}))
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


def check_options(name: str, options: dict) -> None:
    """One ``ValueError`` sentence for an option ``name`` does not accept, a value outside its choices, or a
    ``regulated_stages`` that names a stage the model does not have."""
    info = model_info(name)
    unknown = sorted(set(options) - set(info.options))
    if unknown:
        accepted = ", ".join(info.options) or "no options"
        raise ValueError(f"Unknown option(s) {', '.join(unknown)} for model {name!r}; it accepts: {accepted}.")
    for key, value in options.items():
        allowed = info.choices.get(key)
        if allowed is not None and value not in allowed:
            raise ValueError(f"Option {key}={value!r} is not valid for {name!r}; choose one of {allowed}.")
    if "regulated_stages" in options:
        _check_stages(name, options["regulated_stages"], info.stages)


def _check_stages(name: str, stages, count: int) -> None:
    numbers = ", ".join(map(str, range(1, count + 1)))
    if (not isinstance(stages, (list, tuple)) or not stages or len(set(stages)) != len(stages)
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in stages)):
        raise ValueError(f"regulated_stages for {name!r} must be a non-empty list of distinct stage numbers "
                         f"from {numbers}, e.g. [1]; got {stages!r}.")
    missing = [s for s in stages if not 1 <= s <= count]
    if missing:
        raise ValueError(f"regulated_stages={list(stages)} names stage(s) {missing} that {name!r} does not have; "
                         f"its stages are {numbers}.")


def build_model(name: str, num_classes: int | None = None, in_channels: int | None = None, **options) -> nn.Module:
    """Build a registered model; unknown names and options raise one clear ``ValueError``."""
    check_options(name, options)
    info = model_info(name)
    return info.builder(
        num_classes=num_classes or info.num_classes,
        in_channels=in_channels or info.input_size[0],
        **options,
    )


def natural_input_size(name: str, in_channels: int | None = None) -> tuple[int, int, int]:
    """The (C, H, W) the model was designed for, with ``in_channels`` swapped in if given."""
    c, h, w = model_info(name).input_size
    return (in_channels or c, h, w)
