"""The regulator's own C++ kernels (``csrc/``), built on first use for this CPU; the eager path where they cannot be.

A ConvLSTM step of the efficient form is, in PyTorch ops, 8 depthwise
convolutions and a dozen element-wise passes, each bound by memory traffic
on a CPU; ``csrc/conv_lstm.cpp`` does the step's forward in one pass over
its maps and its backward in two (see its header). It is compiled by
``torch.utils.cpp_extension`` (g++ and ninja) the first time a process needs
it, for the CPU it runs on, and cached (``TORCH_EXTENSIONS_DIR``, by default
``~/.cache/torch_extensions``); later processes load it in a second. Where
it cannot be built (no compiler, no ninja, a failed build) or where
``REGNET_NATIVE=0`` is set, :func:`kernels` is None and the cells run the
PyTorch path, which computes the same function (to about 1e-6).
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import warnings
from pathlib import Path

import torch

SOURCES = (Path(__file__).with_name("csrc") / "conv_lstm.cpp",)
FLAGS = ("-O3", "-march=native", "-mprefer-vector-width=512", "-ffp-contract=fast", "-fno-math-errno")


@functools.cache
def kernels():
    """The compiled operators (``torch.ops.regnet``: ``lstm_forward``, ``lstm_backward``), or None where they are
    off or cannot be built."""
    if os.environ.get("REGNET_NATIVE", "1") == "0":
        return None
    # A CUDA build of torch on a machine without CUDA logs a warning when cpp_extension is imported: noise here.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension

        cpp_extension.load(name=f"regnet_cells_{_cpu_key()}", sources=[str(p) for p in SOURCES],
                           extra_cflags=list(FLAGS), is_python_module=False, verbose=False)
        return torch.ops.regnet
    except Exception as error:  # noqa: BLE001 - any failed build leaves the (equal, slower) eager path
        warnings.warn(f"RegNet's C++ cell kernels could not be built, so the cells run as PyTorch ops "
                      f"(slower on a CPU, same results): {str(error).strip().splitlines()[-1:]}", stacklevel=2)
        return None


def _cpu_key() -> str:
    """A short hash of this CPU's model and instruction sets: ``-march=native`` code is built per CPU."""
    try:
        info = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in info.splitlines() if ln.startswith(("model name", "flags", "Features"))][:2]
    except OSError:
        lines = []
    text = "\n".join([platform.machine(), torch.__version__, *lines])
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def lstm_kernels(kernels_: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``GateConv._folded``'s ``[4, (x, h), C, 1, 3, 3]`` kernels as the C++ step reads them: ``[4, 9, C]`` each."""
    g, _, c = kernels_.shape[:3]
    kx, kh = (kernels_[:, j].reshape(g, c, 9).transpose(1, 2).contiguous() for j in range(2))
    return kx, kh, bias.contiguous()


def lstm_step(x: torch.Tensor, state, kernels_: torch.Tensor, bias: torch.Tensor, keep_gates: bool = False):
    """``(h, c)``, then the gates i, f, o, g if ``keep_gates``, of a ConvLSTM step on channels-last float32 maps.

    ``state=None`` is the zero state. With autograd on, through
    :class:`_LSTMStep` (gates are not returned then: they would not be part
    of the graph); without, the forward alone, which writes only H and C
    unless the gates are asked for.
    """
    h, c = (None, None) if state is None else state
    if torch.is_grad_enabled():
        if keep_gates:
            raise ValueError("lstm_step returns gates only without autograd.")
        return _LSTMStep.apply(x, h, c, kernels_, bias)
    none = x.new_empty(0)
    kx, kh, b = lstm_kernels(kernels_, bias)
    return tuple(kernels().lstm_forward(x, none if h is None else h, none if c is None else c, kx, kh, b, keep_gates))


class _LSTMStep(torch.autograd.Function):
    """A ConvLSTM step as one autograd node: saves X, the state, the four gates and C (tanh(C) is recomputed)."""

    @staticmethod
    def forward(ctx, x, h, c, kernels_, bias):
        none = x.new_empty(0)
        kx, kh, b = lstm_kernels(kernels_, bias)
        h_out, c_out, *gates = kernels().lstm_forward(
            x, none if h is None else h, none if c is None else c, kx, kh, b, True)
        ctx.save_for_backward(x, h, c, kx, kh, c_out, *gates)
        ctx.set_materialize_grads(False)
        return h_out, c_out

    @staticmethod
    def backward(ctx, dh, dc):
        x, h, c, kx, kh, c_out, *gates = ctx.saved_tensors
        if dh is None and dc is None:
            return None, None, None, None, None
        none = x.new_empty(0)
        dh, dc = (none if d is None else d.contiguous(memory_format=torch.channels_last) for d in (dh, dc))
        dx, dh_prev, dc_prev, dkx, dkh, db = kernels().lstm_backward(
            dh, dc, gates, c_out, x, none if h is None else h, none if c is None else c, kx, kh)
        g, _, ch = kx.shape
        dk = torch.stack((dkx, dkh), dim=1).transpose(2, 3).reshape(g, 2, ch, 1, 3, 3)
        return (dx, dh_prev if h is not None else None, dc_prev if c is not None else None, dk, db)
