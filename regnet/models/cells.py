"""Convolutional recurrent cells: the regulator of a RegNet stage.

A stage's blocks are the cell's time steps, so a cell is called once per block
with that block's features X and the state left by the block before. Every gate
of a cell comes from one convolution whose output is split afterwards, in one
of two forms:

* ``efficient`` (the paper's): X and H are interleaved channel by channel, a
  grouped 1x1 convolution mixes each pair ``[x_c, h_c]`` into the gates of
  channel c, then a depthwise 3x3 convolution gives each gate its spatial
  context. Parameters grow linearly with the width.
* ``full``: one dense 3x3 convolution over ``cat[X, H]``. Parameters grow with
  the square of the width.

Cells take an optional ``taps`` object (see :class:`StepTaps`) so that every
state and gate of one time step passes through a module of its own: the cell
is reused across steps, but attribution hooks need a distinct module per step.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

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

    def forward(self, x: torch.Tensor, h: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """The gates' pre-activations from ``[X, H]``; ``h=None`` stands for a zero state.

        With a zero state the H half of ``[X, H]`` contributes exactly nothing,
        so it is skipped (a stage's first step costs half the gate arithmetic).
        """
        if self.form == "efficient":
            return self._efficient(x, h)
        if h is None:
            pre = F.conv2d(x, self.conv.weight[:, : x.shape[1]], self.conv.bias, padding=1)
        else:
            pre = self.conv(torch.cat((x, h), dim=1))
        return pre.chunk(self.num_gates, dim=1)

    def _efficient(self, x: torch.Tensor, h: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """On a CPU, the paper's grouped 1x1 then depthwise 3x3, folded into depthwise 3x3 convs per gate, channels-last.

        The parameters keep the paper's interleaved layout (group c writes
        channels ``G*c .. G*c+G-1``), so checkpoints are unchanged; only the
        evaluation order differs, for speed on a CPU:

        * group c of the grouped 1x1 conv computes gate k of channel c as
          ``a[k,c]*x_c + b[k,c]*h_c``, and the depthwise 3x3 conv K[k,c] that
          follows is linear, so gate k is ``(a*K) * x_c + (b*K) * h_c + bias``:
          two depthwise 3x3 convs with folded kernels. That skips the grouped
          1x1 conv and its interleaving copy of ``[X, H]`` (oneDNN takes a
          slow path for a grouped conv with 2 inputs per group), and one whole
          pass over each gate map in both directions;
        * channels-last, because oneDNN's depthwise conv is several times
          faster channels-last than NCHW;
        * one dense tensor per gate, because the gates' sigmoid and tanh are
          many times slower on a strided slice of a 4C-channel tensor.

        The result equals the paper's order up to float rounding (about 1e-6),
        and the multiply-accumulates ``summary`` counts are the paper's.
        """
        if x.device.type != "cpu":
            return self._interleaved(x, h)
        c, g = self.hidden_channels, self.num_gates
        pointwise = self.pointwise.weight.view(c, g, 2, 1)  # [channel, gate, (x, h), 1]
        kernels = (pointwise * self.depthwise.weight.view(c, g, 1, 9)).permute(1, 2, 0, 3)  # [gate, (x, h), channel, 9]
        bias = self.depthwise.bias.view(c, g).t()  # [gate, channel]
        x = x.contiguous(memory_format=torch.channels_last)
        if h is not None:
            h = h.contiguous(memory_format=torch.channels_last)
        gates = []
        for k in range(g):
            pre = F.conv2d(x, kernels[k, 0].reshape(c, 1, 3, 3), bias[k], padding=1, groups=c)
            if h is not None:  # in place: a conv's backward never reads its output
                pre = pre.add_(F.conv2d(h, kernels[k, 1].reshape(c, 1, 3, 3), padding=1, groups=c))
            gates.append(pre)
        return tuple(gates)

    def _interleaved(self, x: torch.Tensor, h: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """The paper's form as written: ``[X, H]`` interleaved, grouped 1x1, depthwise 3x3, split by view.

        Used off the CPU, where cuDNN's grouped and depthwise convolutions are
        fast in either memory format and fewer, larger kernels are what counts.
        """
        c, g = self.hidden_channels, self.num_gates
        if h is None:  # only the X half of each pair: one input per group
            pre = F.conv2d(x, self.pointwise.weight[:, :1], groups=c)
        else:
            pre = self.pointwise(torch.stack((x, h), dim=2).flatten(1, 2))  # x0, h0, x1, h1, ...
        # Group c produced channels [G*c, G*c+G): gate k of channel c sits at G*c+k.
        return self.depthwise(pre).unflatten(1, (c, g)).unbind(2)


def tanh(x: torch.Tensor) -> torch.Tensor:
    """tanh; on a CPU computed as ``2*sigmoid(2x) - 1``, the same function (values agree to about 2e-7).

    PyTorch's CPU tanh is about ten times slower than its sigmoid, and the
    cells' tanh maps are as large as the block's features. ``addcmul`` with
    scalar tensors does ``-1 + 2*s`` in one pass, forward and backward.
    """
    if x.device.type != "cpu":
        return torch.tanh(x)
    return torch.addcmul(_MINUS_ONE, torch.sigmoid(2 * x), _TWO)


_MINUS_ONE, _TWO = torch.tensor(-1.0), torch.tensor(2.0)


class _ConvCell(nn.Module):
    """Shape checks and zero-state handling shared by the three cells.

    A missing state (a stage's first step) is not materialised as zeros where
    the state enters the gate convolution: its half of ``[X, H]`` is skipped,
    which gives the same numbers with less work. Gate terms multiplying a zero
    state are kept, so that every gate stays in the autograd graph.
    """

    gate_names: tuple[str, ...] = ()
    has_cell_state = False

    def __init__(self, in_channels: int, hidden_channels: int):
        super().__init__()
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels

    def make_taps(self) -> StepTaps:
        return StepTaps(self.gate_names, self.has_cell_state)

    def zero_state(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        shape = (x.shape[0], self.hidden_channels, x.shape[2], x.shape[3])
        n = 2 if self.has_cell_state else 1
        return tuple(x.new_zeros(shape) for _ in range(n))

    def _check(self, x: torch.Tensor, state) -> tuple[torch.Tensor, ...] | None:
        """The state as a tuple, or None for the zero state; a shape mismatch raises ``ValueError``."""
        name = type(self).__name__
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{name} expects input of shape (N, {self.in_channels}, H, W), received {tuple(x.shape)}."
            )
        if state is None:
            return None
        state = (state,) if isinstance(state, torch.Tensor) else tuple(state)
        expected = (x.shape[0], self.hidden_channels, x.shape[2], x.shape[3])
        n = 2 if self.has_cell_state else 1
        if len(state) != n or any(tuple(s.shape) != expected for s in state):
            got = [tuple(s.shape) for s in state]
            raise ValueError(
                f"{name} expects a state of {n} tensor(s) of shape {expected} to match its input, "
                f"received {got}."
            )
        return state

    @staticmethod
    def _tap(taps: StepTaps | None, gates: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if taps is None:
            return gates
        return {name: taps.gates[name](g) for name, g in gates.items()}


class ConvRNNCell(_ConvCell):
    """H_t = tanh(W * [X_t, H_{t-1}])."""

    gate_names = ()

    def __init__(self, in_channels: int, hidden_channels: int, gates: str = "efficient"):
        super().__init__(in_channels, hidden_channels)
        self.conv = GateConv(in_channels, hidden_channels, 1, gates)

    def forward(self, x, state=None, taps: StepTaps | None = None):
        """Return ``(h, (h,), gates)``: the output, the state for the next step, and the gates (none)."""
        state = self._check(x, state)
        (pre,) = self.conv(x, None if state is None else state[0])
        h = tanh(pre)
        if taps is not None:
            h = taps.hidden(h)
        return h, (h,), {}


class ConvGRUCell(_ConvCell):
    """Gates z (update) and r (reset) from one convolution; the candidate from a second on [X, r*H]."""

    gate_names = ("z", "r", "candidate")

    def __init__(self, in_channels: int, hidden_channels: int, gates: str = "efficient"):
        super().__init__(in_channels, hidden_channels)
        self.gates = GateConv(in_channels, hidden_channels, 2, gates)
        # The candidate reads r*H, which only exists after the gates: it cannot share their conv.
        self.candidate = GateConv(in_channels, hidden_channels, 1, gates)

    def forward(self, x, state=None, taps: StepTaps | None = None):
        state = self._check(x, state)
        h_prev = None if state is None else state[0]
        z_pre, r_pre = self.gates(x, h_prev)
        g = self._tap(taps, {"z": torch.sigmoid(z_pre), "r": torch.sigmoid(r_pre)})
        # r*H is computed even from a zero state so that r stays in the graph (attribution to r at step 1).
        reset = g["r"] * (torch.zeros_like(g["r"]) if h_prev is None else h_prev)
        (cand_pre,) = self.candidate(x, reset)
        g.update(self._tap(taps, {"candidate": tanh(cand_pre)}))
        if h_prev is None:  # (1 - z) * 0 + z * candidate
            h = g["z"] * g["candidate"]
        else:  # (1 - z) * H + z * candidate, in one pass
            h = torch.lerp(h_prev, g["candidate"], g["z"])
        if taps is not None:
            h = taps.hidden(h)
        return h, (h,), g


class ConvLSTMCell(_ConvCell):
    """Gates i, f, o and candidate g from one convolution; C = f*C + i*g, H = o*tanh(C)."""

    gate_names = ("i", "f", "o", "g")
    has_cell_state = True

    def __init__(self, in_channels: int, hidden_channels: int, gates: str = "efficient"):
        super().__init__(in_channels, hidden_channels)
        self.conv = GateConv(in_channels, hidden_channels, 4, gates)

    def forward(self, x, state=None, taps: StepTaps | None = None):
        state = self._check(x, state)
        i, f, o, g = self.conv(x, None if state is None else state[0])
        gates = self._tap(
            taps, {"i": torch.sigmoid(i), "f": torch.sigmoid(f), "o": torch.sigmoid(o), "g": tanh(g)}
        )
        # f multiplies a zero cell state at a stage's first step, but stays in the graph (attribution to f).
        c_prev = torch.zeros_like(gates["f"]) if state is None else state[1]
        c = torch.addcmul(gates["i"] * gates["g"], gates["f"], c_prev)
        if taps is not None:
            c = taps.cell(c)
        h = gates["o"] * tanh(c)
        if taps is not None:
            h = taps.hidden(h)
        return h, (h, c), gates


CELLS = {"rnn": ConvRNNCell, "gru": ConvGRUCell, "lstm": ConvLSTMCell}


def make_cell(kind: str, in_channels: int, hidden_channels: int, gates: str = "efficient") -> _ConvCell:
    """Build a cell by name (``rnn``, ``gru``, ``lstm``)."""
    if kind not in CELLS:
        raise ValueError(f"Unknown cell {kind!r}; choose one of {', '.join(CELLS)}.")
    return CELLS[kind](in_channels, hidden_channels, gates)


__all__ = ["ConvRNNCell", "ConvGRUCell", "ConvLSTMCell", "GateConv", "StepTaps", "make_cell", "CELLS", "GATE_FORMS"]
