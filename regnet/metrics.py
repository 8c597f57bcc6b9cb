"""Per-class results from a confusion matrix: one definition for training, evaluation and inspection."""
from __future__ import annotations

import torch


def per_class_table(confusion_matrix, class_names: list[str]) -> list[dict]:
    """Precision, recall, F1 and accuracy per class from a confusion matrix (rows: true class, columns: predicted).

    A class's accuracy is the fraction of its images classified correctly
    (torchmetrics' per-class accuracy, equal to its recall).
    """
    cm = torch.as_tensor(confusion_matrix).double()
    true_positive = cm.diag()
    support = cm.sum(1)
    predicted = cm.sum(0)
    rows = []
    for i, name in enumerate(class_names):
        precision = (true_positive[i] / predicted[i]).item() if predicted[i] else 0.0
        recall = (true_positive[i] / support[i]).item() if support[i] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"class": name, "precision": precision, "recall": recall, "f1": f1, "accuracy": recall,
                     "support": int(support[i])})
    return rows
