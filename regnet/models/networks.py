"""The networks: the CIFAR and ImageNet ResNet/RegNet families and the two study networks.

Read like torchvision's ``resnet.py``: one backbone class, stages built from
blocks, and a builder per depth in ``registry.py``.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import SqueezeExcitation

from .blocks import BasicBlock, Bottleneck, Stage


class ResNetBackbone(nn.Module):
    """Stem, stages, global average pool and a linear classifier.

    ``head`` (pool + fc) is a method of its own so that the per-block read-out
    can apply the final classifier to any block's output (paper Fig. 1b).
    """

    def __init__(
        self,
        block: type[nn.Module],
        layers: list[int],
        widths: list[int],
        *,
        num_classes: int,
        in_channels: int = 3,
        imagenet_stem: bool = False,
        cell: str | None = None,
        gates: str = "efficient",
        se: bool = False,
        shortcut: str = "pad",
        regulated_stages: tuple[int, ...] | None = None,
        **regulator,
    ):
        """``regulated_stages``: the stages (numbered from 1) that get ``cell``, default all; the others are
        plain residual stages. ``regulator``: the :class:`Stage` ablation options (sharing, memory, h_norm,
        fusion)."""
        super().__init__()
        regulated_stages = range(1, len(layers) + 1) if regulated_stages is None else regulated_stages
        stem_width = widths[0] if not imagenet_stem else 64
        if imagenet_stem:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, stem_width, 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(stem_width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
        else:  # the CIFAR stem: one 3x3 conv, no pooling, so stage 1 runs at full resolution
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, stem_width, 3, padding=1, bias=False),
                nn.BatchNorm2d(stem_width),
                nn.ReLU(inplace=True),
            )
        stages, channels = [], stem_width
        for index, (n, width) in enumerate(zip(layers, widths)):
            stage = Stage(
                block, channels, width, n, stride=1 if index == 0 else 2,
                index=index, cell=cell if index + 1 in regulated_stages else None, gates=gates, se=se,
                shortcut=shortcut, **regulator,
            )
            stages.append(stage)
            channels = stage.out_channels
        self.stages = nn.ModuleList(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if isinstance(m, SqueezeExcitation):
                # A negative default bias can leave every squeeze unit ReLU-dead from the start.
                nn.init.zeros_(m.fc1.bias)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(features), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x)


SHORTCUTS = {"A": "pad", "B": "projection"}  # He et al.'s options A and B


def cifar_net(depth: int, *, regulated: bool, num_classes: int, in_channels: int = 3, cell: str = "lstm",
              shortcut: str = "A", **options) -> ResNetBackbone:
    """6n+2 layers: three stages of n basic blocks at widths 16/32/64 (He et al. 2016, Sec. 4.2).

    ``shortcut``: ``"A"`` zero-pads (the paper's, no parameters), ``"B"`` projects with a 1x1 convolution
    where the shape changes (the blocks of an earlier implementation, kept for comparison).
    """
    if (depth - 2) % 6:
        raise ValueError(f"A CIFAR ResNet has 6n+2 layers; {depth} is not of that form.")
    n = (depth - 2) // 6
    return ResNetBackbone(
        BasicBlock, [n, n, n], [16, 32, 64], num_classes=num_classes, in_channels=in_channels,
        cell=cell if regulated else None, shortcut=SHORTCUTS[shortcut], **options,
    )


IMAGENET_LAYERS = {18: (BasicBlock, [2, 2, 2, 2]), 34: (BasicBlock, [3, 4, 6, 3]),
                   50: (Bottleneck, [3, 4, 6, 3]), 101: (Bottleneck, [3, 4, 23, 3])}


def imagenet_net(depth: int, *, regulated: bool, num_classes: int, in_channels: int = 3,
                 cell: str = "lstm", **options) -> ResNetBackbone:
    """7x7 stem + max-pool, four stages at widths 64/128/256/512, projection shortcuts."""
    block, layers = IMAGENET_LAYERS[depth]
    return ResNetBackbone(
        block, layers, [64, 128, 256, 512], num_classes=num_classes, in_channels=in_channels,
        imagenet_stem=True, cell=cell if regulated else None, shortcut="projection", **options,
    )


class MnistCNN(nn.Module):
    """The MNIST study's CNN: conv 32/64/128 (3x3, padding 1), max-pool after each, FC 512, FC classes."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28):
        super().__init__()
        layers, channels = [], in_channels
        for width in (32, 64, 128):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            channels = width
        self.features = nn.Sequential(*layers)
        side = image_size // 8
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(128 * side * side, 512), nn.ReLU(inplace=True), nn.Linear(512, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "selu": nn.SELU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU}


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"Unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}.")
    return ACTIVATIONS[name]()


class TinyBlock(nn.Module):
    """conv-BN-act-Dropout2d-conv-BN, added to the shortcut, then act (the Tiny-ImageNet study's block)."""

    def __init__(self, in_channels: int, channels: int, stride: int, dropout: float, activation: str,
                 batch_norm: bool):
        super().__init__()

        def norm() -> nn.Module:
            return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()

        self.body = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=not batch_norm), norm(),
            make_activation(activation), nn.Dropout2d(dropout),
            nn.Conv2d(channels, channels, 3, padding=1, bias=not batch_norm), norm(),
        )
        if stride == 1 and in_channels == channels:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=not batch_norm), norm()
            )
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.shortcut(x) + self.body(x))


class TinyResNet(nn.Module):
    """The Tiny-ImageNet study's network: 3x3 stem to 64, stages 64/128/256 (stride 1/2/2), GAP + linear."""

    def __init__(self, num_classes: int = 200, in_channels: int = 3, blocks=(2, 2, 2), dropout: float = 0.1,
                 activation: str = "relu", batch_norm: bool = True):
        super().__init__()
        blocks = tuple(int(b) for b in blocks)
        if len(blocks) != 3 or min(blocks) < 1:
            raise ValueError(f"tiny_resnet needs three positive block counts, e.g. (2, 2, 2); got {blocks}.")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 3, padding=1, bias=not batch_norm),
            nn.BatchNorm2d(64) if batch_norm else nn.Identity(), make_activation(activation),
        )
        layers, channels = [], 64
        for n, width, stride in zip(blocks, (64, 128, 256), (1, 2, 2)):
            for i in range(n):
                layers.append(TinyBlock(channels, width, stride if i == 0 else 1, dropout, activation, batch_norm))
                channels = width
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))
