"""Per-class and macro figures from a confusion matrix, through torchmetrics: one definition for training,
evaluation and inspection.

The engine's meter keeps a confusion matrix; the Inspect page has predictions. Both end here, and here
the figures come from torchmetrics' own functions (replaying the matrix as (prediction, target) pairs),
so a macro-F1 on the page is the number ``regnet eval`` prints, including how classes that never occur
are treated.
"""
from __future__ import annotations

import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy, multiclass_f1_score, multiclass_precision, multiclass_recall,
)


def _pairs(confusion_matrix) -> tuple[torch.Tensor, torch.Tensor]:
    """(predictions, targets) with exactly the counts of the matrix (rows: true class, columns: predicted)."""
    cm = torch.as_tensor(confusion_matrix).long()
    n = cm.shape[0]
    counts = cm.flatten()
    true = torch.arange(n).repeat_interleave(n)
    predicted = torch.arange(n).repeat(n)
    return predicted.repeat_interleave(counts), true.repeat_interleave(counts)


def macro_f1(confusion_matrix) -> float:
    """torchmetrics' macro-F1, as the engine's ``MulticlassF1Score(average="macro")`` computes it."""
    preds, targets = _pairs(confusion_matrix)
    n = len(confusion_matrix)
    return float(multiclass_f1_score(preds, targets, n, average="macro", validate_args=False))


def per_class_table(confusion_matrix, class_names: list[str]) -> list[dict]:
    """Precision, recall, F1 and accuracy per class (torchmetrics, ``average=None``) with each class's support.

    A class's accuracy is the fraction of its images classified correctly (torchmetrics' per-class
    accuracy, equal to its recall).
    """
    preds, targets = _pairs(confusion_matrix)
    n = len(class_names)
    kwargs = dict(num_classes=n, average=None, validate_args=False)
    columns = {"precision": multiclass_precision(preds, targets, **kwargs),
               "recall": multiclass_recall(preds, targets, **kwargs),
               "f1": multiclass_f1_score(preds, targets, **kwargs),
               "accuracy": multiclass_accuracy(preds, targets, **kwargs)}
    support = torch.as_tensor(confusion_matrix).long().sum(1)
    return [{"class": name, **{k: float(v[i]) for k, v in columns.items()}, "support": int(support[i])}
            for i, name in enumerate(class_names)]
