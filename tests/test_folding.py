"""Batch norms folded into their convolutions for inference: same logits, fewer norms, the original untouched."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from regnet.models import build_model, folded_for_inference, regulated_blocks, regulator_ablated


def _trained_looking(model: nn.Module) -> nn.Module:
    """Random running statistics and affine parameters, so a fold that ignored any of them would show."""
    gen = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            for t, low, high in ((module.running_mean, -0.5, 0.5), (module.running_var, 0.5, 2.0),
                                 (module.weight.data, 0.5, 1.5), (module.bias.data, -0.2, 0.2)):
                t.copy_(torch.rand(t.shape, generator=gen) * (high - low) + low)
    return model.eval()


def _norms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


CASES = [
    ("resnet20", {}, 32),
    ("regnet20", {"cell": "lstm"}, 32),
    ("regnet20", {"cell": "gru", "fusion": "replace"}, 32),
    ("regnet20", {"cell": "rnn", "shortcut": "B"}, 32),
    ("regnet50", {}, 64),  # bottlenecks, projection shortcuts and the ImageNet stem
]


@pytest.mark.parametrize("name,options,side", CASES)
def test_folded_model_gives_the_same_logits_with_only_the_regulators_norms_left(name, options, side):
    model = _trained_looking(build_model(name, num_classes=10, **options))
    before = _norms(model)
    folded = folded_for_inference(model)
    x = torch.randn(4, 3, side, side, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected, got = model(x), folded(x)
    assert got.shape == (4, 10)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    regulator_norms = sum(isinstance(b.regulator_norm, nn.Sequential) for b in regulated_blocks(model))
    assert _norms(folded) == regulator_norms  # every norm after a convolution is gone
    assert _norms(model) == before  # the original keeps its own


def test_folded_copy_keeps_the_hook_points_of_the_analyses():
    model = _trained_looking(build_model("regnet20", num_classes=10))
    folded = folded_for_inference(model)
    assert [n for n, _ in folded.named_modules() if n.endswith("taps.output")] == \
        [n for n, _ in model.named_modules() if n.endswith("taps.output")]
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        with regulator_ablated(model):
            expected = model(x)
        with regulator_ablated(folded):
            got = folded(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_training_model_is_left_in_training_mode_and_unchanged():
    model = build_model("resnet20", num_classes=10).train()
    weight = model.stem[0].weight.detach().clone()
    folded = folded_for_inference(model)
    assert model.training and not folded.training
    assert isinstance(model.stem[1], nn.BatchNorm2d) and isinstance(folded.stem[1], nn.Identity)
    assert torch.equal(model.stem[0].weight, weight)
    assert not torch.equal(folded.stem[0].weight, weight)
