"""Per-class results from a confusion matrix, shared by training, evaluation and inspection."""
import pytest
import torch

from regnet.metrics import per_class_table


def test_per_class_table_values():
    # rows: true class, columns: predicted
    cm = [[3, 1, 0],
          [0, 2, 2],
          [0, 0, 0]]
    rows = per_class_table(torch.tensor(cm), ["a", "b", "c"])
    assert rows == per_class_table(cm, ["a", "b", "c"])  # a list of lists gives the same table
    a, b, c = rows
    assert a["precision"] == 1.0 and a["recall"] == pytest.approx(0.75) and a["support"] == 4
    assert b["precision"] == pytest.approx(2 / 3) and b["recall"] == 0.5 and b["accuracy"] == b["recall"]
    assert b["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert c == {"class": "c", "precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": 0.0, "support": 0}
