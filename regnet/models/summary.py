"""Parameter and multiply-accumulate counts, measured by torch's own FLOP counter."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .registry import build_model, list_models, model_info


@dataclass(frozen=True)
class ModelSummary:
    params: int
    macs: int  # per image
    input_size: tuple[int, int, int]


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def summary(model: nn.Module, input_size: tuple[int, int, int]) -> ModelSummary:
    """Parameters and multiply-accumulates of one forward pass on one image of ``input_size`` (C, H, W).

    ``FlopCounterMode`` counts convolutions and matrix products (2 FLOPs per
    MAC); element-wise work (BN, activations, gates' products) is not counted,
    as in the papers' MAC figures. The pass runs on a copy of the model on the
    ``meta`` device: it computes nothing, and it takes the architecture's
    literal path, not a device's fast path that reorders the same arithmetic
    (the efficient gates' CPU fold, :mod:`regnet.models.fast`).
    """
    device = "cpu" if getattr(model, "needs_real_tensors", False) else "meta"  # a detector's NMS needs real data
    probe = copy.deepcopy(model).to(device).eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        probe(torch.zeros(1, *input_size, device=device))
    return ModelSummary(count_params(model), counter.get_total_flops() // 2, tuple(input_size))


def summarize_registry(options_for: dict[str, list[dict]] | None = None) -> list[dict]:
    """One row per model (and per option set in ``options_for``): name, options, params, MACs, input size."""
    rows = []
    for name in list_models():
        info = model_info(name)
        for options in (options_for or {}).get(name, [{}]):
            s = summary(build_model(name, **options), info.input_size)
            label = ",".join(f"{k}={v}" for k, v in options.items())
            rows.append({"model": name, "options": label, "family": info.family,
                         "input": "x".join(map(str, s.input_size)), "params": s.params, "macs": s.macs})
    return rows


def format_table(rows: list[dict]) -> str:
    """A plain-text table: params in millions, MACs in millions or billions; the name and options columns
    as wide as their longest entry (``rcnn_classifier`` no longer pushes its row out of line)."""

    def macs(n: int) -> str:
        return f"{n / 1e9:.2f} G" if n >= 1e9 else f"{n / 1e6:.1f} M"

    name_w = max([len("model"), *(len(r["model"]) for r in rows)])
    opt_w = max([len("options"), *(len(r["options"]) for r in rows)])
    lines = [f"{'model':<{name_w}} {'options':<{opt_w}} {'input':<10} {'params':>12} {'MACs':>10}"]
    for r in rows:
        lines.append(f"{r['model']:<{name_w}} {r['options']:<{opt_w}} {r['input']:<10} {r['params']:>12,} "
                     f"{macs(r['macs']):>10}")
    return "\n".join(lines)


def format_options() -> str:
    """Each model's options as ``name=default (choices)``, models with the same options on one line."""
    groups: dict[str, list[str]] = {}
    for name in list_models():
        info = model_info(name)
        parts = []
        for option, default in info.options.items():
            shown = f"[{','.join(map(str, default))}]" if isinstance(default, (tuple, list)) else str(default)
            choices = info.choices.get(option)
            parts.append(f"{option}={shown}" + (f" ({'|'.join(map(str, choices))})" if choices else ""))
        groups.setdefault("  ".join(parts) or "no options", []).append(name)
    lines = ["options (default, then choices; set with --set model.options.NAME=VALUE):"]
    for text, names in groups.items():
        lines.append(f"  {', '.join(names)}:\n    {text}")
    return "\n".join(lines)
