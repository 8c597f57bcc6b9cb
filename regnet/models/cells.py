"""Convolutional recurrent cells: the regulator of a RegNet stage (paper Sec. III-B).

A stage's blocks are the cell's time steps: the cell is called once per block
with that block's features X_t and the state the block before left, and
returns ``(H_t, state_t, gates)``. Every gate of a cell comes from one
convolution over ``[X_t, H_{t-1}]`` whose output is split afterwards
(:class:`GateConv`), in one of two forms:

* ``efficient`` (the paper's): X and H interleaved channel by channel, a
  grouped 1x1 convolution mixing each pair ``[x_c, h_c]`` into the gates of
  channel c, then a depthwise 3x3 convolution for each gate's spatial
  context. Parameters grow linearly with the width.
* ``full``: one dense 3x3 convolution over ``cat[X, H]``. Parameters grow with
  the square of the width.

The state before a stage's first block is zero. Each cell's ``forward`` is the
paper's equations in plain PyTorch; the only speed layer is
:mod:`regnet.models.fast`, which :class:`GateConv` calls in one place.

Every gate and state of a step passes through a :class:`StepTaps` identity
module: the cell is reused across steps, but attribution hooks need a
distinct module per step.
"""
from __future__ import annotations

import torch
from torch import nn

from . import fast

GATE_FORMS = ("efficient", "full")


class StepTaps(nn.Module):
    """Identity modules on the hidden state, cell state, each gate and the block output of one step.

    They compute nothing; they exist so that a hook (e.g. captum's
    ``LayerGradCam``) can target step t of a stage on its own, and target a
    regulated block's output although the block itself returns ``(out, state)``.
    """

    def __init__(self, gate_names: tuple[str, ...], has_cell: bool):
        super().__init__()
        self.hidden = nn.Identity()
        self.output = nn.Identity()
        self.cell = nn.Identity() if has_cell else None
        self.gates = nn.ModuleDict({name: nn.Identity() for name in gate_names})


class GateConv(nn.Module):
    """One convolution producing ``num_gates`` maps of ``hidden_channels`` each from ``[X, H]``."""

    def __init__(self, in_channels: int, hidden_channels: int, num_gates: int, form: str):
        super().__init__()
        if form not in GATE_FORMS:
            raise ValueError(f"Unknown gate form {form!r}; choose one of {', '.join(GATE_FORMS)}.")
        if form == "efficient" and in_channels != hidden_channels:
            raise ValueError(
                f"The efficient gate form pairs input and hidden channels one to one, so it needs "
                f"in_channels == hidden_channels (got {in_channels} and {hidden_channels}); use gates='full'."
            )
        self.form = form
        self.num_gates = num_gates
        self.hidden_channels = hidden_channels
        out = num_gates * hidden_channels
        if form == "efficient":
            # groups=C: group c sees exactly [x_c, h_c] and writes the gates of channel c.
            self.pointwise = nn.Conv2d(2 * hidden_channels, out, 1, groups=hidden_channels, bias=False)
            self.depthwise = nn.Conv2d(out, out, 3, padding=1, groups=out, bias=True)
        else:
            self.conv = nn.Conv2d(in_channels + hidden_channels, out, 3, padding=1, bias=True)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The gates' pre-activations from ``[X, H]``, one map per gate."""
        if self.form == "full":
            return self.conv(torch.cat((x, h), dim=1)).chunk(self.num_gates, dim=1)
        if fast.enabled(x):
            return fast.efficient_gates(self, x, h)
        pairs = torch.stack((x, h), dim=2).flatten(1, 2)  # x_0, h_0, x_1, h_1, ...
        # Group c wrote channels [G*c, G*c + G): gate k of channel c sits at G*c + k.
        return self.depthwise(self.pointwise(pairs)).unflatten(1, (self.hidden_channels, self.num_gates)).unbind(2)


def _tap(taps: StepTaps | None, name: str, t: torch.Tensor) -> torch.Tensor:
    """``t`` through the tap ``name`` (``hidden`` or ``cell``) of a step's taps, if the step has taps."""
    return t if taps is None else getattr(taps, name)(t)


class _ConvCell(nn.Module):
    """What the three cells share: shape checks, the zero state, and their taps."""

    gate_names: tuple[str, ...] = ()
    has_cell_state = False

    def __init__(self, in_channels: int, hidden_channels: int):
        super().__init__()
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels

    def make_taps(self) -> StepTaps:
        return StepTaps(self.gate_names, self.has_cell_state)

    def zero_state(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The state before a stage's first step: zeros of the state's shape.

        One zero broadcast to that shape (no memory, and :mod:`.fast` can see
        that the H half of ``[X, H]`` contributes nothing); ``.contiguous()``
        gives a tensor of one's own.
        """
        shape = (x.shape[0], self.hidden_channels, x.shape[2], x.shape[3])
        return tuple(x.new_zeros(()).expand(shape) for _ in range(2 if self.has_cell_state else 1))

    def initial(self, x: torch.Tensor, state) -> tuple[torch.Tensor, ...]:
        """The state this step reads: ``state`` as a tuple, or zeros for ``None``; a shape mismatch raises ``ValueError``."""
        name = type(self).__name__
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{name} expects input of shape (N, {self.in_channels}, H, W), received {tuple(x.shape)}.")
        if state is None:
            return self.zero_state(x)
        state = (state,) if isinstance(state, torch.Tensor) else tuple(state)
        expected = (x.shape[0], self.hidden_channels, x.shape[2], x.shape[3])
        n = 2 if self.has_cell_state else 1
        if len(state) != n or any(tuple(s.shape) != expected for s in state):
            raise ValueError(f"{name} expects a state of {n} tensor(s) of shape {expected} to match its input, "
                             f"received {[tuple(s.shape) for s in state]}.")
        return state

    @staticmethod
    def tapped(taps: StepTaps | None, **gates: torch.Tensor) -> dict[str, torch.Tensor]:
        return gates if taps is None else {name: taps.gates[name](g) for name, g in gates.items()}


class ConvRNNCell(_ConvCell):
    """H_t = tanh(W * [X_t, H_{t-1}])."""

    def __init__(self, in_channels: int, hidden_channels: int, gates: str = "efficient"):
        super().__init__(in_channels, hidden_channels)
        self.conv = GateConv(in_channels, hidden_channels, 1, gates)

    def forward(self, x: torch.Tensor, state=None, taps: StepTaps | None = None):
        """``(H_t, (H_t,), {})`` from ``X_t`` and ``state = (H_{t-1},)`` (``None``: zero)."""
        (h_prev,) = self.initial(x, state)
        (pre,) = self.conv(x, h_prev)
        h = _tap(taps, "hidden", torch.tanh(pre))
        return h, (h,), {}


class ConvGRUCell(_ConvCell):
    """z, r = sigmoid(W * [X, H]); candidate = tanh(U * [X, r*H]); H_t = (1 - z) * H_{t-1} + z * candidate."""

    gate_names = ("z", "r", "candidate")

    def __init__(self, in_channels: int, hidden_channels: int, gates: str = "efficient"):
        super().__init__(in_channels, hidden_channels)
        self.gates = GateConv(in_channels, hidden_channels, 2, gates)
        # The candidate reads r*H, which only exists after the gates: it cannot share their conv.
        self.candidate = GateConv(in_channels, hidden_channels, 1, gates)

    def forward(self, x: torch.Tensor, state=None, taps: StepTaps | None = None):
        """``(H_t, (H_t,), gates)`` from ``X_t`` and ``state = (H_{t-1},)`` (``None``: zero)."""
        (h_prev,) = self.initial(x, state)
        z, r = (torch.sigmoid(p) for p in self.gates(x, h_prev))
        g = self.tapped(taps, z=z, r=r)
        (candidate,) = self.candidate(x, g["r"] * h_prev)
        g.update(self.tapped(taps, candidate=torch.tanh(candidate)))
        h = _tap(taps, "hidden", (1 - g["z"]) * h_prev + g["z"] * g["candidate"])
        return h, (h,), g


class ConvLSTMCell(_ConvCell):
    """i, f, o = sigmoid(.), g = tanh(.) of W * [X, H]; C_t = f * C_{t-1} + i * g; H_t = o * tanh(C_t)."""

    gate_names = ("i", "f", "o", "g")
    has_cell_state = True

    def __init__(self, in_channels: int, hidden_channels: int, gates: str = "efficient"):
        super().__init__(in_channels, hidden_channels)
        self.conv = GateConv(in_channels, hidden_channels, 4, gates)

    def forward(self, x: torch.Tensor, state=None, taps: StepTaps | None = None):
        """``(H_t, (H_t, C_t), gates)`` from ``X_t`` and ``state = (H_{t-1}, C_{t-1})`` (``None``: zeros)."""
        h_prev, c_prev = self.initial(x, state)
        i, f, o, g = self.conv(x, h_prev)
        gates = self.tapped(taps, i=torch.sigmoid(i), f=torch.sigmoid(f), o=torch.sigmoid(o), g=torch.tanh(g))
        c = _tap(taps, "cell", gates["f"] * c_prev + gates["i"] * gates["g"])
        h = _tap(taps, "hidden", gates["o"] * torch.tanh(c))
        return h, (h, c), gates


CELLS = {"rnn": ConvRNNCell, "gru": ConvGRUCell, "lstm": ConvLSTMCell}


def make_cell(kind: str, in_channels: int, hidden_channels: int, gates: str = "efficient") -> _ConvCell:
    """Build a cell by name (``rnn``, ``gru``, ``lstm``)."""
    if kind not in CELLS:
        raise ValueError(f"Unknown cell {kind!r}; choose one of {', '.join(CELLS)}.")
    return CELLS[kind](in_channels, hidden_channels, gates)


__all__ = ["ConvRNNCell", "ConvGRUCell", "ConvLSTMCell", "GateConv", "StepTaps", "make_cell", "CELLS", "GATE_FORMS"]
