"""The cells' own C++ steps (``csrc/``), built on first use for this CPU; the PyTorch path where they cannot be.

A cell step of the efficient form is, in PyTorch ops, a depthwise
convolution per gate and input and a dozen element-wise passes, each bound
by memory traffic on a CPU; ``csrc/`` does a ConvLSTM or ConvGRU step's
forward in one or two passes over its maps and its backward image by image
(see ``csrc/depthwise.h``). (A ConvRNN step, one gate, was slower that way
than oneDNN's two depthwise convolutions, so it has none.) The kernels are compiled by
``torch.utils.cpp_extension`` (g++ and ninja) the first time a process needs
them, for the CPU it runs on (about 20 s), and cached
(``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``); later
processes load them in a second. Where they cannot be built (no compiler, no
ninja, a failed build) or where ``REGNET_NATIVE=0`` is set, :func:`kernels`
is None and the cells run the PyTorch path, which computes the same function
(to about 1e-6). They are registered as ``torch.ops.regnet.*``, so the
profiler and dispatch modes see them.

A regulated block's norm on H, concatenation and 1x1 fusion, and the BN+ReLU
after it, have kernels of their own too (``csrc/norm.cpp``; see
:func:`lstm_step_into_fusion`, :func:`norm_relu_fuse`, :func:`bn_relu`): in
PyTorch ops they are a dozen passes over maps as large as the block's
features, forward and backward. The fusion's matrix products go to the
BLAS inside torch's own library (``sgemm_``, linked weakly: where a build of
torch does not export it, :func:`fusion_supported` is false and the blocks
keep their modules).
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from torch.autograd.function import once_differentiable

CSRC = Path(__file__).with_name("csrc")
SOURCES = tuple(CSRC / name for name in ("conv_lstm.cpp", "conv_gru.cpp", "norm.cpp"))
HEADERS = (CSRC / "depthwise.h", CSRC / "norm.h")
# -fopenmp: at::parallel_for is a header template whose OpenMP pragma does nothing without it (the steps
# would run on one thread whatever torch.set_num_threads says).
FLAGS = ("-O3", "-march=native", "-mprefer-vector-width=512", "-ffp-contract=fast", "-fno-math-errno", "-fopenmp")


@functools.cache
def kernels():
    """The compiled operators (``torch.ops.regnet``), or None where they are off or cannot be built."""
    if _turned_off():
        return None
    # A CUDA build of torch on a machine without CUDA logs a warning when cpp_extension is imported: noise here.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension

        name = f"regnet_cells_{_build_key()}"
        build_directory = Path(cpp_extension._get_build_directory(name, False))
        with exclusive_build(build_directory):
            cpp_extension.load(name=name, sources=[str(p) for p in SOURCES], extra_cflags=list(FLAGS),
                               extra_ldflags=["-fopenmp"], build_directory=str(build_directory),
                               is_python_module=False, verbose=False)
        return torch.ops.regnet
    except Exception as error:  # noqa: BLE001 - any failed build leaves the (equal, slower) PyTorch path
        warnings.warn(f"RegNet's C++ cell kernels could not be built, so the cells run as PyTorch ops "
                      f"(slower on a CPU, same results): {str(error).strip().splitlines()[-1:]}", stacklevel=2)
        return None


@contextmanager
def exclusive_build(build_directory: Path):
    """Hold this build's own lock, released by the OS when its holder dies, and clear cpp_extension's.

    cpp_extension marks a build with a ``lock`` file that every later process
    waits on for ever if the builder was killed midway. Builds of these
    kernels happen only under this flock, so a ``lock`` file found while
    holding it was left by a dead build and is removed.
    """
    build_directory.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: cpp_extension's own lock alone
        yield
        return
    with open(build_directory / "regnet.flock", "w") as handle:  # closing it releases the flock
        fcntl.flock(handle, fcntl.LOCK_EX)
        (build_directory / "lock").unlink(missing_ok=True)
        yield


def describe(model: torch.nn.Module) -> str | None:
    """One line for a CPU run's log on the path its regulator's cells take; None for a model without such cells.

    Calling it builds the kernels if they are not in the cache yet (about 20 s, once per machine).
    """
    if not any(getattr(type(m), "_native", None) is not None for m in model.modules()):
        return None
    if kernels() is not None:
        fusion = "with" if _blas_found() else "without (no BLAS found in torch)"
        return f"regulator cells: C++ steps for this CPU, {fusion} the blocks' norms and fusion (regnet/models/native.py)"
    why = "REGNET_NATIVE=0" if _turned_off() else "the C++ steps could not be built"
    return f"regulator cells: PyTorch ops ({why})"


def _turned_off() -> bool:
    return os.environ.get("REGNET_NATIVE", "1") == "0"


def _build_key() -> str:
    """A short hash of this CPU (``-march=native`` code is built per CPU), torch's version and the sources.

    The sources are in the key because cpp_extension decides whether to
    rebuild from the ``.cpp`` files alone, not the header they include.
    """
    try:
        info = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in info.splitlines() if ln.startswith(("model name", "flags", "Features"))][:2]
    except OSError:
        lines = []
    digest = hashlib.sha1("\n".join([platform.machine(), torch.__version__, *lines, *FLAGS]).encode())
    for path in (*SOURCES, *HEADERS):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def layout(kernels_: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``GateConv._folded``'s ``[G, (x, h), C, 1, 3, 3]`` kernels as the C++ steps read them: ``[G, 9, C]`` each."""
    g, _, c = kernels_.shape[:3]
    kx, kh = (kernels_[:, j].reshape(g, c, 9).transpose(1, 2).contiguous() for j in range(2))
    return kx, kh, bias.contiguous()


def _kernel_grad(dkx: torch.Tensor, dkh: torch.Tensor) -> torch.Tensor:
    """The C++ steps' ``[G, 9, C]`` kernel gradients in ``GateConv._folded``'s layout."""
    g, _, c = dkx.shape
    return torch.stack((dkx, dkh), dim=1).transpose(2, 3).reshape(g, 2, c, 1, 3, 3)


def _or_empty(t: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """``t``, or the empty tensor that stands for a zero state or gradient in the C++ steps."""
    return like.new_empty(0) if t is None else t


def _grad(t: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return _or_empty(None if t is None else t.contiguous(memory_format=torch.channels_last), like)


def lstm_step(x: torch.Tensor, state, kernels_: torch.Tensor, bias: torch.Tensor, keep_gates: bool = False):
    """``(h, c)``, then the gates i, f, o, g if ``keep_gates``, of a ConvLSTM step on channels-last float32 maps.

    ``state=None`` is the zero state. With autograd on, through one autograd
    node (:class:`_LSTMStep`; no gates then: they would not be in the graph).
    """
    h, c = (None, None) if state is None else state
    if torch.is_grad_enabled():
        if keep_gates:
            raise ValueError("lstm_step returns gates only without autograd.")
        return _LSTMStep.apply(x, h, c, kernels_, bias)
    return tuple(kernels().lstm_forward(x, _or_empty(h, x), _or_empty(c, x), *layout(kernels_, bias), keep_gates,
                                        False))


class _LSTMStep(torch.autograd.Function):
    """A ConvLSTM step as one autograd node: saves X, the state, the four gates and C (tanh(C) is recomputed)."""

    @staticmethod
    def forward(ctx, x, h, c, kernels_, bias):
        kx, kh, b = layout(kernels_, bias)
        h_out, c_out, *gates = kernels().lstm_forward(x, _or_empty(h, x), _or_empty(c, x), kx, kh, b, True, False)
        ctx.save_for_backward(x, h, c, kx, kh, c_out, *gates)
        ctx.set_materialize_grads(False)
        return h_out, c_out

    @staticmethod
    def backward(ctx, dh, dc):
        x, h, c, kx, kh, c_out, *gates = ctx.saved_tensors
        if dh is None and dc is None:
            return None, None, None, None, None
        none = x.new_empty(0)
        dx, dh_prev, dc_prev, dkx, dkh, db = kernels().lstm_backward(
            _grad(dh, x), _grad(dc, x), gates, c_out, x, _or_empty(h, x), _or_empty(c, x), kx, kh, none, none, none,
            False)
        return dx, None if h is None else dh_prev, None if c is None else dc_prev, _kernel_grad(dkx, dkh), db


def gru_step(x: torch.Tensor, h: torch.Tensor | None, gates_: tuple, candidate: tuple, keep_gates: bool = False):
    """``(h,)``, then z, r and the candidate if ``keep_gates``, of a ConvGRU step; ``h=None`` is the zero state.

    ``gates_`` and ``candidate`` are the two ``GateConv._folded`` pairs.
    With autograd on, through one autograd node (:class:`_GRUStep`).
    """
    if torch.is_grad_enabled():
        if keep_gates:
            raise ValueError("gru_step returns gates only without autograd.")
        return (_GRUStep.apply(x, h, *gates_, *candidate),)
    out = kernels().gru_forward(x, _or_empty(h, x), *layout(*gates_), *layout(*candidate), keep_gates, False)
    return tuple(out)


class _GRUStep(torch.autograd.Function):
    """A ConvGRU step as one autograd node: saves X, H, z, r and the candidate."""

    @staticmethod
    def forward(ctx, x, h, k_zr, b_zr, k_c, b_c):
        (kx_zr, kh_zr, b1), (kx_c, kh_c, b2) = layout(k_zr, b_zr), layout(k_c, b_c)
        h_out, *saved = kernels().gru_forward(x, _or_empty(h, x), kx_zr, kh_zr, b1, kx_c, kh_c, b2, True, False)
        ctx.save_for_backward(x, h, kx_zr, kh_zr, kx_c, kh_c, *saved)
        ctx.set_materialize_grads(False)
        return h_out

    @staticmethod
    def backward(ctx, dh):
        x, h, kx_zr, kh_zr, kx_c, kh_c, *saved = ctx.saved_tensors
        if dh is None:
            return None, None, None, None, None, None
        none = x.new_empty(0)
        dx, dh_prev, dkx_zr, dkh_zr, db_zr, dkx_c, dkh_c, db_c = kernels().gru_backward(
            _grad(dh, x), saved, x, _or_empty(h, x), kx_zr, kh_zr, kx_c, kh_c, none, none, none, False)
        return (dx, None if h is None else dh_prev, _kernel_grad(dkx_zr, dkh_zr), db_zr,
                _kernel_grad(dkx_c, dkh_c), db_c)


def norm_supported(norm: nn.Module) -> bool:
    """Whether the C++ steps can take over a regulator norm: an affine ``nn.BatchNorm2d``, the paper's."""
    return type(norm) is nn.BatchNorm2d and norm.affine


def fusion_supported(fuse: nn.Module) -> bool:
    """Whether the C++ steps can run a block's fusion: a 1x1 convolution (its own) and BLAS found in torch."""
    return (type(fuse) is nn.Conv2d and fuse.kernel_size == (1, 1) and fuse.groups == 1 and fuse.stride == (1, 1)
            and kernels() is not None and _blas_found())


@functools.cache
def _blas_found() -> bool:
    """Whether the built kernels found BLAS in torch's library (asked once: every regulated block asks)."""
    return kernels().has_gemm()


def lstm_step_into_fusion(x: torch.Tensor, features: torch.Tensor, state, kernels_: torch.Tensor,
                          bias: torch.Tensor, norm: nn.BatchNorm2d, fuse: nn.Conv2d, moments: bool):
    """``(F, F's moments or None, (h, c))``: a ConvLSTM step, then ``F = fuse(cat[features, ReLU(norm(H))])``.

    What a regulated block computes from X2 to its fusion's output, ``norm``
    a :class:`torch.nn.BatchNorm2d` updated as its ``forward`` would be, with
    the norm and the fusion folded into the step (``csrc/norm.h``): H's
    moments from the step's forward, the concatenation built image by image
    in L2 and never written out, F's moments (``[mean, var]``, for bn_fuse's
    batch statistics, if ``moments``), and in the backward H's gradient
    through the norm and the features' (when ``features is x``) added as the
    step reads them. Channels-last float32 maps.
    """
    h, c = (None, None) if state is None else state
    weight, fuse_bias = _fusion_weights(fuse)
    if torch.is_grad_enabled():
        f, h_out, c_out, f_moments = _LSTMStepIntoFusion.apply(
            x, None if features is x else features, h, c, kernels_, bias, norm.weight, norm.bias, weight, fuse_bias,
            norm, moments)
        return f, f_moments if moments else None, (h_out, c_out)
    h_out, c_out, *h_moments = kernels().lstm_forward(x, _or_empty(h, x), _or_empty(c, x), *layout(kernels_, bias),
                                                      False, batch_statistics(norm))
    return (*_fusion_inference(features, h_out, h_moments, norm, fuse, moments), (h_out, c_out))


def gru_step_into_fusion(x: torch.Tensor, features: torch.Tensor, h: torch.Tensor | None, gates_: tuple,
                         candidate: tuple, norm: nn.BatchNorm2d, fuse: nn.Conv2d, moments: bool):
    """``(F, F's moments or None, (h,))``: a ConvGRU step folded with its block's norm and fusion.

    As :func:`lstm_step_into_fusion`; ``gates_`` and ``candidate`` are the
    two ``GateConv._folded`` pairs, as for :func:`gru_step`.
    """
    weight, fuse_bias = _fusion_weights(fuse)
    if torch.is_grad_enabled():
        f, h_out, f_moments = _GRUStepIntoFusion.apply(
            x, None if features is x else features, h, *gates_, *candidate, norm.weight, norm.bias, weight,
            fuse_bias, norm, moments)
        return f, f_moments if moments else None, (h_out,)
    h_out, *h_moments = kernels().gru_forward(x, _or_empty(h, x), *layout(*gates_), *layout(*candidate), False,
                                              batch_statistics(norm))
    return (*_fusion_inference(features, h_out, h_moments, norm, fuse, moments), (h_out,))


class _LSTMStepIntoFusion(torch.autograd.Function):
    """:func:`lstm_step_into_fusion` as one autograd node; ``features=None``: the features are X."""

    @staticmethod
    def forward(ctx, x, features, h, c, kernels_, bias, weight, norm_bias, fuse_weight, fuse_bias, norm, moments):
        kx, kh, b = layout(kernels_, bias)
        h_out, c_out, *rest = kernels().lstm_forward(x, _or_empty(h, x), _or_empty(c, x), kx, kh, b, True,
                                                     batch_statistics(norm))
        f, f_moments, norm_saved = _fusion_forward(ctx, x if features is None else features, h_out, rest[4:],
                                                   weight, norm_bias, fuse_weight, fuse_bias, norm, moments)
        ctx.save_for_backward(x, features, h, c, kx, kh, c_out, *norm_saved, *rest[:4])
        return f, h_out, c_out, f_moments

    @staticmethod
    def backward(ctx, df, dh, dc, _):
        x, features, h, c, kx, kh, c_out, *rest = ctx.saved_tensors
        norm_saved, gates = rest[:_NORM_SAVED], rest[_NORM_SAVED:]
        if df is None and dh is None and dc is None:
            return (None,) * 12
        d_concat, coef, d_features, params = _fusion_grads(ctx, df, x, features, norm_saved)
        dx, dh_prev, dc_prev, dkx, dkh, db = kernels().lstm_backward(
            _grad(dh, x), _grad(dc, x), gates, c_out, x, _or_empty(h, x), _or_empty(c, x), kx, kh, d_concat,
            norm_saved[0], coef, df is not None and features is None)
        return (dx, d_features, None if h is None else dh_prev, None if c is None else dc_prev,
                _kernel_grad(dkx, dkh), db, *params, None, None)


class _GRUStepIntoFusion(torch.autograd.Function):
    """:func:`gru_step_into_fusion` as one autograd node; ``features=None``: the features are X."""

    @staticmethod
    def forward(ctx, x, features, h, k_zr, b_zr, k_c, b_c, weight, norm_bias, fuse_weight, fuse_bias, norm,
                moments):
        (kx_zr, kh_zr, b1), (kx_c, kh_c, b2) = layout(k_zr, b_zr), layout(k_c, b_c)
        h_out, *rest = kernels().gru_forward(x, _or_empty(h, x), kx_zr, kh_zr, b1, kx_c, kh_c, b2, True,
                                             batch_statistics(norm))
        f, f_moments, norm_saved = _fusion_forward(ctx, x if features is None else features, h_out, rest[3:],
                                                   weight, norm_bias, fuse_weight, fuse_bias, norm, moments)
        ctx.save_for_backward(x, features, h, kx_zr, kh_zr, kx_c, kh_c, *norm_saved, *rest[:3])
        return f, h_out, f_moments

    @staticmethod
    def backward(ctx, df, dh, _):
        x, features, h, kx_zr, kh_zr, kx_c, kh_c, *rest = ctx.saved_tensors
        norm_saved, saved = rest[:_NORM_SAVED], rest[_NORM_SAVED:]
        if df is None and dh is None:
            return (None,) * 13
        d_concat, coef, d_features, params = _fusion_grads(ctx, df, x, features, norm_saved)
        dx, dh_prev, dkx_zr, dkh_zr, db_zr, dkx_c, dkh_c, db_c = kernels().gru_backward(
            _grad(dh, x), saved, x, _or_empty(h, x), kx_zr, kh_zr, kx_c, kh_c, d_concat, norm_saved[0], coef,
            df is not None and features is None)
        return (dx, d_features, None if h is None else dh_prev, _kernel_grad(dkx_zr, dkh_zr), db_zr,
                _kernel_grad(dkx_c, dkh_c), db_c, *params, None, None)


# What a folded step saves for its norm and fusion (see _fusion_forward), before its own tensors.
_NORM_SAVED = 7


def _fusion_forward(ctx, features, h_out, h_moments, weight, norm_bias, fuse_weight, fuse_bias, norm, moments):
    """``(F, F's moments or empty, what the backward needs)`` from a step's H: the folded steps' shared forward.

    ``h_moments``: ``[H's moments]`` from the step, or ``[]``.
    """
    ctx.batch, (mean, invstd, scale, shift), f, f_moments = _fuse(features, h_out, h_moments, norm, weight,
                                                                  norm_bias, fuse_weight, fuse_bias, moments)
    ctx.has_fuse_bias = fuse_bias is not None
    ctx.set_materialize_grads(False)
    f_moments = f_moments[0] if moments else h_out.new_empty(0)
    ctx.mark_non_differentiable(f_moments)
    return f, f_moments, (h_out, weight, mean, invstd, scale, shift, fuse_weight)


def _fusion_grads(ctx, df, x, features, norm_saved):
    """``(d_concat, coef, d_features, (d_norm_weight, d_norm_bias, d_fuse_weight, d_fuse_bias))`` for a folded
    step's backward; empty ``d_concat`` and ``coef`` (and no gradients) where F got none."""
    none = x.new_empty(0)
    if df is None:
        return none, none, None, (None,) * 4
    h_out, weight, mean, invstd, scale, shift, fuse_weight = norm_saved
    d_concat, d_fuse_weight, d_fuse_bias, sums = kernels().fuse_backward(
        df.contiguous(memory_format=torch.channels_last), x if features is None else features, h_out, scale, shift,
        mean, fuse_weight)
    coef, d_weight, d_bias = _norm_backward(ctx.batch, sums, _count(h_out), weight, mean, invstd, scale, shift)
    d_features = None if features is None else d_concat[:, : x.shape[1]]
    return d_concat, coef, d_features, (d_weight, d_bias, d_fuse_weight, d_fuse_bias if ctx.has_fuse_bias else None)


def _fusion_inference(features, h, h_moments, norm, fuse, moments: bool):
    """``(F, F's moments or None)`` without autograd, from H (and ``[H's moments]`` from the step, or ``[]``)."""
    _, _, f, f_moments = _fuse(features, h, h_moments, norm, norm.weight, norm.bias, *_fusion_weights(fuse), moments)
    return f, f_moments[0] if moments else None


def _fuse(features, h, h_moments, norm, weight, norm_bias, fuse_weight, fuse_bias, moments: bool):
    """``(batch, (mean, invstd, scale, shift), F, [F's moments] or [])``: the norm's terms on H, then the fusion."""
    batch, *terms = _norm_terms(norm, weight, norm_bias, h, *h_moments)
    f, *f_moments = kernels().fuse_forward(features, h, terms[2], terms[3], fuse_weight, _or_empty(fuse_bias, h),
                                           moments)
    return batch, terms, f, f_moments


def norm_relu_fuse(features: torch.Tensor, h: torch.Tensor, norm: nn.BatchNorm2d, fuse: nn.Conv2d,
                   moments: bool):
    """``(fuse(cat[features, ReLU(norm(h))]), its moments or None)`` image by image (``csrc/norm.cpp``).

    ``norm`` is updated as its ``forward`` would be. For a cell whose step
    cannot fold the norm in (:func:`lstm_step_into_fusion`), and for a
    recorded step, which then gives the same numbers as the folded one.
    Channels-last float32 maps.
    """
    if torch.is_grad_enabled():
        f, f_moments = _NormReLUFuse.apply(features, h, norm.weight, norm.bias, *_fusion_weights(fuse), norm,
                                           moments)
        return f, f_moments if moments else None
    return _fusion_inference(features, h, [], norm, fuse, moments)


class _NormReLUFuse(torch.autograd.Function):
    """:func:`norm_relu_fuse` as one autograd node: saves the features, H and the norm's statistics."""

    @staticmethod
    def forward(ctx, features, h, weight, bias, fuse_weight, fuse_bias, norm, moments):
        f, f_moments, norm_saved = _fusion_forward(ctx, features, h, [], weight, bias, fuse_weight, fuse_bias, norm,
                                                   moments)
        ctx.save_for_backward(features, *norm_saved)
        return f, f_moments

    @staticmethod
    @once_differentiable
    def backward(ctx, df, _):
        features, *norm_saved = ctx.saved_tensors
        if df is None:
            return (None,) * 8
        d_concat, coef, d_features, params = _fusion_grads(ctx, df, features, features, norm_saved)
        return (d_features, kernels().norm_relu_backward(d_concat, norm_saved[0], coef), *params, None, None)


def bn_relu(x: torch.Tensor, norm: nn.BatchNorm2d, moments: torch.Tensor | None = None) -> torch.Tensor:
    """``ReLU(norm(x))`` in one pass forward and two backward (``csrc/norm.cpp``), ``norm`` updated as its ``forward`` would be.

    PyTorch's channels-last batch norm and ReLU take five passes over ``x``'s
    size and an extra write each way; a regulated block has one such pair
    after its fusion, whose C++ kernel also gives x's ``moments`` (else one
    more pass). Channels-last float32 ``x``, ``norm`` as :func:`norm_supported`.
    """
    if torch.is_grad_enabled():
        return _BatchNormReLU.apply(x, norm.weight, norm.bias, norm, moments)
    _, _, _, scale, shift = _norm_terms(norm, norm.weight, norm.bias, x, moments)
    return kernels().norm_relu(x, scale, shift)


class _BatchNormReLU(torch.autograd.Function):
    """:func:`bn_relu` as one autograd node: saves x and the per-channel statistics."""

    @staticmethod
    def forward(ctx, x, weight, bias, norm, moments):
        ctx.batch, mean, invstd, scale, shift = _norm_terms(norm, weight, bias, x, moments)
        ctx.save_for_backward(x, weight, mean, invstd, scale, shift)
        return kernels().norm_relu(x, scale, shift)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, weight, mean, invstd, scale, shift = ctx.saved_tensors
        dy = dy.contiguous(memory_format=torch.channels_last)
        sums = kernels().norm_relu_sums(dy, x, scale, shift, mean)
        coef, d_weight, d_bias = _norm_backward(ctx.batch, sums, _count(x), weight, mean, invstd, scale, shift)
        return kernels().norm_relu_backward(dy, x, coef), d_weight, d_bias, None, None


def _count(x: torch.Tensor) -> int:
    return x.shape[0] * x.shape[2] * x.shape[3]


def _fusion_weights(fuse: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The fusion's weight as ``[C, 2C]`` (a view: its gradient reaches the parameter) and its bias."""
    return fuse.weight.view(fuse.weight.shape[0], -1), fuse.bias


def batch_statistics(norm: nn.BatchNorm2d) -> bool:
    """Whether ``norm`` normalises by the batch's statistics (as ``BatchNorm2d.forward`` decides)."""
    return norm.training or norm.running_mean is None


def _norm_terms(norm: nn.BatchNorm2d, weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor,
                moments: torch.Tensor | None = None):
    """``(batch, mean, invstd, scale, shift)`` of ``norm`` on ``x``, ``norm(x) = scale * x + shift`` per channel.

    ``batch``: whether the batch's statistics are used; they are then
    ``moments`` (``[mean, biased var]``, from a C++ step) or computed from
    ``x``, and the running ones are updated as ``BatchNorm2d.forward`` does.
    Detached: the C++ steps' inputs.
    """
    batch, count = batch_statistics(norm), _count(x)
    mean, var = norm.running_mean, norm.running_var
    if batch:
        mean, var = kernels().channel_moments(x) if moments is None else moments
    if batch and norm.training and norm.track_running_stats:
        if count < 2:
            raise ValueError(f"Expected more than 1 value per channel when training, got {count}.")
        with torch.no_grad():
            norm.num_batches_tracked.add_(1)
            momentum = 1.0 / float(norm.num_batches_tracked) if norm.momentum is None else norm.momentum
            norm.running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
            norm.running_var.mul_(1 - momentum).add_(var, alpha=momentum * count / (count - 1))
    with torch.no_grad():
        invstd = torch.rsqrt(var + norm.eps)
        scale = weight * invstd
        return batch, mean, invstd, scale.contiguous(), (bias - mean * scale).contiguous()


def _norm_backward(batch: bool, sums: torch.Tensor, count: int, weight, mean, invstd, scale, shift):
    """``(coef, d_weight, d_bias)`` of a BN + ReLU from its ``[sum g, sum g * (x - mean)]`` (see ``csrc/norm.h``).

    g is the output's gradient where the output is positive; x's gradient is
    ``a * g - b0 - b1 * x`` with ``a = weight * invstd``; with batch statistics,
    ``b1 = a * invstd^2 * sum(g (x - mean)) / count`` and
    ``b0 = a * sum(g) / count - b1 * mean`` (BN's backward), else zero.
    """
    total, centred = sums
    a = weight.detach() * invstd
    b1 = a * invstd ** 2 * centred / count if batch else torch.zeros_like(a)
    b0 = a * total / count - b1 * mean if batch else torch.zeros_like(a)
    return torch.stack((scale, shift, a, b0, b1)).contiguous(), centred * invstd, total
