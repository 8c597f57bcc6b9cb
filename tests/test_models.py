"""The paper's networks: shapes, parameter counts, the regulator's state flow, recording and taps."""
import pytest
import torch
from torch import nn

import regnet
from regnet.models import (
    ConvGRUCell, ConvLSTMCell, ConvRNNCell, build_model, count_params, list_models, model_info,
    natural_input_size, summary,
)
from regnet.models.cells import GateConv
from test_cli import run_cli


def _finite_nonzero_grads(model: nn.Module, x: torch.Tensor, num_classes: int) -> None:
    model.train()
    labels = torch.arange(x.shape[0]) % num_classes
    if hasattr(model, "training_loss"):  # a detector trains on its own losses, as the loop trains it
        _, loss = model.training_loss(x, labels)
    else:
        loss = nn.functional.cross_entropy(model(x), labels)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


@pytest.mark.parametrize("name", list_models())
def test_every_model_forward_and_backward(name):
    torch.manual_seed(0)
    info = model_info(name)
    model = build_model(name, num_classes=7)
    model.eval()
    # Small inputs (timm's way: the same parameters and code at a fraction of the cost): the deepest
    # stage still sees a 2x2 map (1x1 for the ImageNet family); the 224-pixel forward is a slow test below.
    size = {"imagenet": (3, 32, 32), "cifar": (3, 8, 8)}.get(info.family, info.input_size)
    with torch.no_grad():
        assert model(torch.randn(2, *size)).shape == (2, 7)
    _finite_nonzero_grads(model, torch.randn(2, *size), 7)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("gates", ["efficient", "full"])
def test_regnet20_every_cell_and_gate_form_trains(cell, gates):
    torch.manual_seed(0)
    model = build_model("regnet20", cell=cell, gates=gates, se=True)
    # Batch 8: SE's 4-unit squeeze can be all-ReLU-dead for 2 random images at init.
    _finite_nonzero_grads(model, torch.randn(8, 3, 32, 32), 10)


def test_parameter_counts_match_the_paper_and_the_summary():
    resnet = build_model("resnet20")
    # He et al.'s CIFAR ResNet-20 with the parameter-free option-A shortcut: 0.27M.
    assert count_params(resnet) == 269_722
    s = summary(resnet, (3, 32, 32))
    assert s.params == 269_722
    assert 40e6 < s.macs < 42e6  # about 41M multiply-accumulates
    efficient = build_model("regnet20", cell="lstm", gates="efficient")
    full = build_model("regnet20", cell="lstm", gates="full")
    assert count_params(resnet) < count_params(efficient) < 400_000
    assert count_params(full) > count_params(efficient)
    for model in (efficient, full):
        reported = summary(model, (3, 32, 32)).params
        assert abs(reported - count_params(model)) <= 0.05 * count_params(model)
    assert summary(efficient, (3, 32, 32)).macs > s.macs


def test_summary_counts_the_papers_gate_arithmetic_not_the_cpu_fold_and_leaves_the_model_alone():
    model = build_model("regnet20", cell="lstm", gates="efficient").train()
    # The paper's order: a grouped 1x1 (2 MACs per gate value, [x, h], at every step, the zero state's
    # first step too) then a depthwise 3x3 (9). The speed layer's fold does 9 + 9 (9 at a first step).
    assert summary(model, (3, 32, 32)).macs == 48_939_648 + 4 * (16 * 32 * 32 + 32 * 16 * 16 + 64 * 8 * 8)
    assert model.training and next(model.parameters()).device.type == "cpu"


def test_cifar_stem_has_no_pooling():
    model = build_model("resnet20").eval()
    sizes = []
    hooks = [stage.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[-2:]))) for stage in model.stages]
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert sizes == [(32, 32), (16, 16), (8, 8)]
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["regnet18", "regnet50"])
def test_imagenet_family_runs_at_224(name):
    model = build_model(name, num_classes=200).eval()
    sizes = []
    hooks = [stage.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[-2:]))) for stage in model.stages]
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 200)
    assert sizes == [(56, 56), (28, 28), (14, 14), (7, 7)]


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_state_flows_from_block_to_block_and_resets_per_stage(cell):
    torch.manual_seed(0)
    model = build_model("regnet20", cell=cell).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), regnet.record(model) as trace:
        model(x)
    assert [(r.stage, r.step) for r in trace] == [(s, t) for s in range(3) for t in range(3)]
    with torch.no_grad():
        for r in trace:
            cell_module = model.stages[r.stage].cell
            if r.step == 0:
                zeros = cell_module.zero_state(r.input)
                assert all(z.abs().sum() == 0 for z in zeros)
                expected, _, _ = cell_module(r.input, zeros)
            else:
                prev = trace[trace.index(r) - 1]
                state = (prev.hidden, prev.cell) if cell == "lstm" else (prev.hidden,)
                expected, _, _ = cell_module(r.input, state)
                # The regulator remembers: forgetting the previous state would give something else.
                forgotten, _, _ = cell_module(r.input, None)
                assert not torch.allclose(forgotten, r.hidden, atol=1e-4)
            torch.testing.assert_close(expected, r.hidden)


def test_lstm_record_fields_shapes_and_ranges():
    model = build_model("regnet20", cell="lstm").eval()
    with torch.no_grad(), regnet.record(model) as trace:
        model(torch.randn(2, 3, 32, 32))
    widths, sides = (16, 32, 64), (32, 16, 8)
    for r in trace:
        shape = (2, widths[r.stage], sides[r.stage], sides[r.stage])
        for t in (r.input, r.hidden, r.cell, r.output, *r.gates.values()):
            assert t.shape == shape
        assert set(r.gates) == {"i", "f", "o", "g"}
        for name in "ifo":
            assert 0 <= r.gates[name].min() and r.gates[name].max() <= 1
        assert -1 <= r.gates["g"].min() and r.gates["g"].max() <= 1
        torch.testing.assert_close(r.hidden, r.gates["o"] * torch.tanh(r.cell))
        assert not r.hidden.requires_grad


def test_gru_and_rnn_record_their_gates():
    for cell, names in (("gru", {"z", "r", "candidate"}), ("rnn", set())):
        model = build_model("regnet20", cell=cell).eval()
        with torch.no_grad(), regnet.record(model) as trace:
            model(torch.randn(1, 3, 32, 32))
        assert len(trace) == 9 and set(trace[0].gates) == names and trace[0].cell is None


def test_recording_does_not_change_the_logits_and_is_off_afterwards():
    torch.manual_seed(0)
    model = build_model("regnet20").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = model(x)
        with regnet.record(model) as trace:
            recorded = model(x)
        model(x)
    assert torch.equal(plain, recorded)
    assert len(trace) == 9  # the pass after the with-block added nothing
    with regnet.record(build_model("resnet20")) as empty:
        build_model("resnet20").eval()(x)
    assert empty == []


@pytest.mark.parametrize("cls,n_state", [(ConvLSTMCell, 2), (ConvGRUCell, 1), (ConvRNNCell, 1)])
def test_a_mismatched_state_raises_a_clear_error(cls, n_state):
    cell = cls(8, 8)
    x = torch.randn(2, 8, 6, 6)
    bad = tuple(torch.zeros(2, 8, 3, 3) for _ in range(n_state))
    with pytest.raises(ValueError, match=r"\(2, 8, 6, 6\).*received \[\(2, 8, 3, 3\)"):
        cell(x, bad)
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 8, H, W\), received \(2, 4, 6, 6\)"):
        cell(torch.randn(2, 4, 6, 6))


def test_efficient_gates_pair_each_input_channel_with_its_hidden_channel():
    torch.manual_seed(0)
    conv = GateConv(4, 4, num_gates=4, form="efficient")
    x, h = torch.randn(1, 4, 5, 5), torch.randn(1, 4, 5, 5)
    base = conv(x, h)
    x2 = x.clone()
    x2[:, 2] += 1.0
    moved = conv(x2, h)
    for before, after in zip(base, moved):
        changed = (before - after).abs().flatten(2).sum(-1)[0] > 0
        assert changed.tolist() == [False, False, True, False]
    with pytest.raises(ValueError, match="in_channels == hidden_channels"):
        GateConv(4, 8, 4, "efficient")


def test_per_step_taps_let_captum_target_one_step():
    from captum.attr import LayerGradCam

    torch.manual_seed(0)
    model = build_model("regnet20").eval()
    x = torch.randn(1, 3, 32, 32)
    maps = [LayerGradCam(model, model.stages[2].blocks[t].taps.hidden).attribute(x, target=0) for t in range(3)]
    assert all(m.shape == (1, 1, 8, 8) for m in maps)
    assert not torch.allclose(maps[0], maps[2])
    gate_map = LayerGradCam(model, model.stages[1].blocks[0].taps.gates["f"]).attribute(x, target=0)
    assert gate_map.shape == (1, 1, 16, 16)


def test_study_networks_and_their_options():
    assert build_model("mnist_cnn")(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    small = build_model("tiny_resnet", num_classes=200)
    assert small(torch.randn(2, 3, 64, 64)).shape == (2, 200)
    deeper = build_model("tiny_resnet", blocks=(3, 3, 3))
    assert count_params(deeper) > count_params(small)
    dropouts = [m.p for m in build_model("tiny_resnet", dropout=0.3).modules() if isinstance(m, nn.Dropout2d)]
    assert dropouts and set(dropouts) == {0.3}
    gelu = build_model("tiny_resnet", activation="gelu")
    assert any(isinstance(m, nn.GELU) for m in gelu.modules())
    assert not any(isinstance(m, nn.ReLU) for m in gelu.modules())
    no_bn = build_model("tiny_resnet", batch_norm=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in no_bn.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in small.modules())


def test_registry_errors_are_one_clear_sentence():
    with pytest.raises(ValueError, match="Unknown model 'regnet21'.*Did you mean"):
        build_model("regnet21")
    with pytest.raises(ValueError, match="Unknown option\\(s\\) depth for model 'regnet20'; it accepts: cell"):
        build_model("regnet20", depth=3)
    with pytest.raises(ValueError, match="cell='transformer' is not valid"):
        build_model("regnet20", cell="transformer")
    assert natural_input_size("regnet20", in_channels=1) == (1, 32, 32)
    assert build_model("regnet20", in_channels=1)(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_models_command_prints_the_table(capsys):
    code, out, _ = run_cli(["models"], capsys)  # in this process: `python -m regnet` has its own tests
    assert code == 0
    table, options = out.split("\n\n")
    lines = {line.split()[0]: line for line in table.splitlines()[1:]}
    assert set(lines) == set(list_models())
    assert "269,722" in lines["resnet20"]
    assert "308,698" in lines["regnet20"]
    assert len({len(line) for line in table.splitlines()}) == 1  # every row in line, rcnn_classifier too
    # The seeds' variants are listed with the paper's defaults first.
    assert "memory=carry (carry|reset)" in options and "sharing=stage (stage|block)" in options
    assert "regulated_stages=[1,2,3]" in options and "regulated_stages=[1,2,3,4]" in options
    assert "se=False (False|True)  shortcut=A (A|B)" in options


def test_regulated_blocks_are_their_plain_blocks_plus_a_regulator():
    from regnet.models import BasicBlock, Bottleneck, RegulatedBasicBlock, RegulatedBottleneck
    from regnet.models.cells import make_cell

    for plain, regulated, channels in ((BasicBlock, RegulatedBasicBlock, 16), (Bottleneck, RegulatedBottleneck, 8)):
        assert issubclass(regulated, plain)
        cell = make_cell("lstm", channels, channels, "efficient")
        block = regulated(channels * plain.expansion, channels, 1, False, taps=cell.make_taps())
        base = plain(channels * plain.expansion, channels, 1, False)
        own, inherited = block.state_dict(), base.state_dict()
        assert list(own)[:len(inherited)] == list(inherited)  # the plain layers, same names, same order
        assert {k.split(".")[0] for k in own if k not in inherited} == {"regulator_norm", "fuse", "bn_fuse"}
        assert all(own[k].shape == v.shape for k, v in inherited.items())
