"""Training step of regnet20 against resnet20's, and the lab's whole-split inference rates, on this CPU.

The headline: regnet20's training step time as a multiple of resnet20's,
measured in one process, one torch thread, by process CPU time
(``time.process_time``: a neighbour holding the core does not count, which
wall-clock cannot say on a shared machine), channels-last, batch 128, as
interleaved pairs (resnet20's step, then regnet20's); the median of the
pairs' ratios with their range, for the ConvLSTM, ConvGRU and ConvRNN
regulators, with the speed layer (:mod:`regnet.models.fast`) on and off,
interleaved in the same rounds. Goal: <= 2.3x on the default path.

Then the lab's inference: ``regnet eval``'s and Inspect's split analyses'
images/s on shapes images at 2 threads (wall clock, and per CPU-second);
goal: 10,000 images analysed in under 2 minutes.

    python bench/throughput.py              # the headline and the lab rates (a few minutes)
    python bench/throughput.py --quick      # a smoke run (seconds)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn

from bench._common import environment, format_goals, format_table, goal, load_average, result_path, write_json
from regnet.models import build_model, fast, folded_for_inference

INPUT = (3, 32, 32)
CELLS = ("lstm", "gru", "rnn")
STEP_GOAL = 2.3  # regnet20's step over resnet20's, default path
ANALYSES_GOAL_S = 120.0  # 10,000 images analysed in under 2 minutes


@dataclass
class Candidate:
    """One model, channels-last, with its optimiser and a fixed synthetic batch; ``fast`` picks the speed layer."""

    name: str
    options: dict
    batch: int
    fast: bool = True
    train_s: list[float] = field(default_factory=list)

    def __post_init__(self):
        torch.manual_seed(0)
        self.model = build_model(self.name, **self.options).to(memory_format=torch.channels_last)
        self.x = torch.randn(self.batch, *INPUT).contiguous(memory_format=torch.channels_last)
        self.y = torch.randint(0, 10, (self.batch,))
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

    @property
    def label(self) -> str:
        cell = self.options.get("cell")
        return self.name + (f" {cell}" if cell else "") + ("" if self.fast or not cell else " (paper order)")

    def train_step(self) -> float:
        """One step's process CPU seconds."""
        self.model.train()
        with fast.gates_in_order(self.fast):
            start = time.process_time()
            self.optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(self.model(self.x), self.y).backward()
            self.optimizer.step()
            return time.process_time() - start


def paired(batch: int, pairs: int, warmup: int) -> list[dict]:
    """Per regulator and speed-layer setting, regnet20's step CPU time over resnet20's, in interleaved pairs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        base = Candidate("resnet20", {}, batch)
        others = [Candidate("regnet20", {"cell": c}, batch, fast=on) for on in (True, False) for c in CELLS]
        ratios = {id(c): [] for c in others}
        for round_ in range(warmup + pairs):
            for c in others:
                base_s, own_s = base.train_step(), c.train_step()
                if round_ >= warmup:
                    base.train_s.append(base_s), c.train_s.append(own_s)
                    ratios[id(c)].append(own_s / base_s)
    finally:
        torch.set_num_threads(threads)
    return [{"label": c.label, "cell": c.options.get("cell"), "fast": c.fast,
             "train_ms_cpu": 1e3 * statistics.median(c.train_s), "ratios": ratios.get(id(c), [1.0]),
             "train_img_s": batch / statistics.median(c.train_s),  # per CPU-second of one thread
             "ratio_median": statistics.median(ratios.get(id(c), [1.0])),
             "ratio_min": min(ratios.get(id(c), [1.0])), "ratio_max": max(ratios.get(id(c), [1.0]))}
            for c in [base, *others]]


def lab_inference(images: int, threads: int, batch: int, rounds: int) -> list[dict]:
    """regnet20 (lstm) evaluated (``regnet eval``'s path) and analysed (Inspect's) on ``images`` shapes images."""
    from regnet.data import load_splits
    from regnet.data.device import evaluation_batches
    from regnet.inspect import analyze_split
    from regnet.train.metrics import evaluate

    splits = load_splits("shapes", size=2 * images, val_ratio=0.5, split_seed=0)
    torch.manual_seed(0)
    model = build_model("regnet20", num_classes=splits.info.num_classes).eval().to(memory_format=torch.channels_last)
    batches = evaluation_batches(splits.val, splits.info, batch, count=images)
    tasks = {"regnet eval": lambda: evaluate(folded_for_inference(model), batches, splits.info.num_classes,
                                             torch.device("cpu"), channels_last=True),
             "split analyses": lambda: analyze_split(model, batches, splits.info.class_names)}
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    rows = []
    try:
        for r in range(rounds):
            for name, task in tasks.items():
                load = load_average()[0]
                cpu, wall = time.process_time(), time.perf_counter()
                task()
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                rows.append({"round": r, "task": name, "images": images, "threads": threads, "wall_s": wall,
                             "img_s": images / wall, "img_per_cpu_s": images / cpu, "load": load})
    finally:
        torch.set_num_threads(saved)
    return rows


def goals(headline: list[dict], lab: list[dict]) -> list[dict]:
    rows = [goal(f"{r['label']} training step / resnet20's (CPU time, 1 thread)", r["ratio_median"], STEP_GOAL,
                 "x", higher_is_better=False, note=f"median of {len(r['ratios'])} pairs, range "
                 f"{r['ratio_min']:.2f}-{r['ratio_max']:.2f}")
            for r in headline if r["cell"] and r["fast"]]  # the paper's order is the table's before/after
    analyses = [r for r in lab if r["task"] == "split analyses"]
    if analyses:
        per_10k = statistics.median(10_000 / r["img_s"] for r in analyses)
        rows.append(goal("split analyses, seconds for 10,000 images (wall, 2 threads)", per_10k, ANALYSES_GOAL_S,
                         "s", higher_is_better=False, note=f"median of {len(analyses)} rounds"))
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: small batches, few images")
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    batch, pairs, warmup, images, rounds = ((8, 2, 1, 64, 1) if args.quick else
                                            (128, args.pairs, 2, args.images, args.rounds))
    headline = paired(batch, pairs, warmup)
    print(format_table(headline, [("label", "model", ""), ("train_ms_cpu", "train ms (CPU)", ".0f"),
                                  ("ratio_median", "step / resnet20", ".2f"), ("ratio_min", "min", ".2f"),
                                  ("ratio_max", "max", ".2f")]))
    lab = lab_inference(images, 2, 128, rounds)
    print(format_table(lab, [("round", "round", "d"), ("task", "task", ""), ("images", "images", "d"),
                             ("wall_s", "wall s", ".1f"), ("img_s", "img/s", ".0f"),
                             ("img_per_cpu_s", "img/CPU-s", ".0f"), ("load", "load", ".1f")]))
    summary_rows = goals(headline, lab)
    print(format_goals(summary_rows))
    result = {"environment": environment(threads=1), "batch": batch, "headline": headline, "lab": lab,
              "goals": summary_rows}
    print(f"wrote {write_json(result_path('throughput', args.quick), result)}")
    return result


if __name__ == "__main__":
    main()
