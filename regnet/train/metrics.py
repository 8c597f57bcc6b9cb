"""Classification metrics (torchmetrics) and the evaluation pass shared by the loop, ``eval`` and the tools.

torchmetrics sums its states over processes when ``compute()`` is called in a
distributed run, so every rank gets the metrics of the whole split; the loss
sum is all-reduced alongside.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from regnet.models.parallel import map_batches

from .distributed import all_reduce_sum, autocast


class ClassificationMeter:
    """Running loss, top-1, top-5, macro-F1 and confusion matrix over any number of batches."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu"):
        kwargs = dict(num_classes=num_classes, validate_args=False)
        self.top1 = MulticlassAccuracy(top_k=1, average="micro", **kwargs).to(device)
        self.top5 = MulticlassAccuracy(top_k=min(5, num_classes), average="micro", **kwargs).to(device)
        self.macro_f1 = MulticlassF1Score(average="macro", **kwargs).to(device)
        self.confusion = MulticlassConfusionMatrix(**kwargs).to(device)
        self.loss_and_count = torch.zeros(2, dtype=torch.float64, device=device)

    def update(self, logits: torch.Tensor, targets: torch.Tensor, loss_sum: torch.Tensor) -> None:
        logits = logits.float()
        for metric in (self.top1, self.top5, self.macro_f1, self.confusion):
            metric.update(logits, targets)
        count = torch.tensor(len(targets), device=loss_sum.device, dtype=torch.float64)
        self.loss_and_count += torch.stack([loss_sum.detach().double(), count])

    def compute(self) -> dict:
        """Metrics over everything seen (on every process), as Python numbers and a confusion-matrix list."""
        loss_sum, count = all_reduce_sum(self.loss_and_count.clone()).tolist()
        return {
            "loss": loss_sum / count if count else math.nan,
            "top1": self.top1.compute().item(),
            "top5": self.top5.compute().item(),
            "macro_f1": self.macro_f1.compute().item(),
            "count": int(count),
            "confusion_matrix": self.confusion.compute().long().tolist(),
        }


@torch.inference_mode()
def evaluate(model: nn.Module, loader, num_classes: int, device: torch.device, *, amp: bool = False,
             amp_dtype: str = "auto", channels_last: bool = False) -> dict:
    """Loss (plain cross-entropy, without label smoothing, so runs compare), top-1, top-5, macro-F1, confusion matrix.

    Pass the unwrapped model in a distributed run: each rank evaluates its own
    shard and the meter sums the shards. On a CPU the batches run side by side,
    one per torch thread (:func:`regnet.models.parallel.map_batches`).
    """
    was_training = model.training
    model.eval()
    meter = ClassificationMeter(num_classes, device)

    def logits_of(batch):
        images, targets = (t.to(device, non_blocking=True) for t in batch)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp, amp_dtype):
            return model(images), targets

    compiled = hasattr(model, "_orig_mod")  # what torch.compile returns wraps the module as _orig_mod
    for logits, targets in map_batches(logits_of, loader, device, side_by_side=not compiled):
        meter.update(logits, targets, F.cross_entropy(logits.float(), targets, reduction="sum"))
    model.train(was_training)
    return meter.compute()


def format_per_class(rows: list[dict]) -> str:
    width = max([len("class")] + [len(r["class"]) for r in rows])
    lines = [f"{'class':<{width}}  precision  recall     f1  accuracy  support"]
    for r in rows:
        lines.append(f"{r['class']:<{width}}  {r['precision']:9.3f}  {r['recall']:6.3f}  {r['f1']:5.3f}  "
                     f"{r['accuracy']:8.3f}  {r['support']:7d}")
    return "\n".join(lines)


def format_confusion(confusion_matrix: list[list[int]], class_names: list[str]) -> str:
    """Rows are true classes, columns predicted, headed by class indices to stay narrow."""
    width = max(4, max(len(str(v)) for row in confusion_matrix for v in row) + 1)
    name_width = max(len(n) for n in class_names)
    header = " " * (name_width + 2) + "".join(f"{i:>{width}}" for i in range(len(class_names)))
    lines = ["confusion matrix (rows: true, columns: predicted)", header]
    for i, (name, row) in enumerate(zip(class_names, confusion_matrix)):
        lines.append(f"{name:<{name_width}}  " + "".join(f"{v:>{width}}" for v in row))
    return "\n".join(lines)
