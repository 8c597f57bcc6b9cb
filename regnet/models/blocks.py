"""Residual blocks, plain and regulated, and the stage that chains them (paper Fig. 3, Table II).

A regulated block runs a recurrent cell *beside* its convolutions: the cell
reads the block's first features X2, and its output H, after BN and ReLU, is
fused with the features by a 1x1 convolution. The cell is owned by the stage
and shared by its blocks, so block t of a stage is time step t of the regulator.

Other ways to build the regulator are offered as ablations (the defaults are the paper's):
one cell per block (``sharing="block"``), a state reset at every block (``memory="reset"``),
no BN+ReLU on H (``h_norm=False``) and H replacing X2 instead of being fused with it
(``fusion="replace"``).
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import SqueezeExcitation

from .cells import StepTaps, make_cell
from .recording import RegulatorRecord


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


def squeeze_excitation(channels: int, reduction: int = 16) -> SqueezeExcitation:
    return SqueezeExcitation(channels, max(channels // reduction, 4))


class PadShortcut(nn.Module):
    """He et al.'s CIFAR shortcut (option A): subsample and zero-pad channels, no parameters."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.extra = out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return nn.functional.pad(x, (0, 0, 0, 0, 0, self.extra))


def make_shortcut(in_channels: int, out_channels: int, stride: int, kind: str) -> nn.Module:
    """Identity when shapes agree, else the CIFAR ``pad`` shortcut or a 1x1 ``projection``."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    if kind == "pad":
        return PadShortcut(in_channels, out_channels, stride)
    if kind == "projection":
        return nn.Sequential(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))
    raise ValueError(f"Unknown shortcut {kind!r}; choose 'pad' or 'projection'.")


class _Residual(nn.Module):
    """A residual block as three parts, split where the regulated twin (Fig. 3) joins in.

    ``first`` gives X2, the features a regulator reads; ``middle`` the features its output is fused with;
    ``last`` the rest of the block, added to the shortcut. A regulated block reuses these layers (and their
    state_dict names) instead of repeating them, and puts its fusion between ``middle`` and ``last``.
    """

    def first(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn1(self.conv1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(self.middle(self.first(x)), x)


class BasicBlock(_Residual):
    """conv3x3-BN-ReLU-conv3x3-BN (+SE), added to the shortcut, then ReLU."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1, se: bool = False, shortcut: str = "pad"):
        super().__init__()
        out = channels * self.expansion
        self.conv1 = conv3x3(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = conv3x3(channels, out)
        self.bn2 = nn.BatchNorm2d(out)
        self.se = squeeze_excitation(out) if se else nn.Identity()
        self.shortcut = make_shortcut(in_channels, out, stride, shortcut)
        self.relu = nn.ReLU(inplace=True)

    def middle(self, x2: torch.Tensor) -> torch.Tensor:
        return x2  # a basic block fuses the regulator with X2 itself

    def last(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.shortcut(x) + self.se(self.bn2(self.conv2(y))))


class Bottleneck(_Residual):
    """1x1 reduce (strided) - 3x3 - 1x1 expand, with BN, added to the shortcut.

    The stride sits on the first 1x1 (ResNet v1) so that the regulated twin's
    cell, which reads the first features, already sees the stage's resolution;
    the plain block does the same to stay a fair baseline.
    """

    expansion = 4

    def __init__(
        self, in_channels: int, channels: int, stride: int = 1, se: bool = False, shortcut: str = "projection"
    ):
        super().__init__()
        out = channels * self.expansion
        self.conv1 = conv1x1(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = conv1x1(channels, out)
        self.bn3 = nn.BatchNorm2d(out)
        self.se = squeeze_excitation(out) if se else nn.Identity()
        self.shortcut = make_shortcut(in_channels, out, stride, shortcut)
        self.relu = nn.ReLU(inplace=True)

    def middle(self, x2: torch.Tensor) -> torch.Tensor:
        """X3 = 3x3(X2): the bottleneck fuses the regulator after its 3x3."""
        return self.relu(self.bn2(self.conv2(x2)))

    def last(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.shortcut(x) + self.se(self.bn3(self.conv3(y))))


class _Regulated:
    """A plain block's layers plus a regulator beside them (Fig. 3): its norm, the fusion, taps and recording.

    Mixed in before the plain block it regulates: ``first`` and ``last`` are the plain block's, and the cell
    reads ``first``'s output X2. With ``fusion="concat"`` (the paper's) H is fused with ``middle``'s output by
    a 1x1 convolution; with ``"replace"`` H takes X2's place, so ``middle`` reads H and there is no fusion layer.
    """

    def __init__(self, in_channels: int, channels: int, stride: int = 1, se: bool = False, shortcut: str | None = None,
                 *, taps: StepTaps, stage: int = 0, step: int = 0, h_norm: bool = True, fusion: str = "concat"):
        super().__init__(in_channels, channels, stride, se, shortcut or self.default_shortcut)
        self.stage_index = stage
        self.step_index = step
        self.taps = taps
        # BN+ReLU on H before fusion (Fig. 3).
        self.regulator_norm = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU()) if h_norm else nn.Identity()
        if fusion == "concat":
            self.fuse = conv1x1(2 * channels, channels)
            self.bn_fuse = nn.BatchNorm2d(channels)
        elif fusion != "replace":
            raise ValueError(f"Unknown fusion {fusion!r}; choose 'concat' or 'replace'.")
        self.fusion = fusion
        self.trace: list[RegulatorRecord] | None = None  # set by regnet.record
        self.ablated = False  # set by regnet.models.regulator_ablated: H enters the fusion as zeros

    def forward(self, x: torch.Tensor, cell: nn.Module, state=None):
        """``(out, state)``: block ``step_index`` of its stage, and the regulator's state for the next block."""
        x2 = self.first(x)
        h, new_state, gates = cell(x2, state, self.taps)
        regulated = torch.zeros_like(h) if self.ablated else self.regulator_norm(h)
        if self.fusion == "concat":
            x3 = self.relu(self.bn_fuse(self.fuse(torch.cat((self.middle(x2), regulated), dim=1))))
        else:
            x3 = self.middle(regulated)
        out = self.taps.output(self.last(x3, x))
        if self.trace is not None:
            previous = cell.zero_state(x2) if state is None else state
            self._record(x2, h, new_state, gates, out, tuple(p.contiguous() for p in previous))
        return out, new_state

    def _record(self, cell_input, h, state, gates, out, previous) -> None:
        """One :class:`RegulatorRecord`; ``previous`` is the state this step read (zeros at a stage's start)."""
        self.trace.append(
            RegulatorRecord(
                stage=self.stage_index,
                step=self.step_index,
                input=cell_input.detach(),
                hidden=h.detach(),
                cell=state[1].detach() if len(state) > 1 else None,
                gates={k: v.detach() for k, v in gates.items()},
                output=out.detach(),
                previous_hidden=previous[0].detach(),
                previous_cell=previous[1].detach() if len(previous) > 1 else None,
            )
        )


class RegulatedBasicBlock(_Regulated, BasicBlock):
    """Fig. 3a: X2 = conv3x3(X1); H = cell(X2); X3 = fuse[X2, H]; X4 = BN(conv3x3(X3)); out = ReLU(X1 + X4)."""

    default_shortcut = "pad"


class RegulatedBottleneck(_Regulated, Bottleneck):
    """Fig. 3b: X2 = 1x1 reduce; H = cell(X2); X3 = 3x3(X2); fuse[X3, H]; 1x1 expand; add; ReLU."""

    default_shortcut = "projection"


REGULATED = {BasicBlock: RegulatedBasicBlock, Bottleneck: RegulatedBottleneck}


class Stage(nn.Module):
    """A run of blocks at one width; with ``cell`` set, a regulator beside each of them.

    ``sharing="stage"`` (the paper's): one cell shared by all the blocks, so block t is its time step t;
    ``"block"``: a cell of each block's own. ``memory="carry"`` (the paper's): the state starts at zero at
    the stage's first block and flows from block to block; ``"reset"``: every block starts from zero. The
    state never crosses into the next stage.
    """

    def __init__(
        self,
        block: type[nn.Module],
        in_channels: int,
        channels: int,
        num_blocks: int,
        stride: int,
        *,
        index: int = 0,
        cell: str | None = None,
        gates: str = "efficient",
        se: bool = False,
        shortcut: str = "pad",
        sharing: str = "stage",
        memory: str = "carry",
        h_norm: bool = True,
        fusion: str = "concat",
    ):
        super().__init__()
        if sharing not in ("stage", "block") or memory not in ("carry", "reset"):
            raise ValueError(f"Unknown sharing={sharing!r} or memory={memory!r}; choose stage|block and carry|reset.")
        out = channels * block.expansion
        self.regulated = cell is not None
        self.memory = memory
        if self.regulated and sharing == "stage":
            self.cell = make_cell(cell, channels, channels, gates)  # the paper's name: old checkpoints load
        elif self.regulated:
            self.cells = nn.ModuleList(make_cell(cell, channels, channels, gates) for _ in range(num_blocks))
        blocks = []
        for step in range(num_blocks):
            block_in, block_stride = (in_channels, stride) if step == 0 else (out, 1)
            if not self.regulated:
                blocks.append(block(block_in, channels, block_stride, se, shortcut))
            else:
                blocks.append(
                    REGULATED[block](
                        block_in, channels, block_stride, se, shortcut, taps=self.cell_for(step).make_taps(),
                        stage=index, step=step, h_norm=h_norm, fusion=fusion,
                    )
                )
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = out

    def cell_for(self, step: int) -> nn.Module:
        """The cell that regulates block ``step``: the stage's one, or the block's own."""
        return self.cells[step] if hasattr(self, "cells") else self.cell

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.regulated:
            for block in self.blocks:
                x = block(x)
            return x
        state = None  # zero state at the stage's first block
        for step, block in enumerate(self.blocks):
            x, state = block(x, self.cell_for(step), None if self.memory == "reset" else state)
        return x
