"""The C++ ConvLSTM step (regnet/models/native.py, csrc/conv_lstm.cpp) against the paper's formulas, and when it runs.

Values and every gradient must match the literal float64 formulas of
``test_cells_fast`` to 1e-5: vector and scalar channel blocks, both memory
formats, zero and carried state, a gradient on H only or C only, border-only
maps. The step must run wherever nothing can observe the gates it does not
write, and step aside wherever something can (a hook, a trace with autograd,
another dtype), and a machine that cannot build it must still train.
"""
import shutil
import warnings

import pytest
import torch

import regnet.models.cells as cells
from regnet.models import build_model, native, record
from regnet.models.cells import make_cell
from gradient_error import relative_error
from test_cells_fast import paper_step

torch.set_num_threads(2)

needs_build = pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                                 reason="no C++ compiler on this machine: the cells run the PyTorch path")


def _inputs(channels, size, carried, channels_last, batch=3, seed=0, kind="lstm"):
    torch.manual_seed(seed)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    shape = (batch, channels, *size)
    x = torch.randn(shape).contiguous(memory_format=fmt).requires_grad_()
    n = 2 if kind == "lstm" else 1
    state = tuple(torch.randn(shape).contiguous(memory_format=fmt).requires_grad_() for _ in range(n)) \
        if carried else None
    return x, state


def _cell(channels, seed=1, kind="lstm"):
    torch.manual_seed(seed)
    cell = make_cell(kind, channels, channels)
    with torch.no_grad():  # larger than the default init, so every gate works away from 0.5 and tanh's slope 1
        for p in cell.parameters():
            p.normal_(0, 0.6)
    return cell


def _calls(monkeypatch):
    """A list that gets one entry per C++ step taken (of any cell)."""
    calls = []
    for name in ("lstm_step", "gru_step", "lstm_step_into_fusion", "gru_step_into_fusion"):
        original = getattr(native, name)
        monkeypatch.setattr(native, name, lambda *a, _f=original, **k: calls.append(1) or _f(*a, **k))
    return calls


@needs_build
def test_the_cpp_step_is_built_on_this_machine():
    assert native.kernels() is not None
    assert hasattr(native.kernels(), "lstm_forward") and hasattr(native.kernels(), "lstm_backward")


LOSSES = [("lstm", "h_and_c"), ("lstm", "h"), ("lstm", "c"), ("gru", "h")]


@needs_build
@pytest.mark.parametrize("channels", [16, 5, 37], ids=["one_vector_block", "scalar_tail", "blocks_and_tail"])
@pytest.mark.parametrize("carried", [False, True], ids=["zero_state", "carried_state"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("kind,loss_on", LOSSES, ids=[f"{k}-loss_on_{o}" for k, o in LOSSES])
def test_the_cpp_step_matches_the_paper_in_values_and_gradients(channels, carried, channels_last, kind, loss_on,
                                                                monkeypatch):
    calls = _calls(monkeypatch)
    x, state = _inputs(channels, (6, 5), carried, channels_last, kind=kind)
    cell = _cell(channels, kind=kind)
    h, new_state, gates = cell(x, state, keep_gates=False)
    assert calls and gates == {} and new_state[0] is h
    ref_h, ref_state, _ = paper_step(cell, x.double(), None if state is None else tuple(s.double() for s in state))
    torch.manual_seed(2)
    weights = [torch.randn_like(ref_h) for _ in ref_state]
    use = [loss_on in ("h_and_c", "h"), loss_on in ("h_and_c", "c")]
    loss = sum((t * w.float()).sum() * u for t, w, u in zip(new_state, weights, use))
    ref_loss = sum((t * w).sum() * u for t, w, u in zip(ref_state, weights, use))
    leaves = [x, *(state or ()), *cell.parameters()]
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    ref_grads = torch.autograd.grad(ref_loss, leaves, allow_unused=True)
    for t, ref in zip(new_state, ref_state):
        torch.testing.assert_close(t.double(), ref, rtol=1e-5, atol=1e-5)
    for g, ref in zip(grads, ref_grads):
        torch.testing.assert_close(g, ref, rtol=1e-5, atol=1e-5)


@needs_build
@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("size", [(1, 1), (1, 4), (2, 3), (2, 7)], ids=["1x1", "1x4", "2x3", "2x7"])
def test_border_only_maps_match_the_paper(size, kind):
    """Rows of 1 to 7 pixels: every way a row splits into runs of four (AVX-512), pairs and a last one alone."""
    x, state = _inputs(16, size, True, True, kind=kind)
    cell = _cell(16, kind=kind)
    h, new_state, _ = cell(x, state, keep_gates=False)
    ref_h, ref_state, _ = paper_step(cell, x.double(), tuple(s.double() for s in state))
    leaves = [x, *state, *cell.parameters()]
    grads = torch.autograd.grad(sum((k + 1) * t.sum() for k, t in enumerate(new_state)), leaves)
    ref_grads = torch.autograd.grad(sum((k + 1) * t.sum() for k, t in enumerate(ref_state)), leaves)
    torch.testing.assert_close(h.double(), ref_h, rtol=1e-5, atol=1e-5)
    for g, ref in zip(grads, ref_grads):
        torch.testing.assert_close(g, ref, rtol=1e-5, atol=1e-5)


@needs_build
@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("carried", [False, True], ids=["zero_state", "carried_state"])
@pytest.mark.parametrize("keep_gates", [False, True], ids=["state_only", "with_gates"])
def test_without_autograd_the_step_matches_the_pytorch_path_and_returns_its_gates(kind, carried, keep_gates,
                                                                                  monkeypatch):
    calls = _calls(monkeypatch)
    x, state = _inputs(21, (5, 5), carried, True, kind=kind)
    cell = _cell(21, kind=kind)
    with torch.inference_mode():
        h, new_state, gates = cell(x, state, keep_gates=keep_gates)
        assert calls
        monkeypatch.setattr(native, "kernels", lambda: None)
        ref_h, ref_state, ref_gates = cell(x, state)
    for t, ref in zip(new_state, ref_state):
        torch.testing.assert_close(t, ref, rtol=1e-5, atol=1e-5)
    assert set(gates) == (set(ref_gates) if keep_gates else set())
    for name, g in gates.items():
        torch.testing.assert_close(g, ref_gates[name], rtol=1e-5, atol=1e-5)


@needs_build
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_the_gradients_do_not_depend_on_the_thread_count(kind):
    x, state = _inputs(16, (8, 8), True, True, batch=6, kind=kind)
    cell = _cell(16, kind=kind)
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        h, new_state, _ = cell(x, state, keep_gates=False)
        loss = sum(t.sum() for t in new_state)
        results.append((*new_state, *torch.autograd.grad(loss, [x, *state, *cell.parameters()])))
    torch.set_num_threads(2)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def _loss_and_grads(model, x, y):
    model.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


@needs_build
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_a_regnet20_forward_and_backward_match_the_pytorch_path(kind, monkeypatch):
    """No further from float64 than the PyTorch path in float32 is: loss and every parameter's gradient.

    A whole network's gradients amplify float rounding: in a GRU regnet20 at
    init (eval mode) one early gradient element is 3e-4 from float64 in the
    float32 PyTorch path, as a value on a ReLU's edge falls on either side of
    it, and the C++ steps land on one side or the other depending on how the
    build rounds (AVX-512, AVX2, SSE2). So both are measured against float64,
    over whole tensors (:func:`gradient_error.relative_error`: GRU 2.6e-3 for
    the PyTorch path, 2.4e-3-2.6e-3 for the builds; LSTM 1.5e-6 and 1e-6).
    """
    torch.manual_seed(0)
    model = build_model("regnet20", cell=kind).to(memory_format=torch.channels_last).eval()
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.tensor([0, 1, 2, 3])
    calls = _calls(monkeypatch)
    cpp = _loss_and_grads(model, x, y)
    assert len(calls) == 9  # every block of the three stages
    monkeypatch.setattr(native, "kernels", lambda: None)
    pytorch = _loss_and_grads(model, x, y)
    truth = _loss_and_grads(model.double(), x.double(), y)
    assert len(calls) == 9
    torch.testing.assert_close(cpp[0].double(), truth[0], rtol=1e-5, atol=1e-6)
    assert relative_error(cpp[1], truth[1]) <= 3 * relative_error(pytorch[1], truth[1]) + 1e-6


@needs_build
@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("channels_last", [True, False])  # the norms and fusion in C++, or as modules
def test_a_recorded_pass_runs_the_cpp_step_and_keeps_the_logits(kind, channels_last, monkeypatch):
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model("regnet20", cell=kind).to(memory_format=fmt).eval()
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=fmt)
    calls = _calls(monkeypatch)
    with torch.no_grad():
        plain = model(x)
        with record(model) as trace:
            recorded = model(x)
    assert len(calls) == 18 and torch.equal(plain, recorded)
    assert set(trace[0].gates) == ({"i", "f", "o", "g"} if kind == "lstm" else {"z", "r", "candidate"})
    assert (trace[0].cell is not None) == (kind == "lstm")


def _hooked_forward(kind):
    def hook(cell):
        taps = cell.make_taps()
        if kind == "forward":
            taps.gates["f"].register_forward_hook(lambda m, i, o: o)
        else:
            taps.hidden.register_full_backward_hook(lambda m, gi, go: None)
        return taps
    return hook


@pytest.mark.parametrize("case", ["forward_hook", "backward_hook", "gates_with_autograd", "float64", "bf16_autocast",
                                  "full_gates", "built_off"])
def test_the_step_steps_aside_where_its_gates_could_be_observed_or_it_does_not_apply(case, monkeypatch):
    calls = _calls(monkeypatch)
    x, state = _inputs(8, (4, 4), True, True)
    cell = make_cell("lstm", 8, 8, "full" if case == "full_gates" else "efficient")
    taps, keep_gates = None, False
    if case.endswith("_hook"):
        taps = _hooked_forward(case.split("_")[0])(cell)
    if case == "gates_with_autograd":
        keep_gates = True
    if case == "float64":
        cell = cell.double()
        x, *state = (t.detach().double().requires_grad_() for t in (x, *state))
    if case == "built_off":
        monkeypatch.setattr(native, "kernels", lambda: None)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=case == "bf16_autocast"):
        h, _, gates = cell(x, state, taps, keep_gates=keep_gates)
    h.sum().backward()
    expected = case == "bf16_autocast" and native.kernels() is not None  # a step under autocast runs in float32
    assert bool(calls) == expected
    assert x.grad is not None and x.grad.shape == x.shape
    if case == "gates_with_autograd":
        assert gates["f"].requires_grad


def test_the_rnn_cell_has_no_cpp_step(monkeypatch):
    """One gate: oneDNN's two depthwise convolutions beat a C++ step of it (bench/README.md, seventh round)."""
    calls = _calls(monkeypatch)
    cell = make_cell("rnn", 8, 8)
    h, _, _ = cell(torch.randn(2, 8, 4, 4), (torch.randn(2, 8, 4, 4),), keep_gates=False)
    assert cells.ConvRNNCell._native is None and not calls and h.shape == (2, 8, 4, 4)


def test_a_machine_that_cannot_build_the_step_warns_once_and_trains(monkeypatch):
    from torch.utils import cpp_extension

    def no_compiler(*args, **kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions")

    native.kernels.cache_clear()
    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    try:
        with pytest.warns(UserWarning, match="could not be built.*Ninja is required"):
            assert native.kernels() is None
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert native.kernels() is None  # cached: no second warning
        model = build_model("regnet20")
        loss = model(torch.randn(2, 3, 32, 32)).sum()
        loss.backward()
        assert all(p.grad is not None for p in model.parameters())
    finally:
        native.kernels.cache_clear()


def test_regnet_native_0_turns_the_step_off(monkeypatch):
    native.kernels.cache_clear()
    monkeypatch.setenv("REGNET_NATIVE", "0")
    try:
        assert native.kernels() is None
    finally:
        native.kernels.cache_clear()


def test_the_build_key_names_this_machine_torch_and_the_sources():
    key = native._build_key()
    assert len(key) == 10 and int(key, 16) >= 0 and key == native._build_key()
    assert cells.native is native


def test_a_cpu_runs_log_names_the_cells_path(monkeypatch):
    assert native.describe(build_model("resnet20")) is None
    assert native.describe(build_model("regnet20", cell="rnn")) is None
    line = native.describe(build_model("regnet20"))
    assert line == ("regulator cells: C++ steps for this CPU, with the blocks' norms and fusion "
                    "(regnet/models/native.py)" if native.kernels()
                    else "regulator cells: PyTorch ops (the C++ steps could not be built)")
    monkeypatch.setattr(native, "kernels", lambda: None)
    monkeypatch.setenv("REGNET_NATIVE", "0")
    assert native.describe(build_model("regnet20", cell="gru")) == "regulator cells: PyTorch ops (REGNET_NATIVE=0)"


def test_a_lock_left_by_a_build_killed_midway_is_cleared_under_the_build_flock(tmp_path):
    import fcntl

    (tmp_path / "lock").write_text("")  # cpp_extension's marker, left by a killed build
    with native.exclusive_build(tmp_path):
        assert not (tmp_path / "lock").exists()
        with open(tmp_path / "regnet.flock") as other:  # a second process would wait here
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(tmp_path / "regnet.flock") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released after the build


@needs_build
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_gates_are_refused_while_autograd_records(kind):
    """Gates from the C++ step are not nodes of the graph: asked for under autograd, the step says so."""
    x, state = _inputs(8, (4, 4), True, True, kind=kind)
    cell = _cell(8, kind=kind)
    step = (lambda: native.lstm_step(x, state, *cell.conv._folded(), keep_gates=True)) if kind == "lstm" else \
        (lambda: native.gru_step(x, state[0], cell.gates._folded(), cell.candidate._folded(), keep_gates=True))
    with pytest.raises(ValueError, match="gates only without autograd"):
        step()
    with torch.no_grad():
        assert len(step()) == (6 if kind == "lstm" else 4)
