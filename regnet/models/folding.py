"""A model for inference with every batch norm that follows a convolution folded into that convolution.

In eval mode a batch norm is a fixed per-channel affine map, so a convolution
followed by one equals a single convolution with scaled kernels and a bias
(``torch.nn.utils.fusion.fuse_conv_bn_eval``). On a CPU each batch norm is a
whole pass over its map; folding them makes the lab's whole-split passes
(``regnet eval``, Inspect's analyses) faster at logits equal to about 1e-5.

The regulator's own norm on H (``regulator_norm``) follows the cell, not a
convolution, and stays; so do the taps, and with them every hook point.
"""
from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

# (convolution, batch norm) attribute pairs of the blocks in blocks.py: plain, bottleneck and regulated fusion.
CONV_BN_PAIRS = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"), ("fuse", "bn_fuse"))


def folded_for_inference(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with its conv + batch-norm pairs folded; ``model`` itself is unchanged.

    Pairs are a block's named ones (:data:`CONV_BN_PAIRS`) and a convolution
    directly followed by a batch norm inside an ``nn.Sequential`` (stems,
    projection shortcuts). A folded norm becomes ``nn.Identity``, so the
    module tree keeps its names. The copy is for inference only: its folded
    convolutions must not be trained.
    """
    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        for conv_name, bn_name in _pairs(module):
            conv, bn = getattr(module, conv_name), getattr(module, bn_name)
            setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
            setattr(module, bn_name, nn.Identity())
    return folded


def _pairs(module: nn.Module) -> list[tuple[str, str]]:
    """The (conv, norm) child names of ``module`` that fold: a Conv2d whose output goes straight into a BatchNorm2d."""
    children = dict(module.named_children())
    if isinstance(module, nn.Sequential):
        names = list(children)
        candidates = list(zip(names, names[1:]))
    else:
        candidates = [pair for pair in CONV_BN_PAIRS if pair[0] in children and pair[1] in children]
    return [(c, b) for c, b in candidates
            if isinstance(children[c], nn.Conv2d) and isinstance(children[b], nn.BatchNorm2d)
            and children[b].track_running_stats]
