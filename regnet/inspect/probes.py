"""Linear probes as the paper measures blocks (Fig. 1b): global average pooling plus a new linear layer,
fitted on the frozen network's features of the training split and scored on another split.

For every block (numbered 1..N through the network, :func:`~regnet.inspect.pooling.numbered_blocks`) the
probe reads the block's output; for every regulated block it also reads the regulator's H at that step.
Beside it, separately named, the *final-head read-out*: the model's own trained pool + FC applied to a
block with as many channels as the head reads (the last stage's blocks), which is not the paper's measure
(the head was never trained on blocks other than the last).

The solver is multinomial logistic regression by full-batch L-BFGS in torch (no extra dependency; the
pooled features are at most a few hundred columns, so a full-batch solve is quick; the probes are fitted side
by side, one torch thread each, as such small solves only lose time to a thread pool). The
features are standardised with the training split's mean and spread (an affine map a linear layer absorbs),
the weights start at zero (so the fit is deterministic), and the L2 penalty ``l2 / 2 * |W|^2`` on the
weights is chosen from :data:`L2_GRID` by top-1 on a held-out tenth of the training split (stratified and
seeded), then the probe is refitted on the whole training split with it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from regnet.data.splits import stratified_split
from regnet.models.parallel import map_batches

from .pooling import NumberedBlock, numbered_blocks

L2_GRID = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)
# The paper's Fig. 1b (Xu et al.; top-1 %, CIFAR-10, depth 20): blocks 7, 8 and 9.
PAPER_FIG_1B = {"resnet20": {7: 55.6, 8: 67.9, 9: 91.6}, "regnet20": {7: 60.2, 8: 71.7, 9: 92.7}}
HELD_OUT = 0.1  # the part of the training split that chooses the penalty
MAX_ITERATIONS = 200


def probe_taps(model: nn.Module) -> dict[str, nn.Module]:
    """The modules the probes read: ``block-N`` (block N's output) and ``hidden-N`` (H of regulated block N)."""
    taps: dict[str, nn.Module] = {}
    for block in numbered_blocks(model):
        taps[f"block-{block.number}"] = block.output
        if block.regulated:
            taps[f"hidden-{block.number}"] = block.module.taps.hidden
    return taps


@dataclass
class Probe:
    """A fitted probe: standardisation and a linear layer over pooled features."""

    mean: torch.Tensor
    scale: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    l2: float

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        return (((features.float() - self.mean) / self.scale) @ self.weight.T + self.bias).argmax(1)

    def top1(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        return float((self.predict(features) == labels).double().mean())


def _solve(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights and bias minimising the mean cross-entropy plus ``l2 / 2 * |W|^2`` (full-batch L-BFGS)."""
    weight = torch.zeros(num_classes, x.shape[1], requires_grad=True)
    bias = torch.zeros(num_classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=MAX_ITERATIONS, tolerance_grad=1e-6,
                                  history_size=20, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = nn.functional.cross_entropy(x @ weight.T + bias, y) + 0.5 * l2 * weight.pow(2).sum()
        value.backward()
        return value

    with torch.enable_grad():
        optimizer.step(loss)
    return weight.detach(), bias.detach()


def fit_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int, l2: float) -> Probe:
    """A probe fitted on (N, C) pooled features with a given L2 penalty."""
    x = features.double()
    mean, scale = x.mean(0).float(), x.std(0).clamp_min(1e-6).float()
    weight, bias = _solve((features.float() - mean) / scale, labels.long(), num_classes, l2)
    return Probe(mean, scale, weight, bias, l2)


def choose_and_fit(features: torch.Tensor, labels: torch.Tensor, num_classes: int, seed: int = 0,
                   grid: tuple[float, ...] = L2_GRID) -> tuple[Probe, dict[float, float]]:
    """The probe refitted on all of ``features`` with the penalty that scored best on a held-out tenth.

    Returns the probe and each penalty's held-out top-1 (ties go to the stronger penalty).
    """
    fit_idx, held_idx = stratified_split(labels.tolist(), HELD_OUT, seed)
    fit_x, fit_y, held_x, held_y = features[fit_idx], labels[fit_idx], features[held_idx], labels[held_idx]
    scores = {l2: fit_probe(fit_x, fit_y, num_classes, l2).top1(held_x, held_y) for l2 in grid}
    best = max(sorted(grid, reverse=True), key=lambda l2: scores[l2])
    return fit_probe(features, labels, num_classes, best), scores


def final_head_top1(model: nn.Module, pooled: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Top-1 of the model's own trained head on pooled features; None where their width is not the head's.

    The head is a global average pool and a linear layer, so on a pooled (N, C) map it is the linear layer.
    """
    try:
        with torch.inference_mode():
            logits = model.head(pooled.float()[:, :, None, None])
    except RuntimeError:  # the head reads another number of channels
        return None
    return float((logits.argmax(1) == labels).double().mean())


def probe_table(model: nn.Module, train: dict, scored: dict, num_classes: int, seed: int = 0) -> list[dict]:
    """One row per probed feature (each block's output, then H where regulated), in block order.

    ``train`` and ``scored`` are :func:`~regnet.inspect.pooling.pooled_pass` results over
    :func:`probe_taps` on the training split and on the split to score.
    """
    jobs = [(block, what) for block in numbered_blocks(model) for what in ("block", "hidden")
            if f"{what}-{block.number}" in train["features"]]

    def fit(job) -> dict:
        block, what = job
        key = f"{what}-{block.number}"
        return _row(model, block, what, train["features"][key], train["labels"], scored["features"][key],
                    scored["labels"], num_classes, seed)

    return list(map_batches(fit, jobs, "cpu"))  # side by side, one torch thread each: small solves scale badly


def _row(model: nn.Module, block: NumberedBlock, what: str, train_x, train_y, test_x, test_y,
         num_classes: int, seed: int) -> dict:
    probe, held_out = choose_and_fit(train_x, train_y, num_classes, seed)
    return {"block": block.number, "stage": block.stage, "step": block.step,
            "features": "output" if what == "block" else "H", "channels": int(train_x.shape[1]),
            "probe_top1": probe.top1(test_x, test_y), "probe_train_top1": probe.top1(train_x, train_y),
            "l2": probe.l2, "held_out_top1": {str(k): v for k, v in held_out.items()},
            "final_head_top1": final_head_top1(model, test_x, test_y) if what == "block" else None}
