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

On a CPU in float32 (the lab's training and inspection setting) a step runs
through a few autograd functions of its own instead of a chain of torch ops
(see :func:`fused`): the efficient gates' convolutions with their activation,
the LSTM's cell update, and its output ``o * tanh(C)``. Each writes what it
computes in as few passes over memory as possible, and its backward does the
same; a CPU step is bound by memory traffic, not arithmetic. Their boundaries
are the taps' boundaries, so every gate and state is still a node of the
autograd graph that a hook can observe or replace. Elsewhere (a GPU, a 16-bit
dtype, ``torch.compile``) the same math runs as plain torch ops. Under CPU
autocast a step runs in float32 (see :meth:`_ConvCell.forward`).

Faster still, where nothing observes a step's gates (no hook on its taps, no
trace while autograd records), a ConvLSTM or ConvGRU step of the efficient
form runs as one C++ kernel with its own backward (:mod:`.native`), built on
first use; the same function to about 1e-6 (see :meth:`_ConvCell._run`). A
ConvLSTM step can also take in its block's norm on H and fusion
(:meth:`_ConvCell.step_into_fusion`); so can a ConvGRU step.
"""
from __future__ import annotations

import functools
import time

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from . import native

GATE_FORMS = ("efficient", "full")
CHANNELS_LAST = torch.channels_last


def fused(x: torch.Tensor) -> bool:
    """Whether a step on ``x`` takes the cells' own autograd functions rather than plain torch ops.

    They are written for the CPU in float32; the plain ops keep autocast's
    casts wherever a cell is run under it directly (a cell's own forward turns
    CPU autocast off). Under ``torch.compile`` the compiler fuses the plain
    ops itself and would only be blocked by opaque functions.
    """
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
    )


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

    def observed(self) -> bool:
        """Whether a hook watches the cell's part of the step (every tap but ``output``).

        Only then must each gate and state of a step be written out and passed
        through its tap (see :meth:`_ConvCell._run`).
        """
        return any(hooked(m) for m in (self.hidden, self.cell, *self.gates.values()) if m is not None)


def hooked(module: nn.Module) -> bool:
    """Whether a forward or backward hook is registered on ``module`` or a module inside it."""
    return any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
               for m in module.modules())


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

    def activated(self, x: torch.Tensor, h: torch.Tensor | None, acts: tuple[str, ...],
                  h_gate: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """The gates after their activations (``"sigmoid"`` or ``"tanh"``, one per gate); ``h=None``: zero state.

        With ``h_gate`` the state enters as ``h_gate * H`` (the GRU's reset);
        at a zero state ``h_gate`` still gets its (zero) gradient. The
        efficient form on the fused path (:func:`fused`) computes each gate
        with its activation in :class:`_FoldedGates`, which never writes
        ``h_gate * H`` to memory; otherwise plain ops follow :meth:`forward`.
        """
        if self.form == "efficient" and fused(x):
            kernels, bias = self._folded()
            x = x.contiguous(memory_format=CHANNELS_LAST)
            h, h_gate = (None if t is None else t.contiguous(memory_format=CHANNELS_LAST) for t in (h, h_gate))
            return _FoldedGates.apply(x, h, h_gate, kernels, bias, acts)
        if h_gate is not None:
            h = h_gate * (torch.zeros_like(h_gate) if h is None else h)
        return tuple(ACTIVATIONS[a](p) for a, p in zip(acts, self(x, h)))

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
        kernels, bias = self._folded()
        x = x.contiguous(memory_format=CHANNELS_LAST)
        if h is not None:
            h = h.contiguous(memory_format=CHANNELS_LAST)
        gates = []
        for k in range(self.num_gates):
            pre = F.conv2d(x, kernels[k, 0], bias[k], padding=1, groups=self.hidden_channels)
            if h is not None:  # in place: a conv's backward never reads its output
                pre = pre.add_(F.conv2d(h, kernels[k, 1], padding=1, groups=self.hidden_channels))
            gates.append(pre)
        return tuple(gates)

    def _folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The grouped 1x1 folded into the depthwise kernels, ``[gate, (x, h), C, 1, 3, 3]``, and the bias ``[gate, C]``.

        Computed from the parameters at each call (a few thousand numbers), so
        autograd carries the kernels' gradients back to the paper's parameters.
        """
        c, g = self.hidden_channels, self.num_gates
        pointwise = self.pointwise.weight.view(c, g, 2, 1)  # [channel, gate, (x, h), 1]
        kernels = (pointwise * self.depthwise.weight.view(c, g, 1, 9)).permute(1, 2, 0, 3)  # [gate, (x, h), channel, 9]
        return kernels.reshape(g, 2, c, 1, 3, 3), self.depthwise.bias.view(c, g).t().contiguous()

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
    """tanh; on a CPU in float32 either ``torch.tanh`` or ``2*sigmoid(2x) - 1``, whichever is faster here.

    The two are the same function (values agree to about 2e-7), but which
    is faster depends on the CPU: on an AMD EPYC (Zen 4) PyTorch's tanh was
    about ten times slower than its sigmoid, on an Intel Xeon (Sapphire
    Rapids) it is about five times faster than the sigmoid form, and the
    cells' tanh maps are as large as the block's features
    (:func:`native_tanh`). ``addcmul`` with scalar tensors does ``-1 + 2*s``
    in one pass. In a 16-bit dtype (a bf16 model) the sigmoid form is never
    used: sigmoid's output near 0.5 keeps 8 bits, so ``2s - 1`` is off by up
    to 0.004 near 0, where ``torch.tanh`` keeps the relative precision of a
    small value.
    """
    if x.device.type != "cpu" or x.dtype != torch.float32 or torch.compiler.is_compiling() or native_tanh():
        return torch.tanh(x)  # (a compiler fuses the plain ops itself: nothing to time there)
    return sigmoid_tanh(x)


def sigmoid_tanh(x: torch.Tensor) -> torch.Tensor:
    """``tanh(x)`` as ``2*sigmoid(2x) - 1``, in new tensors (autograd can follow it)."""
    return torch.addcmul(_MINUS_ONE, torch.sigmoid(2 * x), _TWO)


@functools.cache
def native_tanh() -> bool:
    """Whether this CPU runs ``torch.tanh`` faster than the sigmoid form of :func:`tanh`: timed once per process.

    A map of 256K floats (a batch slice's gate, see :func:`_chunks`), each
    form five times by process CPU time, best of each; the sigmoid form is
    kept unless ``torch.tanh`` takes under 3/4 of its time, so a CPU where
    the two are close does not flip between runs. Both forms give the same
    values to about 2e-7, so the choice moves a model's logits by about 1e-6.
    """
    x = torch.randn(64, 16, 16, 16)
    native = [_cpu_seconds(lambda: torch.tanh(x)) for _ in range(5)]
    form = [_cpu_seconds(lambda: sigmoid_tanh(x)) for _ in range(5)]
    return min(native) < 0.75 * min(form)


def _cpu_seconds(work) -> float:
    start = time.process_time()
    work()
    return time.process_time() - start


_MINUS_ONE, _TWO = torch.tensor(-1.0), torch.tensor(2.0)
ACTIVATIONS = {"sigmoid": torch.sigmoid, "tanh": tanh}


def _fused_tanh(c: torch.Tensor) -> torch.Tensor:
    """``tanh(c)`` as :func:`tanh` computes it here, in one new tensor: the sigmoid form in place (no autograd
    inside an autograd function's forward), where :func:`sigmoid_tanh` allocates a tensor per pass."""
    if native_tanh():
        return torch.tanh(c)
    t = torch.mul(c, 2)
    return torch.addcmul(_MINUS_ONE, t.sigmoid_(), _TWO, out=t)


def _zero_like(t: torch.Tensor) -> torch.Tensor:
    """A zero gradient for ``t`` that costs no memory: one zero broadcast to ``t``'s shape.

    Returned where a gradient is exactly zero (the forget gate's at a stage's
    first step) so that the input stays in the graph (a hook on its tap still
    gets a gradient) while :func:`_is_zero` lets the next backward skip it.
    """
    return t.new_zeros(()).expand_as(t)


def _is_zero(grad: torch.Tensor | None) -> bool:
    """Whether ``grad`` is missing or a broadcast zero (as :func:`_zero_like` makes)."""
    if grad is None:
        return True
    return all(st == 0 for st in grad.stride()) and grad.as_strided((), ()).item() == 0


def _in_format_of(grad: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``grad`` channels-last where ``ref`` is: element-wise kernels are slow on mixed memory formats."""
    if ref.is_contiguous(memory_format=CHANNELS_LAST) and not ref.is_contiguous():
        return grad.contiguous(memory_format=CHANNELS_LAST)
    return grad


# oneDNN's convolutions with a fused epilogue (here: a sum into an existing tensor), the kernels torch.compile
# emits on a CPU. Where this torch lacks them, _depthwise falls back to F.conv2d and an in-place add.
_ONEDNN = (
    torch.backends.mkldnn.is_available()
    and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
    and hasattr(torch.ops.mkldnn, "_convolution_pointwise_")
)


def _depthwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
               into: torch.Tensor | None = None) -> torch.Tensor:
    """A 3x3 depthwise conv (stride 1, padding 1) of ``x``, summed in place into ``into`` when given.

    With oneDNN the sum happens as the conv writes its output, so the map is
    written once instead of written, read and written again. (oneDNN could
    fuse the gates' sigmoid too, but its sigmoid rounds differently from
    torch's, and the shipped checkpoints' logits would move by about 1e-5.)
    """
    groups, one = x.shape[1], [1, 1]
    if not _ONEDNN:
        y = F.conv2d(x, weight, bias, padding=1, groups=groups)
        return y if into is None else into.add_(y)
    if into is not None:
        return torch.ops.mkldnn._convolution_pointwise_.binary(
            into, x, weight, bias, one, one, one, groups, "add", None, None, [], None)
    return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, one, one, one, groups, "none", [], None)


def _depthwise_weight_grad(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, with_bias: bool):
    """The kernel's (and the bias's) gradient of :func:`_depthwise`; without the input's, which is done apart.

    oneDNN's backward computing the input's and the kernel's gradients in one
    call is slower than the two computed separately.
    """
    _, dw, db = torch.ops.aten.convolution_backward(
        grad, x, weight, [weight.shape[0]] if with_bias else None, [1, 1], [1, 1], [1, 1], False, [0, 0],
        x.shape[1], [False, True, with_bias])
    return dw, db


_CHUNK_BYTES = 2 << 20


def _chunks(x: torch.Tensor) -> list[slice]:
    """Batch slices of ``x`` of about ``_CHUNK_BYTES`` of map each (views: in channels-last a batch slice is dense).

    A gate's few operations run slice by slice, so that what one writes the
    next reads from the cache, not from memory: a stage-1 map of batch 128 is
    8 MB, a slice of 32 images 2 MB. Smaller slices lose more to each oneDNN
    call's fixed cost than they gain.
    """
    per_image = max(1, x[0].numel() * x.element_size())
    step = max(1, _CHUNK_BYTES // per_image)
    return [slice(s, s + step) for s in range(0, x.shape[0], step)]


class _FoldedGates(torch.autograd.Function):
    """The efficient form's activated gates, ``act_k(Kx_k * X + Kh_k * H + b_k)``: a dense channels-last map each.

    ``Kx, Kh`` are the folded kernels of :meth:`GateConv._folded`; H is
    ``h_gate * H`` where ``h_gate`` is given (the GRU's reset). Forward, per
    batch slice (:func:`_chunks`) and gate: a depthwise conv of X, H's conv
    summed into it in place (none at a zero state), and the activation
    written to the gate (a tanh gate in :func:`tanh`'s form for this CPU,
    the sigmoid form from doubled kernels): the same float operations as
    :meth:`GateConv._efficient` and :func:`tanh`, so the same values to the
    bit. Only the inputs and the activated gates are saved: both derivatives
    follow from an activation's output. Backward, per slice and gate: the
    pre-activation's gradient, X's and H's gradients as depthwise convs with
    flipped kernels summed in place, and the kernels' gradients; a gate whose
    gradient is zero (see :func:`_zero_like`) is skipped.
    """

    @staticmethod
    def forward(ctx, x, h, h_gate, kernels, bias, acts):
        per_gate = _gate_kernels(kernels, bias, acts)
        gates = [torch.empty_like(x, memory_format=CHANNELS_LAST) for _ in acts]
        for part in _chunks(x):
            x_part, h_part = x[part], _gated(h, h_gate, part)
            for k, act in enumerate(acts):
                _gate(x_part, h_part, *per_gate[k], act, out=gates[k][part])
        ctx.acts = acts
        ctx.save_for_backward(x, h, h_gate, kernels, *gates)
        ctx.set_materialize_grads(False)
        return tuple(gates)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        x, h, h_gate, kernels, *gates = ctx.saved_tensors
        need_x, need_h, need_gate, need_k, need_b = ctx.needs_input_grad[:5]
        live = [k for k, grad in enumerate(grads) if not _is_zero(grad)]
        grads = [g if _is_zero(g) else g.contiguous(memory_format=CHANNELS_LAST) for g in grads]
        dx = x if need_x and live else None  # placeholders with the shape that _put fills
        dh = h if need_h and h is not None and live else None
        dgate = h if need_gate and h is not None and live else None
        dk = torch.zeros_like(kernels) if need_k else None
        db = kernels.new_zeros(kernels.shape[0], kernels.shape[2]) if need_b else None
        flipped = kernels.flip((-2, -1)).unbind(0)  # per gate: [(x, h), C, 1, 3, 3]
        per_gate = kernels.unbind(0)
        derivatives = [torch.ops.aten.sigmoid_backward if a == "sigmoid" else torch.ops.aten.tanh_backward
                       for a in ctx.acts]
        for part in _chunks(x):
            acc_x = acc_h = None
            x_part, h_part = x[part], _gated(h, h_gate, part)
            for k in live:
                dpre = derivatives[k](grads[k][part], gates[k][part])
                if dx is not None:
                    acc_x = _depthwise(dpre, flipped[k][0], into=acc_x)
                if dh is not None or dgate is not None:
                    acc_h = _depthwise(dpre, flipped[k][1], into=acc_h)
                if need_k or need_b:
                    dkx, dbk = _depthwise_weight_grad(dpre, x_part, per_gate[k][0], with_bias=need_b)
                    if need_k:
                        dk[k, 0] += dkx
                        if h_part is not None:
                            dk[k, 1] += _depthwise_weight_grad(dpre, h_part, per_gate[k][1], with_bias=False)[0]
                    if need_b:
                        db[k] += dbk
            if acc_x is not None:
                dx = _put(dx, part, acc_x)
            if dgate is not None:  # d(gate * H): gate's gradient is dH_in * H, H's is dH_in * gate
                dgate = _put(dgate, part, acc_h * h[part])
            if dh is not None:
                dh = _put(dh, part, acc_h if h_gate is None else acc_h * h_gate[part])
        dx, dh, dgate = (_zero_like(t) if need and d is None else d
                         for t, need, d in ((x, need_x, dx), (h, need_h, dh), (h_gate, need_gate, dgate)))
        return dx, dh, dgate, dk, db, None


def _gate_kernels(kernels: torch.Tensor, bias: torch.Tensor, acts: tuple[str, ...]
                  ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per gate, ``(Kx, Kh, b)`` as :func:`_gate` convolves them: doubled for a tanh gate in the sigmoid form.

    Exact: doubling the kernels doubles every sum, and the sigmoid form of ``tanh(p)`` needs ``2p``.
    """
    sigmoid_form = not native_tanh()
    scales = [2.0 if act == "tanh" and sigmoid_form else 1.0 for act in acts]
    return [(kernels[k, 0] * s, kernels[k, 1] * s, bias[k] * s) for k, s in enumerate(scales)]


def _gate(x: torch.Tensor, h: torch.Tensor | None, kx: torch.Tensor, kh: torch.Tensor, b: torch.Tensor,
          act: str, out: torch.Tensor | None = None) -> torch.Tensor:
    """One activated gate of one batch slice, ``act(Kx * X + Kh * H + b)``, into ``out`` or over its pre-activation.

    A depthwise conv of X, H's summed into it in place (none at a zero
    state), then the activation: a tanh gate in :func:`tanh`'s form for this
    CPU, the sigmoid form from kernels doubled by :func:`_gate_kernels`.
    """
    pre = _depthwise(x, kx, b)
    if h is not None:
        pre = _depthwise(h, kh, into=pre)
    out = pre if out is None else out
    if act == "sigmoid":
        return torch.sigmoid(pre, out=out)
    if native_tanh():
        return torch.tanh(pre, out=out)
    return torch.addcmul(_MINUS_ONE, pre.sigmoid_(), _TWO, out=out)


def _put(full: torch.Tensor, part: slice, values: torch.Tensor) -> torch.Tensor:
    """``values`` as slice ``part`` of a gradient shaped like ``full``; the first slice allocates it.

    When one slice covers the batch, ``values`` is the gradient itself, not copied.
    """
    if part.start == 0:
        if part.stop >= full.shape[0]:
            return values
        full = torch.empty_like(full, memory_format=CHANNELS_LAST)
    full[part] = values
    return full


def _channels_last(x: torch.Tensor, state):
    """``x`` and the state (None: zero) as dense channels-last maps, as the streamed and C++ steps read them."""
    state = None if state is None else tuple(t.contiguous(memory_format=CHANNELS_LAST) for t in state)
    return x.contiguous(memory_format=CHANNELS_LAST), state


def _gated(h: torch.Tensor | None, h_gate: torch.Tensor | None, part: slice) -> torch.Tensor | None:
    """Slice ``part`` of the state as it enters the gates: ``h_gate * H``, or H, or None for a zero state."""
    if h is None:
        return None
    return h[part] if h_gate is None else h_gate[part] * h[part]


class _CellUpdate(torch.autograd.Function):
    """The LSTM's cell state ``C = f * C_prev + i * g``, two passes; ``C_prev=None`` is the zero state.

    At a zero state ``f`` still gets its (zero) gradient, as a broadcast zero
    that costs nothing downstream (see :func:`_zero_like`).
    """

    @staticmethod
    def forward(ctx, i, f, g, c_prev):
        c = torch.mul(i, g)
        if c_prev is not None:
            c.addcmul_(f, c_prev)
        ctx.save_for_backward(i, f, g, c_prev)
        ctx.set_materialize_grads(False)
        return c

    @staticmethod
    @once_differentiable
    def backward(ctx, dc):
        i, f, g, c_prev = ctx.saved_tensors
        need_i, need_f, need_g, need_c = ctx.needs_input_grad
        if _is_zero(dc):
            return tuple(_zero_like(t) if need else None for t, need in zip((i, f, g, c_prev), ctx.needs_input_grad))
        dc = _in_format_of(dc, i)
        di = dc * g if need_i else None
        df = (_zero_like(f) if c_prev is None else dc * c_prev) if need_f else None
        dg = dc * i if need_g else None
        dc_prev = dc * f if need_c and c_prev is not None else None
        return di, df, dg, dc_prev


class _GatedTanh(torch.autograd.Function):
    """The LSTM's hidden state ``H = o * tanh(C)``, saving ``tanh(C)``: backward is then three passes."""

    @staticmethod
    def forward(ctx, o, c):
        t = _fused_tanh(c)
        ctx.save_for_backward(o, t)
        ctx.set_materialize_grads(False)
        return torch.mul(o, t)

    @staticmethod
    @once_differentiable
    def backward(ctx, dh):
        o, t = ctx.saved_tensors
        if _is_zero(dh):
            return _zero_like(o), _zero_like(t)
        dh = _in_format_of(dh, o)
        return dh * t, torch.ops.aten.tanh_backward(dh * o, t)


class _ConvCell(nn.Module):
    """Shape checks and zero-state handling shared by the three cells.

    A missing state (a stage's first step) is not materialised as zeros where
    the state enters the gate convolution: its half of ``[X, H]`` is skipped,
    which gives the same numbers with less work. Gate terms multiplying a zero
    state are kept, so that every gate stays in the autograd graph.
    """

    gate_names: tuple[str, ...] = ()
    has_cell_state = False
    _streamed = None  # a cell with a streamed inference step (efficient gates only) defines it
    _native = None  # a cell with a C++ step (efficient gates only, see .native) defines it
    _native_into_fusion = None  # and one whose C++ step can fold in the block's norm on H (see .native)

    def __init__(self, in_channels: int, hidden_channels: int):
        super().__init__()
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels

    def forward(self, x: torch.Tensor, state=None, taps: StepTaps | None = None, keep_gates: bool = True):
        """One time step: ``(h, state, gates)``, the output, the state for the next step and the gates by name.

        With ``keep_gates=False`` the gates may come back as ``{}``: a step
        that no hook on ``taps`` observes may skip writing them: a C++ step
        (:mod:`.native`) or, without autograd, a streamed one
        (:meth:`_streamed`); see :meth:`_run`. Under CPU autocast the step runs in float32 with
        autocast off (so on the fused path): the regulator's state is a
        recurrence, and in bf16 its rounding compounds from block to block
        (a bf16 regnet20's loss lagged fp32's by 5-10 steps on a fixed batch,
        where resnet20's tracked it). Its convolutions are depthwise and a
        small share of the MACs, so little of autocast's speed is given up.
        """
        state = self._check(x, state)
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                x, state = x.float(), None if state is None else tuple(s.float() for s in state)
                return self._run(x, state, taps, keep_gates)
        return self._run(x, state, taps, keep_gates)

    def _run(self, x, state, taps, keep_gates: bool):
        """The step on the fastest path that loses nothing observable (see :meth:`forward`).

        With no hook on ``taps`` on the fused path, a cell with a C++ step
        (:mod:`.native`) runs it where it is built: with autograd when no
        gates are asked for, and without autograd with or without them (so a
        recorded pass gives the same logits as an unrecorded one). Else a
        step that keeps no gates, without autograd, runs streamed.
        """
        unobserved = self._unobserved(x, taps)
        grad = torch.is_grad_enabled()
        if unobserved and self._native is not None and not (keep_gates and grad) and native.kernels() is not None:
            x, state = _channels_last(x, state)
            return self._native(x, state, keep_gates)
        if unobserved and self._streamed is not None and not keep_gates and not grad:
            x, state = _channels_last(x, state)
            return (*self._streamed(x, state), {})
        return self._step(x, state, taps)

    def _unobserved(self, x: torch.Tensor, taps: StepTaps | None) -> bool:
        """Whether a step on ``x`` may skip its taps: the fused path, efficient gates and no hook on ``taps``."""
        return (fused(x) and all(m.form == "efficient" for m in self.children())
                and (taps is None or not taps.observed()))

    def folds_norm(self, x: torch.Tensor, taps: StepTaps | None) -> bool:
        """Whether :meth:`step_into_fusion` can take a step on ``x``: a cell with such a C++ step, built, and
        nothing observing the step (the caller checks the norm, :func:`.native.norm_supported`)."""
        return self._native_into_fusion is not None and self._unobserved(x, taps) and native.kernels() is not None

    def step_into_fusion(self, x: torch.Tensor, features: torch.Tensor, state, norm: nn.Module, fuse: nn.Module,
                         moments: bool):
        """``(fuse(cat[features, ReLU(norm(H))]), its moments, state)``: a step and a regulated block's fusion.

        The same function as the step, ``norm``, ``torch.cat`` and ``fuse`` one
        after the other, to about 1e-6, in fewer passes over memory (see
        :func:`.native.lstm_step_into_fusion` and ``gru_step_into_fusion``); only where :meth:`folds_norm`.
        """
        return self._native_into_fusion(x, features.contiguous(memory_format=CHANNELS_LAST), self._check(x, state),
                                        norm, fuse, moments)

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

    def _step(self, x, state, taps):
        """``(h, (h,), gates)``: the output, the state for the next step, and the gates (none)."""
        (h,) = self.conv.activated(x, None if state is None else state[0], ("tanh",))
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

    def _step(self, x, state, taps):
        h_prev = None if state is None else state[0]
        z, r = self.gates.activated(x, h_prev, ("sigmoid", "sigmoid"))
        g = self._tap(taps, {"z": z, "r": r})
        # The candidate reads r*H; r stays in the graph even from a zero state (attribution to r at step 1).
        (candidate,) = self.candidate.activated(x, h_prev, ("tanh",), h_gate=g["r"])
        g.update(self._tap(taps, {"candidate": candidate}))
        if h_prev is None:  # (1 - z) * 0 + z * candidate
            h = g["z"] * g["candidate"]
        else:  # (1 - z) * H + z * candidate, in one pass
            h = torch.lerp(h_prev, g["candidate"], g["z"])
        if taps is not None:
            h = taps.hidden(h)
        return h, (h,), g

    def _native(self, x, state, keep_gates: bool):
        """``(h, (h,), gates)`` by the C++ step (:func:`.native.gru_step`): the same function to about 1e-6.

        The gates (``{}`` unless ``keep_gates``) come without autograd.
        """
        h, *gates = native.gru_step(x, None if state is None else state[0], self.gates._folded(),
                                    self.candidate._folded(), keep_gates=keep_gates)
        return h, (h,), dict(zip(self.gate_names, gates))

    def _native_into_fusion(self, x, features, state, norm, fuse, moments):
        return native.gru_step_into_fusion(x, features, None if state is None else state[0], self.gates._folded(),
                                           self.candidate._folded(), norm, fuse, moments)

    def _streamed(self, x, state):
        """``(h, (h,))`` slice by slice (:func:`_chunks`): z, r, the candidate and H while the slice is in the cache.

        The same float operations as :meth:`_step` on the fused path (``r * H``
        is ``H * r``), so the same values to the bit; only H is written.
        """
        h_prev = None if state is None else state[0]
        zr = _gate_kernels(*self.gates._folded(), ("sigmoid", "sigmoid"))
        (candidate_kernels,) = _gate_kernels(*self.candidate._folded(), ("tanh",))
        h = torch.empty_like(x, memory_format=CHANNELS_LAST)
        for part in _chunks(x):
            x_part, h_part = x[part], None if h_prev is None else h_prev[part]
            z, r = (_gate(x_part, h_part, *kernels, "sigmoid") for kernels in zr)
            reset = None if h_part is None else r.mul_(h_part)
            candidate = _gate(x_part, reset, *candidate_kernels, "tanh")
            if h_part is None:
                torch.mul(z, candidate, out=h[part])
            else:
                torch.lerp(h_part, candidate, z, out=h[part])
        return h, (h,)


class ConvLSTMCell(_ConvCell):
    """Gates i, f, o and candidate g from one convolution; C = f*C + i*g, H = o*tanh(C)."""

    gate_names = ("i", "f", "o", "g")
    has_cell_state = True

    def __init__(self, in_channels: int, hidden_channels: int, gates: str = "efficient"):
        super().__init__(in_channels, hidden_channels)
        self.conv = GateConv(in_channels, hidden_channels, 4, gates)

    def _step(self, x, state, taps):
        h_prev, c_prev = (None, None) if state is None else state
        i, f, o, g = self.conv.activated(x, h_prev, ("sigmoid", "sigmoid", "sigmoid", "tanh"))
        gates = self._tap(taps, {"i": i, "f": f, "o": o, "g": g})
        # f multiplies a zero cell state at a stage's first step, but stays in the graph (attribution to f).
        if fused(x):
            c = _CellUpdate.apply(gates["i"], gates["f"], gates["g"], c_prev)
        else:
            c_prev = torch.zeros_like(gates["f"]) if c_prev is None else c_prev
            c = torch.addcmul(gates["i"] * gates["g"], gates["f"], c_prev)
        if taps is not None:
            c = taps.cell(c)
        h = _GatedTanh.apply(gates["o"], c) if fused(x) else gates["o"] * tanh(c)
        if taps is not None:
            h = taps.hidden(h)
        return h, (h, c), gates

    def _streamed(self, x, state):
        """``(h, (h, c))`` slice by slice (:func:`_chunks`): the four gates, C and H while the slice is in the cache.

        The same float operations as :meth:`_step` on the fused path, so the
        same values to the bit; only C and H are written, where the step
        writes and rereads four gate maps and ``tanh(C)`` as well.
        """
        h_prev, c_prev = (None, None) if state is None else state
        acts = ("sigmoid", "sigmoid", "sigmoid", "tanh")
        per_gate = _gate_kernels(*self.conv._folded(), acts)
        h, c = (torch.empty_like(x, memory_format=CHANNELS_LAST) for _ in range(2))
        for part in _chunks(x):
            x_part, h_part = x[part], None if h_prev is None else h_prev[part]
            i, f, o, g = (_gate(x_part, h_part, *kernels, act) for kernels, act in zip(per_gate, acts))
            c_part = torch.mul(i, g, out=c[part])
            if c_prev is not None:
                c_part.addcmul_(f, c_prev[part])
            torch.mul(o, _fused_tanh(c_part), out=h[part])
        return h, (h, c)

    def _native(self, x, state, keep_gates: bool):
        """``(h, (h, c), gates)`` by the C++ step (:func:`.native.lstm_step`): the same function to about 1e-6.

        The gates (``{}`` unless ``keep_gates``) come without autograd.
        """
        h, c, *gates = native.lstm_step(x, state, *self.conv._folded(), keep_gates=keep_gates)
        return h, (h, c), dict(zip(self.gate_names, gates))

    def _native_into_fusion(self, x, features, state, norm, fuse, moments):
        return native.lstm_step_into_fusion(x, features, state, *self.conv._folded(), norm, fuse, moments)


CELLS = {"rnn": ConvRNNCell, "gru": ConvGRUCell, "lstm": ConvLSTMCell}


def make_cell(kind: str, in_channels: int, hidden_channels: int, gates: str = "efficient") -> _ConvCell:
    """Build a cell by name (``rnn``, ``gru``, ``lstm``)."""
    if kind not in CELLS:
        raise ValueError(f"Unknown cell {kind!r}; choose one of {', '.join(CELLS)}.")
    return CELLS[kind](in_channels, hidden_channels, gates)


__all__ = ["ConvRNNCell", "ConvGRUCell", "ConvLSTMCell", "GateConv", "StepTaps", "make_cell", "CELLS", "GATE_FORMS"]
