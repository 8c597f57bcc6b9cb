"""The model's answer for one image."""
from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def top_k(model: nn.Module, x: torch.Tensor, k: int = 5, class_names: list[str] | None = None) -> list[dict]:
    """The k most probable classes of one image (1, C, H, W), with their probabilities."""
    model.eval()
    probs = model(x).softmax(1)[0]
    values, indices = probs.topk(min(k, probs.numel()))
    names = class_names or [str(i) for i in range(probs.numel())]
    return [{"class": names[int(i)], "index": int(i), "probability": float(p)} for p, i in zip(values, indices)]
