"""``record(model)``: collect every regulated block's states and gates during a forward pass.

Recording is a list attached to the regulated blocks only inside the ``with``
block; outside it each block checks one attribute and does nothing else, so it
is free when off. Recorded tensors are detached (no graph is kept) and recording never changes
what the model computes.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import nn


@dataclass
class RegulatorRecord:
    """One time step of one stage's regulator: block ``step`` of stage ``stage``."""

    stage: int
    step: int
    input: torch.Tensor  # I^t, the cell's input (X2)
    hidden: torch.Tensor  # H^t
    cell: torch.Tensor | None  # C^t for ConvLSTM, None otherwise
    gates: dict[str, torch.Tensor] = field(default_factory=dict)
    output: torch.Tensor | None = None  # O^t, the block's output
    # H^{t-1} and C^{t-1} as this step read them: zeros at a stage's first block, and at every block
    # of a memory="reset" model.
    previous_hidden: torch.Tensor | None = None
    previous_cell: torch.Tensor | None = None


def regulated_blocks(model: nn.Module) -> list[nn.Module]:
    """The model's regulated blocks in forward order (empty for a plain ResNet)."""
    return [m for m in model.modules() if hasattr(m, "taps") and hasattr(m, "trace")]


@contextmanager
def record(model: nn.Module) -> Iterator[list[RegulatorRecord]]:
    """Yield a list that the next forward passes fill with one :class:`RegulatorRecord` per regulated block.

    >>> with record(model) as trace:
    ...     logits = model(x)
    >>> trace[0].hidden.shape
    """
    trace: list[RegulatorRecord] = []
    blocks = regulated_blocks(model)
    for block in blocks:
        block.trace = trace
    try:
        yield trace
    finally:
        for block in blocks:
            block.trace = None


@contextmanager
def regulator_ablated(model: nn.Module) -> Iterator[None]:
    """Take the regulator's output H as zeros where it enters the fusion, in every regulated block.

    The cells still run and their state still flows from block to block, so a
    trace or a hook on a tap sees the same states as without ablation. Here beside ``record``
    because both the engine (its per-epoch reliance on H) and the Inspect
    analyses use it, and the engine may not import ``regnet.inspect``.
    """
    blocks = regulated_blocks(model)
    for block in blocks:
        block.ablated = True
    try:
        yield
    finally:
        for block in blocks:
            block.ablated = False
