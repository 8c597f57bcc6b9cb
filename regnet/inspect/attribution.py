"""Which pixels drove a class: captum's attribution methods behind one function.

Layer methods (Grad-CAM) can target any block's output or, through the
per-step taps, the regulator's hidden state at one step, although the cell
module itself is reused by every step of its stage.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from captum.attr import (
    IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel, Occlusion, Saliency,
)
from torch import nn

from regnet.models import regulated_blocks

PIXEL_METHODS = ("integrated_gradients", "saliency", "smoothgrad", "occlusion")
LAYER_METHODS = ("gradcam",)
METHODS = PIXEL_METHODS + LAYER_METHODS
METHOD_LABELS = {
    "integrated_gradients": "Integrated Gradients", "saliency": "Saliency", "smoothgrad": "SmoothGrad",
    "occlusion": "Occlusion", "gradcam": "Grad-CAM",
}


@dataclass
class Attribution:
    """An (H, W) map at the input's resolution; positive values speak for ``target``."""

    map: torch.Tensor
    method: str
    target: int
    layer: str | None = None

    @property
    def is_zero(self) -> bool:
        """True when the method found no evidence at all (shown as such, not as an error)."""
        return bool(self.map.abs().max() == 0)

    def importance(self) -> torch.Tensor:
        """Non-negative importance: magnitude for gradient methods, positive evidence for the others."""
        if self.method in ("integrated_gradients", "saliency", "smoothgrad"):
            return self.map.abs()
        return self.map.clamp(min=0)


def attribution_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every block output, and for a RegNet every step's hidden state, by a readable label."""
    layers: dict[str, nn.Module] = {}
    regulated = set(map(id, regulated_blocks(model)))
    for s, stage in enumerate(getattr(model, "stages", [])):
        for t, block in enumerate(stage.blocks):
            layers[f"stage {s + 1} block {t + 1} output"] = block.taps.output if id(block) in regulated else block
    for s, stage in enumerate(getattr(model, "stages", [])):
        for t, block in enumerate(stage.blocks):
            if id(block) in regulated:
                layers[f"stage {s + 1} step {t + 1} regulator H"] = block.taps.hidden
    return layers


def attribute(model: nn.Module, x: torch.Tensor, method: str, target: int | None = None, *,
              layer: str | None = None, steps: int = 32, samples: int = 16, noise: float = 0.15,
              window: int = 4) -> Attribution:
    """Attribute the class ``target`` (default: the prediction) of one image ``x`` (1, C, H, W)."""
    if method not in METHODS:
        raise ValueError(f"Unknown attribution method {method!r}; choose one of {', '.join(METHODS)}.")
    model.eval()
    if target is None:
        with torch.no_grad():
            target = int(model(x).argmax(1))
    x = x.detach().clone()
    if method == "integrated_gradients":
        raw = IntegratedGradients(model).attribute(x, baselines=torch.zeros_like(x), target=target,
                                                   n_steps=steps, internal_batch_size=steps)
    elif method == "saliency":
        raw = Saliency(model).attribute(x, target=target, abs=True)
    elif method == "smoothgrad":
        raw = NoiseTunnel(Saliency(model)).attribute(x, nt_type="smoothgrad", nt_samples=samples,
                                                     nt_samples_batch_size=samples, stdevs=noise, target=target)
    elif method == "occlusion":
        c = x.shape[1]
        raw = Occlusion(model).attribute(x, sliding_window_shapes=(c, window, window),
                                         strides=(c, max(window // 2, 1), max(window // 2, 1)),
                                         baselines=0.0, target=target, perturbations_per_eval=64)
    else:
        layers = attribution_layers(model)
        if layer not in layers:
            raise ValueError(f"Grad-CAM needs a layer; choose one of: {', '.join(layers) or 'none (no stages)'}.")
        cam = LayerGradCam(model, layers[layer]).attribute(x, target=target, relu_attributions=True)
        raw = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    return Attribution(raw.detach()[0].sum(0), method, target, layer)
