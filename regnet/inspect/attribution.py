"""Which pixels drove a class: captum's attribution methods behind one function, with the settings
Captum Insights lets a user change (steps, baseline, noise, window, stride).

Layer methods (Grad-CAM) can target any block's output or, through the
per-step taps, the regulator's hidden state at one step, although the cell
module itself is reused by every step of its stage. Every method works on a
batch, so scoring many images (``quality``) costs a few large forward passes
instead of many small ones.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch
from captum.attr import (
    IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel, Occlusion, Saliency,
)
from torch import nn
from torchvision.transforms.v2 import functional as TF

from regnet.models import regulated_blocks

PIXEL_METHODS = ("integrated_gradients", "saliency", "smoothgrad", "occlusion")
LAYER_METHODS = ("gradcam",)
METHODS = PIXEL_METHODS + LAYER_METHODS
METHOD_LABELS = {
    "integrated_gradients": "Integrated Gradients", "saliency": "Saliency", "smoothgrad": "SmoothGrad",
    "occlusion": "Occlusion", "gradcam": "Grad-CAM",
}
GRADIENT_METHODS = ("integrated_gradients", "saliency", "smoothgrad")
BASELINES = ("black", "blurred", "noise")
BASELINE_LABELS = {"black": "black image", "blurred": "blurred image", "noise": "uniform noise"}
Progress = Callable[[int, int], None]  # (done, total) of a method's forward batches


@dataclass(frozen=True)
class MethodSettings:
    """What a user may set per method; hashable, so a cache can key on it."""

    steps: int = 32  # Integrated Gradients: points on the path from the baseline
    samples: int = 16  # SmoothGrad: noisy copies averaged
    noise: float = 0.15  # SmoothGrad: noise std as a share of the image's value range (Smilkov et al.: 10-20%)
    window: int = 4  # Occlusion: side of the square patch
    stride: int = 2  # Occlusion: step between patches
    layer: str | None = None  # Grad-CAM: a label from ``attribution_layers``

    def relevant(self, method: str) -> "MethodSettings":
        """Only the fields ``method`` reads, the rest at their defaults: a cache key that a change
        of another method's setting leaves alone."""
        keep = {"integrated_gradients": ("steps",), "smoothgrad": ("samples", "noise"),
                "occlusion": ("window", "stride"), "gradcam": ("layer",)}.get(method, ())
        return replace(MethodSettings(), **{name: getattr(self, name) for name in keep})


@dataclass
class Attribution:
    """A method's raw attribution (C, H, W) at the input's resolution; positive values speak for ``target``."""

    raw: torch.Tensor
    method: str
    target: int
    layer: str | None = None

    @property
    def map(self) -> torch.Tensor:
        """The signed (H, W) map: evidence for the class is positive, against it negative."""
        return self.raw.sum(0)

    @property
    def is_zero(self) -> bool:
        """True when the method found no evidence at all (shown as such, not as an error)."""
        return bool(self.raw.abs().max() == 0)

    def importance(self) -> torch.Tensor:
        """Non-negative importance: magnitude for gradient methods, positive evidence for the others."""
        if self.method in GRADIENT_METHODS:
            return self.raw.abs().sum(0)
        return self.map.clamp(min=0)


def attribution_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every block output, and for a RegNet every step's hidden state, by a readable label.

    A model without stages may name its own (``attribution_layers()``: the detector's backbone output).
    """
    own = getattr(model, "attribution_layers", None)
    if own is not None:
        return dict(own())
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


def make_baseline(x: torch.Tensor, kind: str, mean, std, seed: int = 0) -> torch.Tensor:
    """The reference input of Integrated Gradients and Occlusion, in the model's normalised space.

    A black image is not zero after normalisation (zero is the data set's mean colour), so each
    baseline is built in pixel space and normalised like the data.
    """
    if kind not in BASELINES:
        raise ValueError(f"Unknown baseline {kind!r}; choose one of {', '.join(BASELINES)}.")
    channels = x.shape[1]
    mean_t = torch.tensor(list(mean)[:channels], dtype=x.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(list(std)[:channels], dtype=x.dtype).view(1, -1, 1, 1)
    if kind == "black":
        return ((torch.zeros_like(x) - mean_t) / std_t).expand_as(x).contiguous()
    if kind == "blurred":
        side = x.shape[-1]
        kernel = max(3, (side // 4) | 1)  # odd; a quarter of the image wipes out object-scale detail
        return TF.gaussian_blur(x, [kernel, kernel], [side / 8.0, side / 8.0])
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(x.shape, generator=generator, dtype=x.dtype) - mean_t) / std_t


def _counting(model: nn.Module, progress: Progress | None, total: int) -> Callable:
    """The model as a forward function that reports each batch it runs to ``progress``."""
    if progress is None:
        return model
    done = [0]

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        out = model(inputs)
        done[0] += 1
        progress(min(done[0], total), total)
        return out

    return forward


def _occlusion(model, x, targets, baseline, settings: MethodSettings, progress: Progress | None) -> torch.Tensor:
    """Captum's Occlusion with its perturbations batched, counting the forward batches for ``progress``."""
    c, h, w = x.shape[1:]
    window, stride = max(1, settings.window), max(1, settings.stride)
    per_eval = max(1, 256 // len(x))
    patches = ((h - window) // stride + 1) * ((w - window) // stride + 1)
    total = 1 + -(-patches // per_eval)  # captum runs the unperturbed input once first
    return Occlusion(_counting(model, progress, total)).attribute(
        x, sliding_window_shapes=(c, window, window), strides=(c, stride, stride), baselines=baseline,
        target=targets, perturbations_per_eval=per_eval)


def attribute_many(model: nn.Module, x: torch.Tensor, method: str, targets: torch.Tensor,
                   settings: MethodSettings = MethodSettings(), baseline: torch.Tensor | None = None,
                   progress: Progress | None = None) -> torch.Tensor:
    """Raw attributions (N, C, H, W) of the classes ``targets`` (N,) for a batch ``x`` (N, C, H, W).

    ``baseline`` (default: zeros, the data's mean colour) is the reference of Integrated Gradients
    and Occlusion. Gradient methods are signed here; ``Attribution.importance`` takes magnitudes.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown attribution method {method!r}; choose one of {', '.join(METHODS)}.")
    model.eval()
    x = x.detach().clone()
    baseline = torch.zeros_like(x) if baseline is None else baseline.expand_as(x)
    if method == "integrated_gradients":
        return IntegratedGradients(model).attribute(x, baselines=baseline, target=targets, n_steps=settings.steps,
                                                    internal_batch_size=max(settings.steps, 256)).detach()
    if method == "saliency":
        return Saliency(model).attribute(x, target=targets, abs=False).detach()
    if method == "smoothgrad":
        spread = (x.amax((1, 2, 3)) - x.amin((1, 2, 3))).mean().item() or 1.0
        return NoiseTunnel(Saliency(model)).attribute(
            x, nt_type="smoothgrad", nt_samples=settings.samples, nt_samples_batch_size=settings.samples,
            stdevs=settings.noise * spread, target=targets, abs=False).detach()
    if method == "occlusion":
        return _occlusion(model, x, targets, baseline, settings, progress).detach()
    layers = attribution_layers(model)
    if settings.layer not in layers:
        raise ValueError(f"Grad-CAM needs a layer; choose one of: {', '.join(layers) or 'none (no stages)'}.")
    cam = LayerGradCam(model, layers[settings.layer]).attribute(x, target=targets, relu_attributions=False)
    return LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear").detach()


def attribute(model: nn.Module, x: torch.Tensor, method: str, target: int | None = None,
              settings: MethodSettings = MethodSettings(), baseline: torch.Tensor | None = None,
              progress: Progress | None = None) -> Attribution:
    """Attribute the class ``target`` (default: the prediction) of one image ``x`` (1, C, H, W)."""
    if target is None:
        model.eval()
        with torch.no_grad():
            target = int(model(x).argmax(1))
    raw = attribute_many(model, x, method, torch.tensor([int(target)]), settings, baseline, progress)
    return Attribution(raw[0], method, int(target), settings.layer if method in LAYER_METHODS else None)
