"""The regulator's one speed layer: the efficient gate convolution evaluated in a CPU-friendly order.

The paper's efficient gates are a grouped 1x1 convolution over interleaved
``[X, H]`` followed by a depthwise 3x3 (:class:`~regnet.models.cells.GateConv`).
Both are linear, so gate k of channel c equals ``(a[k,c] K[k,c]) * x_c +
(b[k,c] K[k,c]) * h_c + bias[k,c]``: two depthwise 3x3 convolutions with the
kernels folded together, computed channels-last. On a CPU that is faster
because oneDNN takes a slow path for a grouped convolution with two inputs per
group and for NCHW depthwise convolutions; the interleaving copy of ``[X, H]``
disappears too. It is the same function in plain differentiable PyTorch ops
(values equal to float rounding, gradients by autograd), so nothing is
compiled and ``torch.compile`` could trace it; the parameters, and so the
checkpoints, keep the paper's layout.

One switch, read at every call: the ``REGNET_FAST`` environment variable
(``0`` turns the layer off), overridden inside :func:`gates_in_order` by the
config's ``train.fast_gates``. It applies on CPUs only, and never under
``torch.compile``, whose compiler fuses the paper's order itself.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import torch
from torch.nn import functional as F

ENV = "REGNET_FAST"
_choice: bool | None = None  # set only inside gates_in_order()


def switched_on() -> bool:
    """Whether the layer is on: :func:`gates_in_order`'s choice, else ``REGNET_FAST`` (on unless ``0``)."""
    return os.environ.get(ENV, "1") != "0" if _choice is None else _choice


def enabled(x: torch.Tensor) -> bool:
    """Whether :func:`efficient_gates` computes the gates on ``x``: switched on, a CPU tensor, not compiling."""
    return x.device.type == "cpu" and not torch.compiler.is_compiling() and switched_on()


@contextmanager
def gates_in_order(fast: bool | None) -> Iterator[None]:
    """Within the block, the layer is on (``True``), off (``False``) or as ``REGNET_FAST`` says (``None``)."""
    global _choice
    before, _choice = _choice, fast
    try:
        yield
    finally:
        _choice = before


def describe(model: torch.nn.Module, device: torch.device) -> str | None:
    """One line for a run's log on how its efficient gates run, or None for a model without them."""
    if not any(getattr(m, "form", None) == "efficient" for m in model.modules()):
        return None
    if device.type == "cpu" and switched_on():
        return f"regulator gates: folded depthwise convolutions, channels-last (regnet.models.fast; {ENV}=0 turns it off)"
    return "regulator gates: the paper's grouped 1x1 then depthwise 3x3 convolutions"


def folded_kernels(conv) -> tuple[torch.Tensor, torch.Tensor]:
    """The grouped 1x1 folded into the depthwise kernels, ``[gate, (x, h), C, 1, 3, 3]``, and the bias ``[gate, C]``.

    Computed from the parameters at every call (a few thousand numbers), so
    autograd carries the gradients back to the paper's parameters.
    """
    c, g = conv.hidden_channels, conv.num_gates
    pointwise = conv.pointwise.weight.view(c, g, 2, 1)  # [channel, gate, (x, h), 1]
    kernels = (pointwise * conv.depthwise.weight.view(c, g, 1, 9)).permute(1, 2, 0, 3)  # [gate, (x, h), channel, 9]
    return kernels.reshape(g, 2, c, 1, 3, 3), conv.depthwise.bias.view(c, g).t()


def efficient_gates(conv, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``conv(x, h)``'s pre-activations, one channels-last map per gate, by the folded kernels.

    A zero state (a stage's first step: the cells' broadcast zero, see
    ``zero_state``) adds nothing to any gate, so its convolutions are skipped.
    """
    kernels, bias = folded_kernels(conv)
    x = x.contiguous(memory_format=torch.channels_last)
    c = conv.hidden_channels
    gates = [F.conv2d(x, kernels[k, 0], bias[k], padding=1, groups=c) for k in range(conv.num_gates)]
    if _broadcast_zero(h):
        return tuple(gates)
    h = h.contiguous(memory_format=torch.channels_last)
    return tuple(g + F.conv2d(h, kernels[k, 1], padding=1, groups=c) for k, g in enumerate(gates))


def _broadcast_zero(t: torch.Tensor) -> bool:
    """Whether ``t`` is one zero broadcast to its shape (it then needs no gradient of its own)."""
    return all(s == 0 for s in t.stride()) and not t.requires_grad and t.reshape(-1)[:1].item() == 0
