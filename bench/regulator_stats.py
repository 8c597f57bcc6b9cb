"""What the per-epoch regulator statistics cost against one CIFAR-10 epoch of regnet20 (goal: <= 2%).

The probe (``regnet.train.regulator_stats.regulator_statistics``: 256 images, recorded, then again with H
zeroed) is timed by process CPU time, like the training step it is compared with: one optimizer step of
regnet20 at batch 128 on CIFAR-sized 32x32 inputs, times the 352 steps of an epoch of the 45,000-image
training split, plus validation of the 5,000 held-out images. Inputs are random tensors: the compute does
not depend on the pixels, and the figure must not depend on the data being on disk. One thread, so CPU
time is the work done, whatever else runs on the machine.

    python bench/regulator_stats.py [--quick]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn

from bench._common import environment, format_goals, format_table, goal, result_path, write_json
from regnet.models import build_model
from regnet.train.regulator_stats import PROBE_SIZE, regulator_statistics

TRAIN_IMAGES, VAL_IMAGES, BATCH = 45_000, 5_000, 128


def cpu_seconds(work, repeats: int) -> float:
    """Median process CPU seconds of ``work()`` over ``repeats`` calls, after one warm-up call."""
    work()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        work()
        times.append(time.process_time() - start)
    return sorted(times)[len(times) // 2]


def measure(model_name: str, repeats: int) -> dict:
    """CPU seconds of the probe, of one training step and of validating one batch, and the epoch estimate."""
    torch.manual_seed(0)
    model = build_model(model_name, num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    x, y = torch.randn(BATCH, 3, 32, 32), torch.randint(0, 10, (BATCH,))
    probe_x, probe_y = torch.randn(PROBE_SIZE, 3, 32, 32), torch.randint(0, 10, (PROBE_SIZE,))

    def step() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        criterion(model(x), y).backward()
        optimizer.step()

    def validate() -> None:
        model.eval()
        with torch.no_grad():
            model(x)

    step_s = cpu_seconds(step, repeats)
    val_s = cpu_seconds(validate, repeats)
    probe_s = cpu_seconds(lambda: regulator_statistics(model, probe_x, probe_y), repeats)
    steps = -(-TRAIN_IMAGES // BATCH)
    epoch_s = step_s * steps + val_s * -(-VAL_IMAGES // BATCH)
    return {"model": model_name, "step_cpu_s": step_s, "val_batch_cpu_s": val_s, "steps_per_epoch": steps,
            "epoch_cpu_s": epoch_s, "probe_cpu_s": probe_s, "probe_share": probe_s / epoch_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat instead of five (a smoke run)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = [measure("regnet20", 1 if args.quick else 5)]
    print(format_table(rows, [("model", "model", ""), ("step_cpu_s", "step CPU s", ".3f"),
                              ("epoch_cpu_s", "epoch CPU s (est.)", ".0f"), ("probe_cpu_s", "probe CPU s", ".3f"),
                              ("probe_share", "probe / epoch", ".3%")]))
    goals = [goal("regulator statistics per epoch, share of a CIFAR-10 epoch", rows[0]["probe_share"] * 100, 2.0,
                  "%", higher_is_better=False, note=f"probe of {PROBE_SIZE} images, one thread, CPU time")]
    print(format_goals(goals))
    path = write_json(result_path("regulator_stats", args.quick),
                      {"environment": environment(1), "rows": rows, "goals": goals})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
