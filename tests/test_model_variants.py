"""The seeds' regulator variants as model options: parameter counts, where the state flows, and that each
variant computes something else than the paper's model with the same weights."""
from __future__ import annotations

import pytest
import torch

import regnet
from regnet.models import build_model, count_params


WIDTHS = (16, 32, 64)
PAPER = 308_698  # regnet20 with the paper's defaults


def lstm_params(c: int) -> int:
    return sum(p.numel() for p in regnet.models.make_cell("lstm", c, c, "efficient").parameters())


def test_parameter_counts_follow_each_option():
    # One cell per block: two more cells in each stage of three blocks.
    assert count_params(build_model("regnet20", sharing="block")) == PAPER + sum(2 * lstm_params(c) for c in WIDTHS)
    assert count_params(build_model("regnet20", memory="reset")) == PAPER  # the same layers, another state flow
    # No BN on H: a BN's weight and bias fewer in each of the nine regulated blocks.
    assert count_params(build_model("regnet20", h_norm=False)) == PAPER - sum(3 * 2 * c for c in WIDTHS)
    # H replaces X2: no 1x1 fusion conv (2c -> c) and no BN after it.
    assert count_params(build_model("regnet20", fusion="replace")) == PAPER - sum(3 * (2 * c * c + 2 * c)
                                                                                   for c in WIDTHS)
    plain = count_params(build_model("resnet20"))
    regulator = [lstm_params(c) + 3 * (2 * c + 2 * c * c + 2 * c) for c in WIDTHS]  # cell, norm, fusion per stage
    assert plain + sum(regulator) == PAPER
    assert count_params(build_model("regnet20", regulated_stages=[1])) == plain + regulator[0]
    # Option B: a 1x1 projection + BN at each of the two stage transitions (16->32, 32->64).
    projections = 16 * 32 + 2 * 32 + 32 * 64 + 2 * 64
    assert count_params(build_model("resnet20", shortcut="B")) == plain + projections
    assert count_params(build_model("regnet20", shortcut="B")) == PAPER + projections


def _trace(model, x):
    with torch.no_grad(), regnet.record(model) as trace:
        logits = model(x)
    return logits, trace


def test_memory_reset_starts_every_block_from_zero_and_carry_passes_the_state_on():
    torch.manual_seed(0)
    carry = build_model("regnet20").eval()
    reset = build_model("regnet20", memory="reset").eval()
    reset.load_state_dict(carry.state_dict())  # the same weights: only the state flow differs
    x = torch.randn(2, 3, 32, 32)
    carry_logits, carry_trace = _trace(carry, x)
    reset_logits, reset_trace = _trace(reset, x)
    for r in reset_trace:
        assert r.previous_hidden.abs().sum() == 0 and r.previous_cell.abs().sum() == 0
        expected, _, _ = reset.stages[r.stage].cell_for(r.step)(r.input, None)
        torch.testing.assert_close(expected, r.hidden)
    for before, r in zip(carry_trace, carry_trace[1:]):
        if r.step > 0:
            torch.testing.assert_close(r.previous_hidden, before.hidden)
            torch.testing.assert_close(r.previous_cell, before.cell)
            assert r.previous_hidden.abs().sum() > 0
    assert not torch.allclose(carry_logits, reset_logits, atol=1e-4)


def test_sharing_block_gives_each_block_its_own_cell():
    torch.manual_seed(0)
    shared = build_model("regnet20").eval()
    own = build_model("regnet20", sharing="block").eval()
    stage = own.stages[1]
    assert len({id(stage.cell_for(t)) for t in range(3)}) == 3 and not hasattr(stage, "cell")
    # With every block's cell a copy of the stage's one, the two models compute the same function ...
    weights = {k: v for k, v in shared.state_dict().items() if ".cell." not in k}
    for s, shared_stage in enumerate(shared.stages):
        for t in range(3):
            for k, v in shared_stage.cell.state_dict().items():
                weights[f"stages.{s}.cells.{t}.{k}"] = v
    own.load_state_dict(weights)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(own(x), shared(x))
    # ... and a change to one block's cell changes only what that cell computes.
    with torch.no_grad():
        next(own.stages[2].cells[1].parameters()).add_(0.5)
    logits, trace = _trace(own, x)
    assert not torch.allclose(logits, shared(x), atol=1e-4)
    for r in trace:
        cell = own.stages[r.stage].cell_for(r.step)
        state = None if r.step == 0 else (r.previous_hidden, r.previous_cell)
        torch.testing.assert_close(cell(r.input, state)[0], r.hidden)


def test_regulated_stages_leave_the_other_stages_plain():
    model = build_model("regnet20", regulated_stages=[2, 3]).eval()
    _, trace = _trace(model, torch.randn(1, 3, 32, 32))
    assert sorted({r.stage for r in trace}) == [1, 2] and len(trace) == 6
    assert not model.stages[0].regulated and type(model.stages[0].blocks[0]).__name__ == "BasicBlock"


@pytest.mark.parametrize("options", [{"h_norm": False}, {"fusion": "replace"}])
def test_h_norm_and_fusion_change_the_logits(options):
    torch.manual_seed(0)
    paper = build_model("regnet20").eval()
    variant = build_model("regnet20", **options).eval()
    variant.load_state_dict(paper.state_dict(), strict=False)  # every layer the variant has, the paper's weights
    x = torch.randn(2, 3, 32, 32)
    logits, trace = _trace(variant, x)
    assert logits.shape == (2, 10) and len(trace) == 9
    assert not torch.allclose(logits, paper(x), atol=1e-4)
    block = variant.stages[0].blocks[0]
    assert (type(block.regulator_norm).__name__ == "Identity") == (options.get("h_norm") is False)
    assert hasattr(block, "fuse") == (options.get("fusion", "concat") == "concat")


def test_imagenet_regnet_takes_the_variants_on_bottlenecks():
    model = build_model("regnet50", sharing="block", memory="reset", fusion="replace", regulated_stages=[4],
                        num_classes=5).eval()
    logits, trace = _trace(model, torch.randn(1, 3, 64, 64))
    assert logits.shape == (1, 5) and {r.stage for r in trace} == {3} and len(trace) == 3
    assert all(r.previous_hidden.abs().sum() == 0 for r in trace)


@pytest.mark.parametrize("options, words", [
    ({"regulated_stages": [0]}, ["names stage(s) [0]", "1, 2, 3"]),
    ({"regulated_stages": []}, ["non-empty list"]),
    ({"regulated_stages": 2}, ["non-empty list"]),
    ({"memory": "forget"}, ["memory='forget' is not valid", "carry"]),
    ({"fusion": "add"}, ["fusion='add' is not valid"]),
])
def test_bad_variant_options_are_one_sentence(options, words):
    with pytest.raises(ValueError) as error:
        build_model("regnet20", **options)
    for word in words:
        assert word in str(error.value)
