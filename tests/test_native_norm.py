"""The regulator's norms and fusion in C++ (regnet/models/native.py, csrc/norm.cpp) against the modules they stand for.

A regulated block's ``BN+ReLU on H -> cat -> 1x1 fusion -> BN+ReLU`` runs as
C++ kernels on a CPU: folded into the ConvLSTM step, or beside another cell.
Values, every gradient and the batch norms' running statistics must match
``nn.BatchNorm2d``, ``torch.cat`` and ``nn.Conv2d`` to 1e-5, in training and
in evaluation; and the modules must run wherever a hook could watch them.
"""
import copy
import shutil
from unittest import mock

import pytest
import torch
from torch import nn

from regnet.models import build_model, native
from regnet.models.cells import make_cell
from gradient_error import relative_error

CL = torch.channels_last
needs_build = pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                                 reason="no C++ compiler on this machine: the blocks run their modules")


def _map(channels, seed, grad=True, size=(6, 7), batch=3):
    torch.manual_seed(seed)
    return torch.randn(batch, channels, *size).contiguous(memory_format=CL).requires_grad_(grad)


def _norm_pair(channels, train, momentum=0.1):
    """Two equal ``BatchNorm2d`` with non-trivial parameters and running statistics."""
    torch.manual_seed(5)
    a = nn.BatchNorm2d(channels, momentum=momentum)
    with torch.no_grad():
        a.weight.uniform_(0.5, 1.5), a.bias.normal_(), a.running_mean.normal_(), a.running_var.uniform_(0.5, 2)
    b = nn.BatchNorm2d(channels, momentum=momentum)
    b.load_state_dict(a.state_dict())
    return a.train(train), b.train(train)


def _close_relative(a, b, tol=1e-5):
    assert (a - b).abs().max().item() <= tol * (1 + a.abs().max().item())


def _same_statistics(a: nn.BatchNorm2d, b: nn.BatchNorm2d):
    torch.testing.assert_close(a.running_mean, b.running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.running_var, b.running_var, rtol=1e-5, atol=1e-6)
    assert int(a.num_batches_tracked) == int(b.num_batches_tracked)


def _step_into_fusion(kind, cell, x, features, state, norm, fuse):
    if kind == "lstm":
        return native.lstm_step_into_fusion(x, features, state, *cell.conv._folded(), norm, fuse, True)
    return native.gru_step_into_fusion(x, features, None if state is None else state[0], cell.gates._folded(),
                                       cell.candidate._folded(), norm, fuse, True)


def _through_modules(kind, cell, x, features, state, norm, fuse, dtype):
    """``(F, F's moments, state out, norm, leaves)``: the step (PyTorch path), the norm, cat and fuse, in ``dtype``."""
    cell, norm, fuse = (copy.deepcopy(m).to(dtype) for m in (cell, norm, fuse))
    x_ = x.detach().to(dtype).requires_grad_()
    features_ = x_ if features is x else features.detach().to(dtype).requires_grad_()
    state_ = None if state is None else tuple(t.detach().to(dtype).requires_grad_() for t in state)
    with mock.patch.object(native, "kernels", lambda: None):
        h, state_out, _ = cell(x_, state_)
        f = fuse(torch.cat((features_, torch.relu(norm(h))), dim=1))
    var, mean = torch.var_mean(f.detach(), dim=(0, 2, 3), unbiased=False)
    leaves = [x_, *cell.parameters(), *fuse.parameters(), norm.weight, norm.bias,
              *([features_] if features is not x else []), *(state_ or ())]
    return f, torch.stack((mean, var)), state_out, norm, leaves


@needs_build
@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("channels", [16, 5, 37])
@pytest.mark.parametrize("separate_features", [False, True])
@pytest.mark.parametrize("carried", [False, True])
@pytest.mark.parametrize("train", [True, False])
def test_the_step_into_fusion_matches_the_step_norm_cat_and_fusion(kind, channels, separate_features, carried,
                                                                   train):
    """Against the modules in float64: values and moments to 1e-5; gradients to 3e-5 of their largest value, or
    3x the float32 modules' own error where a sum cancels (BN's backward takes the mean out of H's gradient, which
    a GRU's candidate weights then sum: both float32 paths are ~2e-5 off there)."""
    x = _map(channels, 0)
    features = _map(channels, 1) if separate_features else x
    state = tuple(_map(channels, 2 + k) for k in range(2 if kind == "lstm" else 1)) if carried else None
    torch.manual_seed(4)
    cell = make_cell(kind, channels, channels)
    norm, _ = _norm_pair(channels, train)
    fuse = nn.Conv2d(2 * channels, channels, 1, bias=not train).to(memory_format=CL)
    truth, single = (_through_modules(kind, cell, x, features, state, norm, fuse, d)
                     for d in (torch.float64, torch.float32))
    folded = copy.deepcopy(norm)
    f, moments, state_out = _step_into_fusion(kind, cell, x, features, state, folded, fuse)

    torch.testing.assert_close(f.double(), truth[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(moments.double(), truth[1], rtol=1e-5, atol=1e-5)
    _same_statistics(copy.deepcopy(truth[3]).float(), folded)
    leaves = [x, *cell.parameters(), *fuse.parameters(), folded.weight, folded.bias,
              *([features] if separate_features else []), *(state or ())]
    torch.manual_seed(6)
    weights = [torch.randn(t.shape, dtype=torch.float64) for t in (f, *state_out)]
    grads = []
    for outputs, inputs in ((truth[0], *truth[2]), truth[4]), ((single[0], *single[2]), single[4]), \
                           ((f, *state_out), leaves):
        loss = sum((w.to(t.dtype) * t).sum() for w, t in zip(weights, outputs))
        grads.append(torch.autograd.grad(loss, inputs))
    for t, g32, got in zip(*grads):
        error, own = (got.double() - t).abs().max().item(), (g32.double() - t).abs().max().item()
        assert error <= max(3e-5 * (1 + t.abs().max().item()), 3 * own)


@needs_build
@pytest.mark.parametrize("channels", [16, 37])
@pytest.mark.parametrize("train", [True, False])
def test_norm_relu_fuse_matches_the_modules(channels, train):
    features, h = _map(channels, 0), _map(channels, 1)
    modules, folded = _norm_pair(channels, train)
    fuse = nn.Conv2d(2 * channels, channels, 1, bias=False).to(memory_format=CL)
    expected = fuse(torch.cat((features, torch.relu(modules(h))), dim=1))
    f, moments = native.norm_relu_fuse(features, h, folded, fuse, False)
    assert moments is None
    torch.testing.assert_close(f, expected, rtol=1e-5, atol=1e-6)
    _same_statistics(modules, folded)
    weight = torch.randn_like(f)
    want = torch.autograd.grad((weight * expected).sum(), [features, h, fuse.weight, modules.weight, modules.bias])
    got = torch.autograd.grad((weight * f).sum(), [features, h, fuse.weight, folded.weight, folded.bias])
    for a, b in zip(want, got):
        _close_relative(a, b)


@needs_build
@pytest.mark.parametrize("channels", [16, 5])
@pytest.mark.parametrize("train,momentum", [(True, 0.1), (True, None), (False, 0.1)])
def test_bn_relu_matches_batch_norm_then_relu(channels, train, momentum):
    x = _map(channels, 0)
    modules, folded = _norm_pair(channels, train, momentum)
    for step in range(2):  # momentum=None: a cumulative average, which the second step tells apart
        expected, got = torch.relu(modules(x)), native.bn_relu(x, folded)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
        _same_statistics(modules, folded)
    weight = torch.randn_like(expected)
    want = torch.autograd.grad((weight * expected).sum(), [x, modules.weight, modules.bias])
    for a, b in zip(want, torch.autograd.grad((weight * got).sum(), [x, folded.weight, folded.bias])):
        _close_relative(a, b)


def _training_step(model, x, y):
    model.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()], [b.clone() for b in model.buffers()]


def _calls(monkeypatch):
    """A list that gets the name of each C++ norm-and-fusion path taken."""
    calls = []
    for name in ("lstm_step_into_fusion", "gru_step_into_fusion", "norm_relu_fuse", "bn_relu"):
        original = getattr(native, name)
        monkeypatch.setattr(native, name, lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    return calls


def _matches_the_modules(model, x, y, monkeypatch, calls):
    """One training step with the kernels, with the modules (kernels off), and in float64, from one state.

    A training-mode network at float32 is chaotic: the modules' own
    gradients are several % from float64's (BN divides by small batch
    variances), so the measure is that the kernels' error is of the modules'
    order (a wiring error, a gradient lost or doubled, is of order 1), and
    so are the running statistics'. (The C++ cell's vector exp and reciprocal
    are a few ulp: its first block's output is ~4x the modules' error.)
    Returns the C++ paths taken.
    """
    state = {k: v.clone() for k, v in model.state_dict().items()}
    double = copy.deepcopy(model).double()
    cpp = _training_step(model, x, y)
    taken = list(calls)
    monkeypatch.setattr(native, "kernels", lambda: None)
    model.load_state_dict(state)
    modules = _training_step(model, x, y)
    truth = _training_step(double, x.double(), y)
    assert abs(cpp[0] - truth[0]) <= 1e-3 * truth[0]
    assert [int(b) for b in cpp[2] if not b.is_floating_point()] == \
        [int(b) for b in modules[2] if not b.is_floating_point()]  # num_batches_tracked
    for k in (1, 2):  # gradients, then running statistics
        got, want, exact = ([t for t in run[k] if t.is_floating_point()] for run in (cpp, modules, truth))
        assert relative_error(got, exact) <= 5 * relative_error(want, exact) + 1e-4
    return taken


@needs_build
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_a_regnet20_training_step_matches_its_modules(cell, monkeypatch):
    """Loss, every gradient and every running statistic after one training step, against the kernels off."""
    torch.manual_seed(0)
    model = build_model("regnet20", cell=cell).to(memory_format=CL).train()
    x, y = torch.randn(8, 3, 32, 32).contiguous(memory_format=CL), torch.arange(8) % 10
    calls = _matches_the_modules(model, x, y, monkeypatch, _calls(monkeypatch))
    folded_into_step = 0 if cell == "rnn" else 9
    assert calls.count(f"{cell}_step_into_fusion") == folded_into_step
    assert calls.count("norm_relu_fuse") == 9 - folded_into_step and calls.count("bn_relu") == 9


@needs_build
def test_a_bottleneck_regnet_fuses_its_3x3_features(monkeypatch):
    """A bottleneck fuses H with the 3x3's output, not with X2: the features enter the kernels on their own."""
    torch.manual_seed(0)
    model = build_model("regnet50", regulated_stages=(1,)).to(memory_format=CL).train()
    x, y = torch.randn(2, 3, 64, 64).contiguous(memory_format=CL), torch.tensor([1, 2])
    calls = _matches_the_modules(model, x, y, monkeypatch, _calls(monkeypatch))
    assert calls.count("lstm_step_into_fusion") == 3


@needs_build
@pytest.mark.parametrize("watched,folded_steps,bn_relus", [("regulator_norm", 8, 9), ("fuse", 8, 9),
                                                           ("bn_fuse", 9, 8)])
def test_a_hook_on_a_norm_or_the_fusion_gets_its_module_run(watched, folded_steps, bn_relus, monkeypatch):
    torch.manual_seed(0)
    model = build_model("regnet20").to(memory_format=CL).eval()
    block = model.stages[0].blocks[1]
    seen = []
    getattr(block, watched).register_forward_hook(lambda m, i, o: seen.append(o.shape))
    calls = _calls(monkeypatch)
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32).contiguous(memory_format=CL))
    assert len(seen) == 1  # the watched block runs the module (the others, the kernels)
    assert calls.count("lstm_step_into_fusion") == folded_steps and calls.count("bn_relu") == bn_relus


@needs_build
def test_without_blas_the_fusion_runs_as_modules(monkeypatch):
    monkeypatch.setattr(native, "fusion_supported", lambda fuse: False)
    torch.manual_seed(0)
    model = build_model("regnet20").to(memory_format=CL).train()
    calls = _calls(monkeypatch)
    loss, grads, _ = _training_step(model, torch.randn(4, 3, 32, 32).contiguous(memory_format=CL), torch.arange(4))
    assert calls == ["bn_relu"] * 9 and torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads)


@needs_build
def test_the_kernels_find_blas_in_torch():
    assert native.kernels().has_gemm()


@needs_build
@pytest.mark.parametrize("offset", [0.0, 100.0])
def test_the_moments_keep_float64_precision_far_from_zero(offset):
    """A fusion's output can sit far from 0; a float32 sum of squares over a stage-1 image would be 4e-6 off there."""
    torch.manual_seed(0)
    x = (offset + torch.randn(4, 37, 32, 32) * torch.linspace(0.5, 2, 37).view(1, 37, 1, 1)).contiguous(
        memory_format=CL)
    var, mean = torch.var_mean(x.double(), dim=(0, 2, 3), unbiased=False)
    got = native.kernels().channel_moments(x).double()
    torch.testing.assert_close(got[0], mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got[1], var, rtol=1e-6, atol=0)


@needs_build
def test_the_fused_step_does_not_depend_on_the_thread_count():
    """Images are spread over threads; per-thread sums are added in the threads' order, moments in image order."""
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        x, (h, c) = _map(16, 0, size=(8, 8), batch=6), (_map(16, 1, size=(8, 8), batch=6),
                                                       _map(16, 2, size=(8, 8), batch=6))
        torch.manual_seed(3)
        kernels, bias = torch.randn(4, 2, 16, 1, 3, 3, requires_grad=True), torch.randn(4, 16, requires_grad=True)
        norm, _ = _norm_pair(16, True)
        fuse = nn.Conv2d(32, 16, 1, bias=False)
        f, moments, (h2, _) = native.lstm_step_into_fusion(x, x, (h, c), kernels, bias, norm, fuse, True)
        grads = torch.autograd.grad(f.square().sum() + h2.sum(), [x, h, kernels, fuse.weight, norm.weight])
        results.append([f, moments, norm.running_var, *grads])
    torch.set_num_threads(2)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
