"""The regulator step by step: its recorded states as heat maps, and its gates along depth.

Depth is the regulator's time axis, so a gate's statistics per step show how
the cell behaves from the first block of a stage to the last (paper Fig. 1a).
"""
from __future__ import annotations

import torch
from torch import nn

from regnet.models import RegulatorRecord, record, regulated_blocks

STATE_FIELDS = ("input", "hidden", "cell", "output")
MAP_MODES = ("mean", "channel", "top")


def has_regulator(model: nn.Module) -> bool:
    return bool(regulated_blocks(model))


@torch.no_grad()
def record_states(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[RegulatorRecord]]:
    """Logits and the regulator's trace for a batch, with the model in eval mode."""
    model.eval()
    with record(model) as trace:
        logits = model(x)
    return logits, trace


def channel_maps(tensor: torch.Tensor, mode: str = "mean", channel: int = 0, top: int = 4
                 ) -> list[tuple[str, torch.Tensor]]:
    """2-D maps of one image's (C, H, W) tensor: the channel mean, one channel, or the ``top`` most active.

    "Most active" ranks channels by mean absolute value, which is what a
    reader scanning for where the state carries signal wants first.
    """
    if tensor.dim() == 4:
        tensor = tensor[0]
    if mode == "mean":
        return [("mean over channels", tensor.mean(0))]
    if mode == "channel":
        if not 0 <= channel < tensor.shape[0]:
            raise ValueError(f"Channel {channel} does not exist; this map has channels 0..{tensor.shape[0] - 1}.")
        return [(f"channel {channel}", tensor[channel])]
    if mode == "top":
        order = tensor.abs().mean((1, 2)).argsort(descending=True)[:top]
        return [(f"channel {int(c)}", tensor[c]) for c in order]
    raise ValueError(f"Unknown map mode {mode!r}; choose one of {', '.join(MAP_MODES)}.")


def state_grid(trace: list[RegulatorRecord], field: str, mode: str = "mean", channel: int = 0, top: int = 4,
               image: int = 0) -> list[dict]:
    """One entry per (stage, step) with the maps of ``field`` (input, hidden, cell, output or a gate name)."""
    rows = []
    for r in trace:
        tensor = getattr(r, field) if field in STATE_FIELDS else r.gates.get(field)
        if tensor is None:
            continue
        rows.append({"stage": r.stage, "step": r.step, "maps": channel_maps(tensor[image], mode, channel, top)})
    return rows


def gate_profile(trace: list[RegulatorRecord], image: int | None = None) -> list[dict]:
    """Mean, spread and quantiles of every gate at every (stage, step): the gates along depth."""
    rows = []
    for r in trace:
        for name, gate in r.gates.items():
            values = (gate if image is None else gate[image : image + 1]).flatten().float()
            q10, q50, q90 = torch.quantile(values, torch.tensor([0.1, 0.5, 0.9])).tolist()
            rows.append({"stage": r.stage, "step": r.step, "gate": name, "mean": values.mean().item(),
                         "std": values.std().item(), "q10": q10, "median": q50, "q90": q90})
    return rows
