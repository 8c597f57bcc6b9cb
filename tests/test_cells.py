"""The cells and regulated blocks against the paper's equations, in values and gradients, with and without the speed layer.

The reference below is the math as the paper writes it (``[X, H]``
interleaved, grouped 1x1, depthwise 3x3, gate k of channel c at channel
``G*c + k``; the ``full`` form as one dense conv over ``cat[X, H]``; zero
states as zero tensors), computed from the modules' own parameters.
"""
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from gradient_error import relative_error
from regnet.models import build_model, fast
from regnet.models.cells import ConvGRUCell, ConvLSTMCell, GateConv, make_cell
from regnet.train.checkpoint import load_checkpoint

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"


@pytest.fixture(params=[False, True], ids=["paper_order", "fast_layer"])
def fast_layer(request):
    with fast.gates_in_order(request.param):
        yield request.param


def paper_gates(conv, x, h):
    """Pre-activations of ``GateConv`` ``conv`` from the literal formula, in ``x``'s dtype."""
    c, g = conv.hidden_channels, conv.num_gates
    params = {k: v.to(x.dtype) for k, v in conv.named_parameters()}
    if conv.form == "efficient":
        mixed = F.conv2d(torch.stack((x, h), dim=2).flatten(1, 2), params["pointwise.weight"], groups=c)
        pre = F.conv2d(mixed, params["depthwise.weight"], params["depthwise.bias"], padding=1, groups=g * c)
        return [pre[:, k::g] for k in range(g)]
    pre = F.conv2d(torch.cat((x, h), dim=1), params["conv.weight"], params["conv.bias"], padding=1)
    return list(pre.chunk(g, dim=1))


def paper_step(cell, x, state):
    """One step of ``cell`` by the paper's equations: ``(h, state, gates)`` like the cell's forward."""
    zeros = torch.zeros_like(x)
    if isinstance(cell, ConvLSTMCell):
        h_prev, c_prev = state if state is not None else (zeros, zeros)
        i, f, o, g = paper_gates(cell.conv, x, h_prev)
        i, f, o, g = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o), torch.tanh(g)
        c = f * c_prev + i * g
        h = o * torch.tanh(c)
        return h, (h, c), {"i": i, "f": f, "o": o, "g": g}
    h_prev = state[0] if state is not None else zeros
    if isinstance(cell, ConvGRUCell):
        z, r = (torch.sigmoid(p) for p in paper_gates(cell.gates, x, h_prev))
        candidate = torch.tanh(paper_gates(cell.candidate, x, r * h_prev)[0])
        h = (1 - z) * h_prev + z * candidate
        return h, (h,), {"z": z, "r": r, "candidate": candidate}
    h = torch.tanh(paper_gates(cell.conv, x, h_prev)[0])
    return h, (h,), {}


def two_steps(step, cell, inputs, state, weights):
    """A weighted sum of everything two steps produce (outputs, states, gates), so every path gets a gradient."""
    loss, outputs = 0, []
    for x in inputs:
        h, state, gates = step(cell, x, state)
        for t in (h, *state, *gates.values()):
            loss = loss + (t * weights[len(outputs) % len(weights)].to(t.dtype)).sum()
            outputs.append(t)
    return loss, outputs


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("gates", ["efficient", "full"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("carried", [False, True], ids=["zero_state", "carried_state"])
def test_cells_equal_the_papers_equations_in_values_and_gradients(kind, gates, channels_last, carried, fast_layer):
    torch.manual_seed(0)
    cell = make_cell(kind, 6, 6, gates)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    shape = (2, 6, 7, 7)
    inputs = [torch.randn(shape).contiguous(memory_format=fmt).requires_grad_() for _ in range(2)]
    n_state = 2 if kind == "lstm" else 1
    state = tuple(torch.randn(shape).contiguous(memory_format=fmt).requires_grad_() for _ in range(n_state)) \
        if carried else None
    weights = [torch.randn(shape) for _ in range(5)]
    leaves = [*inputs, *(state or ()), *cell.parameters()]
    loss, outputs = two_steps(lambda c, x, s: c(x, s, c.make_taps()), cell, inputs, state, weights)
    grads = torch.autograd.grad(loss, leaves)
    ref_state = None if state is None else tuple(s.double() for s in state)
    ref_loss, ref_outputs = two_steps(paper_step, cell, [x.double() for x in inputs], ref_state, weights)
    ref_grads = torch.autograd.grad(ref_loss, leaves)
    assert len(outputs) == len(ref_outputs) == 2 * (1 + n_state + len(cell.gate_names))
    for got, want in zip(outputs, ref_outputs):
        torch.testing.assert_close(got, want.float(), atol=1e-5, rtol=1e-5)
    for leaf, got, want in zip(leaves, grads, ref_grads):
        torch.testing.assert_close(got, want.float(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_in_float64_the_plain_forward_is_the_papers_equations_to_rounding(kind):
    torch.manual_seed(0)
    cell = make_cell(kind, 5, 5).double()
    x = torch.randn(2, 5, 6, 6, dtype=torch.float64)
    with fast.gates_in_order(False):
        got = two_steps(lambda c, x, s: c(x, s), cell, [x, 2 * x], None, [torch.ones(1)])[1]
    want = two_steps(paper_step, cell, [x, 2 * x], None, [torch.ones(1)])[1]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-13, rtol=1e-13)


def fig3a(block, cell, x, state):
    """A regulated basic block by Fig. 3a's five lines, from its own modules: ``(out, state)``."""
    x2 = F.relu(block.bn1(block.conv1(x)))
    h, state, _ = paper_step(cell, x2, state)
    x3 = F.relu(block.bn_fuse(block.fuse(torch.cat((x2, F.relu(block.regulator_norm[0](h))), dim=1))))
    x4 = block.bn2(block.conv2(x3))
    return F.relu(block.shortcut(x) + x4), state


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_a_regnet20_stage_is_fig3a_applied_block_after_block(kind):
    torch.manual_seed(0)
    model = build_model("regnet20", num_classes=10, cell=kind).double().eval()
    stage = model.stages[1]
    x = torch.randn(2, 16, 16, 16, dtype=torch.float64)
    want, state = x, None
    for block in stage.blocks:
        want, state = fig3a(block, stage.cell, want, state)
    torch.testing.assert_close(stage(x), want, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_float32_gradients_of_a_training_step_are_as_close_to_float64_as_plain_autograd(kind, fast_layer):
    """Relative error over every parameter tensor of regnet20, one batch: about 0.01 is plain autograd's."""
    torch.manual_seed(0)
    model = build_model("regnet20", num_classes=10, cell=kind).train()
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    grads = {}
    for dtype in (torch.float32, torch.float64):
        copy = model.to(dtype)
        copy.zero_grad()
        F.cross_entropy(copy(x.to(dtype)), y).backward()
        grads[dtype] = [p.grad.clone() for p in copy.parameters()]
    assert relative_error(grads[torch.float32], grads[torch.float64]) <= 0.04


@pytest.mark.parametrize("with_state", [True, False])
def test_the_fast_layer_equals_the_papers_order_in_values_and_gradients(with_state):
    torch.manual_seed(0)
    conv = GateConv(6, 6, num_gates=4, form="efficient")
    x = torch.randn(2, 6, 7, 7, requires_grad=True)
    h = torch.randn(2, 6, 7, 7, requires_grad=True) if with_state else torch.zeros(2, 6, 7, 7)
    inputs = [x, *([h] if with_state else []), *conv.parameters()]
    results = []
    for on in (True, False):
        with fast.gates_in_order(on):
            gates = conv(x, h)
        assert gates[0].is_contiguous(memory_format=torch.channels_last) == on
        loss = sum((g * torch.linspace(-1, 1, g.numel()).view_as(g)).sum() for g in gates)
        results.append((torch.stack([g.contiguous() for g in gates]), torch.autograd.grad(loss, inputs)))
    (folded, folded_grads), (paper, paper_grads) = results
    torch.testing.assert_close(folded, paper, atol=1e-5, rtol=1e-5)
    for a, b in zip(folded_grads, paper_grads):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_one_switch_turns_the_fast_layer_off_and_the_log_says_which_ran(monkeypatch):
    model, cpu = build_model("regnet20"), torch.device("cpu")
    x = torch.zeros(1)
    monkeypatch.delenv(fast.ENV, raising=False)
    assert fast.enabled(x) and "folded depthwise" in fast.describe(model, cpu)
    monkeypatch.setenv(fast.ENV, "0")
    assert not fast.enabled(x) and "the paper's grouped 1x1" in fast.describe(model, cpu)
    with fast.gates_in_order(True):  # the config's choice wins over the environment
        assert fast.enabled(x) and not fast.enabled(torch.zeros(1, device="meta"))
    assert not fast.enabled(x)
    assert fast.describe(build_model("resnet20"), cpu) is None
    assert "the paper's" in fast.describe(model, torch.device("meta"))


@pytest.mark.parametrize("run", ["shapes-regnet20", "cifar10-regnet20", "cifar10-resnet20"])
def test_shipped_checkpoints_load_unchanged_and_keep_their_logits(run, fast_layer):
    """Logits on fixed inputs stay within 1e-4 of those the shipped runs gave before the cells were rewritten."""
    checkpoint = load_checkpoint(CHECKPOINTS / run / "checkpoints" / "best.pt")
    spec = checkpoint["config"]["model"]
    model = build_model(spec["name"], num_classes=spec["num_classes"], **spec["options"]).eval()
    model.load_state_dict(checkpoint["model"])  # strict: every key as it was saved
    torch.manual_seed(0)
    x = torch.randn(16, 3, 32, 32)
    expected = torch.load(Path(__file__).parent / "data" / "shipped_logits.pt", weights_only=True)[run]
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, atol=1e-4, rtol=0)


def test_a_runs_config_chooses_the_path_and_its_log_names_it(tmp_path, monkeypatch):
    from regnet.train.config import build_config
    from regnet.train.loop import train

    monkeypatch.setenv(fast.ENV, "1")
    seen = []
    monkeypatch.setattr(fast, "efficient_gates", lambda *a: seen.append(1) or pytest.fail("the layer ran"))
    config = build_config({"model": {"name": "regnet20"}, "data": {"name": "shapes", "size": 60, "workers": 0, "val_ratio": 0.5},
                           "train": {"epochs": 1, "batch_size": 20, "device": "cpu", "fast_gates": False},
                           "run": {"runs_root": str(tmp_path), "run_id": "plain"}})
    run_dir = train(config, progress=False)
    assert seen == [] and "the paper's grouped 1x1" in (run_dir / "train.log").read_text()
    assert fast.switched_on()  # the environment's choice again once the run is over
