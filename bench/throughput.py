"""Training and evaluation speed of regnet20 against resnet20, and every variant against this machine's ceiling.

The headline, first: regnet20's training step time as a multiple of
resnet20's, measured in one process, one torch thread, by process CPU time
(``time.process_time``: a neighbour holding the core does not count, which
wall-clock cannot say on this shared 2-core machine), channels-last, batch
128, as interleaved pairs (resnet20's step, then regnet20's), the median of
the pairs' ratios with their spread; for the ConvLSTM, ConvGRU and ConvRNN
regulators (efficient gates). Goal: lstm/efficient <= 1.8x. Beside it the
evaluation rate (inference mode) in images per CPU-second of one thread.
Then the lab's inference (``lab_inference``): ``regnet eval``'s and
Inspect's split analyses' images/s on 10,000 images at 2 threads, wall
clock and per CPU-second; goal >= 1,000 img/s each.

Then the wall-clock table (``--headline`` skips it): synthetic 32x32 tensors
(so data loading is excluded), batch 128, SGD with
momentum. Every model runs in NCHW and in channels-last, and the timed
repeats go round-robin over all of them (and over a 2048x2048 ``torch.mm``,
the arithmetic ceiling), so that a neighbour's load on a shared machine
slows every configuration alike and the ratios stay fair. Each figure is
the median of the repeats.

Achieved GFLOP/s counts the model's multiply-accumulates (``regnet.models.summary``):
training does about 3 x 2 x MACs per image (forward, and a backward twice as
large), evaluation 2 x MACs.

    python bench/throughput.py                 # the full run (a few minutes)
    python bench/throughput.py --headline      # the CPU-time pairs only (about a minute)
    python bench/throughput.py --quick         # a smoke run (seconds)
    python bench/throughput.py --profile regnet20:lstm:efficient [--channels-last] [--threads 1 --clock cpu]
"""
from __future__ import annotations

import argparse
import ast
import math
import os
import statistics
import sys
import time
from collections import deque
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from unittest.mock import patch

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn
from torch.profiler import ProfilerActivity
from torch.profiler import profile as torch_profile
from torch.utils._python_dispatch import TorchDispatchMode

from bench._common import environment, format_goals, format_table, goal, load_average, result_path, write_json
from regnet.allocator import keep_freed_memory
from regnet.models import build_model, cells, folded_for_inference, native, summary

NAME = "throughput"
INPUT = (3, 32, 32)
MM_SIZE = 2048
VARIANTS: list[tuple[str, dict]] = [("resnet20", {})] + [
    ("regnet20", {"cell": cell, "gates": gates}) for gates in ("efficient", "full") for cell in ("lstm", "gru", "rnn")
]
GOAL_MODEL = ("regnet20", {"cell": "lstm", "gates": "efficient"})
STEP_VS_RESNET = 1.8  # regnet20 lstm/efficient's training step CPU time as a multiple of resnet20's
PAIRED_CELLS = ("lstm", "gru", "rnn")
RESNET_VS_CEILING = 0.5  # resnet20's training GFLOP/s as a share of the matrix product's
LAB_IMAGES = 10_000  # `regnet eval` and Inspect's split analyses, on this many images
LAB_GOAL = 1000.0  # images/s, wall clock, for both
LAB_THREADS = 2
ANALYSES_TASK = "split analyses (analyze_split)"
FLOOR_TASK = "the analyses' convolutions alone"  # not a goal: the bound on the analyses' rate (convolutions_alone)
LAB_BATCH = 128  # regnet20's fastest inference batch on this CPU (larger batches leave the cache)


def spec(model: str, options: dict) -> str:
    """``model[:cell:gates]``, as ``--models`` and ``--profile`` take it."""
    return ":".join([model, *([options["cell"], options["gates"]] if options else [])])


def label(model: str, options: dict) -> str:
    return model + (f" {options['cell']}/{options['gates']}" if options else "")


@dataclass
class Candidate:
    """One model in one memory format, with its optimiser and a fixed synthetic batch."""

    model_name: str
    options: dict
    channels_last: bool
    batch: int
    path: str = "fast"  # headline only: the cells' path, a key of PATHS
    macs: int = 0
    params: int = 0
    train_s: list[float] = field(default_factory=list)
    eval_s: list[float] = field(default_factory=list)

    def __post_init__(self):
        torch.manual_seed(0)
        self.model = build_model(self.model_name, **self.options)
        s = summary(self.model, INPUT)
        self.macs, self.params = s.macs, s.params
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=fmt)
        self.x = torch.randn(self.batch, *INPUT).contiguous(memory_format=fmt)
        self.y = torch.randint(0, 10, (self.batch,))
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

    def train_step(self) -> None:
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(self.model(self.x), self.y).backward()
        self.optimizer.step()

    def eval_step(self) -> None:
        self.model.eval()
        with torch.inference_mode():
            self.model(self.x)

    def row(self) -> dict:
        train_s, eval_s = statistics.median(self.train_s), statistics.median(self.eval_s)
        train_ips, eval_ips = self.batch / train_s, self.batch / eval_s
        return {
            "label": label(self.model_name, self.options), "model": self.model_name, "options": self.options,
            "channels_last": self.channels_last, "format": "channels_last" if self.channels_last else "nchw",
            "params": self.params, "macs": self.macs,
            "train_img_s": train_ips, "eval_img_s": eval_ips,
            "train_gflops": 6 * self.macs * train_ips / 1e9, "eval_gflops": 2 * self.macs * eval_ips / 1e9,
            "train_s_per_batch": train_s, "eval_s_per_batch": eval_s,
            "train_s_repeats": self.train_s, "eval_s_repeats": self.eval_s,
        }


def cpu_seconds(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def plain_path():
    """The cells on their plain torch-ops path (``regnet.models.cells.fused`` off): the operations the CPU path
    ran before the fused autograd functions, as a before/after in one process."""
    return patch.object(cells, "fused", lambda x: False)


def eager_path():
    """The cells without their C++ step (``regnet.models.native.kernels`` off): the fused autograd functions
    and streamed steps of PyTorch ops, as the C++ step's before in one process."""
    return patch.object(native, "kernels", lambda: None)


# The cells' paths the headline can compare: the default (C++ step where built), and its befores.
PATHS = {"fast": nullcontext, "eager": eager_path, "plain": plain_path}
PATH_NOTES = {"fast": "", "eager": " (no C++ step)", "plain": " (plain path)"}


def paired(batch: int, pairs: int, warmup: int, cells_: tuple[str, ...] = PAIRED_CELLS,
           paths: tuple[str, ...] = ("fast",)) -> list[dict]:
    """The headline: per regulator, regnet20's training step CPU time over resnet20's, in interleaved pairs.

    One torch thread, so that process CPU time is the work done and not the
    time spent waiting at OpenMP barriers for a core that a neighbour holds.
    Each pair times resnet20's step then regnet20's, back to back, so a drift
    in the machine's state (cache, frequency, a neighbour's memory traffic)
    falls on both; the median of the pairs' ratios is the figure, their range
    its spread. Each regulator runs on each of ``paths`` (keys of
    :data:`PATHS`: ``eager`` without the C++ step, ``plain`` on the plain
    torch-ops path) in pairs of its own, interleaved with the others.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        base = Candidate("resnet20", {}, True, batch)
        others = [Candidate("regnet20", {"cell": c, "gates": "efficient"}, True, batch, path=p)
                  for p in paths for c in cells_]
        for _ in range(warmup):  # whole untimed rounds: each step then finds the allocator as the rounds leave it
            _paired_round(base, others)
        for c in [base, *others]:
            c.train_s.clear(), c.eval_s.clear()
        ratios = {id(c): [] for c in others}
        for _ in range(pairs):
            for c, ratio in _paired_round(base, others):
                ratios[id(c)].append(ratio)
    finally:
        torch.set_num_threads(threads)
    return [paired_row(c, ratios.get(id(c), [1.0]), batch) for c in [base, *others]]


def _paired_round(base: Candidate, others: list[Candidate]) -> list[tuple[Candidate, float]]:
    """One round of the headline: per candidate, resnet20's step then its own, timed; each one's ratio.

    Untimed (warm-up) rounds run the same steps in the same order: a step's
    cost depends on the memory the steps before it left (glibc returns
    freed maps to the system, and the next step faults them back in), so a
    warm-up of each model on its own would leave the first rounds slower.
    """
    out = []
    for c in others:
        with PATHS[c.path]():
            base.train_s.append(cpu_seconds(base.train_step))
            c.train_s.append(cpu_seconds(c.train_step))
            out.append((c, c.train_s[-1] / base.train_s[-1]))
            base.eval_s.append(cpu_seconds(base.eval_step))
            c.eval_s.append(cpu_seconds(c.eval_step))
    return out


def paired_row(c: Candidate, ratios: list[float], batch: int) -> dict:
    name = label(c.model_name, c.options) + PATH_NOTES[c.path]
    return {"label": name, "model": c.model_name, "options": c.options, "path": c.path,
            "train_ms_cpu": 1e3 * statistics.median(c.train_s), "train_s_cpu_pairs": c.train_s,
            "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "ratios": ratios, "eval_img_per_cpu_s": batch / statistics.median(c.eval_s)}


@contextmanager
def general_inference_paths():
    """The lab's inference without its fast paths, as a before/after in one process: no C++ cell step, no
    streamed cell steps, no skipped cells in the ablated pass, one batch at a time over torch's intra-op threads."""
    import regnet.inspect.analyses as analyses
    import regnet.train.metrics as metrics
    from regnet.models import blocks

    one_at_a_time = lambda fn, batches, device, side_by_side=True: map(fn, batches)  # noqa: E731
    with ExitStack() as stack:
        stack.enter_context(eager_path())
        stack.enter_context(patch.object(blocks._Regulated, "cell_unused", lambda self: False))
        for module in (metrics, analyses):
            stack.enter_context(patch.object(module, "map_batches", one_at_a_time))
        for cell in (cells.ConvLSTMCell, cells.ConvGRUCell):
            stack.enter_context(patch.object(cell, "_streamed", None))
        yield


def lab_inference(images: int, threads: int, batch: int, rounds: int = 1, compare: bool = False) -> list[dict]:
    """regnet20 (lstm/efficient) evaluated and analysed on ``images`` shapes validation images, the lab's way.

    ``regnet eval``'s path (``regnet.train.metrics.evaluate`` of the model
    with its batch norms folded, over ``evaluation_batches``: the split
    decoded once, inference mode, channels-last) and Inspect's (``analyze_split``: an intact and an ablated
    pass with every block's output hooked), and the analyses' convolutions
    alone (:func:`convolutions_alone`, their bound); wall-clock images/s at ``threads``
    torch threads and images per process CPU-second, ``rounds`` times; with
    ``compare``, each round also runs the first two on :func:`general_inference_paths`, interleaved.
    """
    from regnet.data import load_splits
    from regnet.data.device import evaluation_batches
    from regnet.inspect import analyze_split
    from regnet.train.metrics import evaluate

    splits = load_splits("shapes", size=2 * images, val_ratio=0.5, split_seed=0)
    torch.manual_seed(0)
    model = build_model("regnet20", num_classes=splits.info.num_classes).eval().to(memory_format=torch.channels_last)
    batches = evaluation_batches(splits.val, splits.info, batch, count=images)
    device = torch.device("cpu")
    analyse = lambda some: analyze_split(model, some, splits.info.class_names)  # noqa: E731
    tasks = [("regnet eval (evaluate)", lambda: evaluate(folded_for_inference(model), batches,
                                                         splits.info.num_classes, device, channels_last=True)),
             (ANALYSES_TASK, lambda: analyse(batches)),
             (FLOOR_TASK, convolutions_alone(analyse, next(iter(batches)), math.ceil(images / batch)))]
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    rows = []
    try:
        with torch.inference_mode():
            model(next(iter(batches))[0].contiguous(memory_format=torch.channels_last))  # oneDNN's first-call setup
        for r in range(rounds):
            for paths in ("general", "fast") if compare else ("fast",):
                with general_inference_paths() if paths == "general" else nullcontext():
                    rows += [dict(timed_task(name, task, images), round=r, paths=paths, threads=threads, batch=batch)
                             for name, task in tasks if paths == "fast" or name != FLOOR_TASK]
    finally:
        torch.set_num_threads(saved)
    return rows


class ConvolutionCalls(TorchDispatchMode):
    """Every aten convolution a pass makes, with its arguments, to replay them alone (:func:`convolutions_alone`)."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in (torch.ops.aten.conv2d, torch.ops.aten.convolution):  # conv2d in inference mode
            self.calls.append((func, args, kwargs or {}))
        return func(*args, **(kwargs or {}))


def convolutions_alone(analyse: Callable[[list], object], first_batch, batches: int) -> Callable[[], None]:
    """The split analyses' floor on this machine: their convolutions alone, replayed batch by batch.

    ``analyse`` is run once on ``first_batch`` at one thread; the convolutions
    it calls (both passes', every 3x3 and 1x1) are then replayed ``batches``
    times, side by side as the analyses run (``map_batches``), without the
    cells, norms, fusion kernels, hooks and metrics between them. No analyses
    that run these FP32 convolutions through torch can beat the replay's rate.
    """
    from regnet.models.parallel import map_batches

    recorder = ConvolutionCalls()
    saved = torch.get_num_threads()
    torch.set_num_threads(1)  # map_batches then runs inline, in the thread the recorder watches
    try:
        with recorder:
            analyse([first_batch])
    finally:
        torch.set_num_threads(saved)

    def replay(_index: int) -> None:
        for func, args, kwargs in recorder.calls:
            func(*args, **kwargs)

    def replay_all() -> None:
        with torch.inference_mode():
            deque(map_batches(replay, range(batches), "cpu"), maxlen=0)

    return replay_all


def timed_task(name: str, task, images: int) -> dict:
    load = load_average()[0]
    cpu, wall = time.process_time(), time.perf_counter()
    task()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"task": name, "images": images, "wall_s": wall, "cpu_s": cpu, "img_s": images / wall,
            "img_per_cpu_s": images / cpu, "load_before": load, "load_after": load_average()[0]}


def lab_goals(rows: list[dict]) -> list[dict]:
    """One goal per task but the floor: the median over the rounds on the fast paths, with the rounds' range;
    the analyses' note gives the floor's median, the rate that their convolutions alone allow."""
    fast: dict[str, list[dict]] = {}
    for r in rows:
        if r["paths"] == "fast":
            fast.setdefault(r["task"], []).append(r)
    floor = fast.pop(FLOOR_TASK, [])
    goals_ = []
    for task, mine in fast.items():
        rates = sorted(r["img_s"] for r in mine)
        loads = [r["load_before"] for r in mine] + [r["load_after"] for r in mine]
        bound = (f"; its convolutions alone: {statistics.median(r['img_s'] for r in floor):.0f} img/s"
                 if task == ANALYSES_TASK and floor else "")
        goals_.append(goal(
            f"regnet20 {task} on {mine[0]['images']:,} images, wall img/s at {mine[0]['threads']} threads",
            statistics.median(rates), LAB_GOAL, "img/s",
            note=f"median of {len(rates)} ({rates[0]:.0f}-{rates[-1]:.0f}); "
                 f"{statistics.median(r['img_per_cpu_s'] for r in mine):.0f} img per CPU-second; "
                 f"load {min(loads)}-{max(loads)}{bound}"))
    return goals_


def print_lab(rows: list[dict], summary_rows: list[dict]) -> None:
    print(format_table(rows, [("round", "round", "d"), ("paths", "paths", ""), ("task", "task", ""),
                              ("images", "images", "d"), ("threads", "threads", "d"),
                              ("wall_s", "wall s", ".1f"), ("img_s", "img/s", ".0f"),
                              ("img_per_cpu_s", "img/CPU-s", ".0f")]))
    print(format_goals(summary_rows))


def timed(fn, iters: int) -> float:
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - start) / iters


def measure(batch: int, warmup: int, repeats: int, iters: int, variants: list[tuple[str, dict]]) -> dict:
    candidates = [Candidate(m, o, cl, batch) for cl in (False, True) for m, o in variants]
    a, b = torch.randn(MM_SIZE, MM_SIZE), torch.randn(MM_SIZE, MM_SIZE)
    mm = lambda: torch.mm(a, b)  # noqa: E731
    for c in candidates:
        for _ in range(warmup):
            c.train_step()
            c.eval_step()
    for _ in range(warmup):
        mm()
    mm_s = []
    for r in range(repeats):
        mm_s.append(timed(mm, max(iters, 3)))
        for c in candidates:
            c.train_s.append(timed(c.train_step, iters))
            c.eval_s.append(timed(c.eval_step, iters))
        print(f"  repeat {r + 1}/{repeats} done (load {load_average()[0]})", flush=True)
    rows = [c.row() for c in candidates]
    for r in rows:
        base = next(x for x in rows if x["model"] == "resnet20" and x["channels_last"] == r["channels_last"])
        r["train_time_vs_resnet20"] = r["train_s_per_batch"] / base["train_s_per_batch"]
        r["gflops_vs_resnet20"] = r["train_gflops"] / base["train_gflops"]
    ceiling = 2 * MM_SIZE**3 / statistics.median(mm_s) / 1e9
    return {"rows": rows, "matmul": {"size": MM_SIZE, "gflops": ceiling, "seconds": mm_s}}


def headline_goals(rows: list[dict], pairs: int) -> list[dict]:
    """The 1.8x goal on lstm/efficient; gru and rnn beside it as figures (no goal of their own)."""
    out = []
    for r in rows:
        if r["model"] != "regnet20" or r["path"] != "fast":
            continue
        spread = f"median of {pairs} pairs, range {r['ratio_min']:.2f}-{r['ratio_max']:.2f}; CPU time, 1 thread"
        name = f"{r['label']} training step / resnet20's (CPU time)"
        if (r["model"], r["options"]) == GOAL_MODEL:
            out.append(goal(name, r["ratio_median"], STEP_VS_RESNET, "x", higher_is_better=False, note=spread))
        else:
            out.append({**goal(name, r["ratio_median"], STEP_VS_RESNET, "x", higher_is_better=False, note=spread),
                        "status": "info"})
    return out


def print_headline(rows: list[dict], summary_rows: list[dict]) -> None:
    print(format_table(rows, [("label", "model", ""), ("train_ms_cpu", "train ms (CPU)", ".0f"),
                              ("ratio_median", "step / resnet20", ".2f"), ("ratio_min", "min", ".2f"),
                              ("ratio_max", "max", ".2f"), ("eval_img_per_cpu_s", "eval img/CPU-s", ".0f")]))
    print(format_goals(summary_rows))


def goals(result: dict) -> list[dict]:
    """The wall-clock table's goal: resnet20 against the matmul ceiling.

    regnet20's GFLOP/s share of resnet20's is in the table but no longer a
    goal: at more threads than free cores, wall clock gave it a false PASS;
    the headline's CPU-time ratio is the measure.
    """
    rows, ceiling = result["rows"], result["matmul"]["gflops"]
    out = []
    for cl in (False, True):
        fmt = "channels-last" if cl else "NCHW"
        resnet = next((r for r in rows if r["model"] == "resnet20" and r["channels_last"] == cl), None)
        if resnet:
            out.append(goal(f"resnet20 training GFLOP/s / matmul ceiling ({fmt})", resnet["train_gflops"] / ceiling,
                            RESNET_VS_CEILING, "x",
                            note=f"{resnet['train_gflops']:.1f} of {ceiling:.1f} GFLOP/s"))
    return out


COLUMNS = [("label", "model", ""), ("format", "format", ""), ("macs_m", "MMACs", ".1f"),
           ("train_img_s", "train img/s", ".0f"), ("train_gflops", "train GFLOP/s", ".1f"),
           ("eval_img_s", "eval img/s", ".0f"), ("eval_gflops", "eval GFLOP/s", ".1f"),
           ("train_time_vs_resnet20", "train time/resnet20", ".2f")]


def print_result(result: dict, summary_rows: list[dict]) -> None:
    rows = [dict(r, macs_m=r["macs"] / 1e6) for r in result["rows"]]
    print(format_table(rows, COLUMNS))
    print(f"matmul {MM_SIZE}x{MM_SIZE} float32 ceiling: {result['matmul']['gflops']:.1f} GFLOP/s")
    print(format_goals(summary_rows))


# --- profiling: where one configuration's training step spends its time ---------------------------------------

CATEGORIES = (
    ("C++ cell step", ("regnet::lstm", "regnet::gru")),  # the cells' own operators (regnet/models/native.py)
    ("C++ norms and fusion", ("regnet::",)),  # the regulated blocks' BN+ReLU pairs and 1x1 fusion (csrc/norm.cpp)
    ("conv", ("convolution",)),
    ("batch norm", ("batch_norm",)),
    ("copy/layout", ("copy_", "clone", "cat", "stack", "contiguous", "_to_copy")),
    ("elementwise", ("add", "mul", "sigmoid", "tanh", "threshold", "relu", "addcmul", "sub", "rsub", "fill_",
                     "zero_", "where", "div")),
)


def conv_kind(shapes: list) -> str:
    """depthwise / 1x1 / kxk from the weight's shape (the 2nd input of a forward conv, the 3rd of its backward)."""
    weights = [s for s in shapes if isinstance(s, list) and len(s) == 4]
    if len(weights) < 2:
        return "conv"
    weight = weights[-1] if len(weights) >= 3 else weights[1]
    out_c, in_per_group, kh, kw = weight
    if in_per_group == 1:
        return f"conv depthwise {kh}x{kw}"
    return f"conv {kh}x{kw}"


def category(op: str, shapes: list) -> str:
    if "convolution" in op:
        return conv_kind(shapes)
    for name, keys in CATEGORIES:
        if any(k in op for k in keys):
            return name
    return "other"


class CpuClock(TorchDispatchMode):
    """Process CPU seconds per (aten op, input shapes), every op of forward and backward.

    Unlike a profiler's wall-clock, CPU time does not count the moments another
    process holds the core, so on a busy shared machine it still ranks the ops
    right. Meaningful with one torch thread only (it adds up every thread).
    """

    def __init__(self):
        super().__init__()
        self.seconds: dict[tuple[str, str], float] = {}
        self.calls: dict[tuple[str, str], int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        start = time.process_time()
        out = func(*args, **(kwargs or {}))
        key = (f"{func.namespace}::{func.overloadpacket.__name__}",
               str([list(a.shape) if isinstance(a, torch.Tensor) else [] for a in args]))
        self.seconds[key] = self.seconds.get(key, 0.0) + time.process_time() - start
        self.calls[key] = self.calls.get(key, 0) + 1
        return out


def op_times(step, iters: int, clock: str) -> list[tuple[str, list, float, int]]:
    """(op, input shapes, seconds, calls) over ``iters`` training steps, by the profiler or by CPU time."""
    if clock == "cpu":
        timer = CpuClock()
        with timer:
            for _ in range(iters):
                step()
        return [(op, ast.literal_eval(shapes), s, timer.calls[(op, shapes)])
                for (op, shapes), s in timer.seconds.items()]
    with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(iters):
            step()
    return [(e.key, e.input_shapes, e.self_cpu_time_total / 1e6, e.count)
            for e in prof.key_averages(group_by_input_shape=True)]


def profile(spec: str, channels_last: bool, batch: int, iters: int, rows_shown: int, clock: str) -> dict:
    model_name, *rest = spec.split(":")
    options = {"cell": rest[0], "gates": rest[1]} if len(rest) == 2 else {}
    c = Candidate(model_name, options, channels_last, batch)
    for _ in range(2):
        c.train_step()
    by_category: dict[str, float] = {}
    ops = []
    for op, shapes, seconds, calls in op_times(c.train_step, iters, clock):
        ms = seconds * 1e3 / iters
        cat = category(op, shapes)
        by_category[cat] = by_category.get(cat, 0.0) + ms
        ops.append({"op": op, "category": cat, "ms_per_step": ms, "calls_per_step": calls / iters,
                    "shapes": str(shapes)[:120]})
    total = sum(by_category.values())
    ops.sort(key=lambda o: -o["ms_per_step"])
    cats = sorted(({"category": k, "ms_per_step": v, "share": v / total} for k, v in by_category.items()),
                  key=lambda r: -r["ms_per_step"])
    what = "CPU time" if clock == "cpu" else "profiler self time"
    print(f"{label(model_name, options)} {'channels-last' if channels_last else 'NCHW'}, batch {batch}, "
          f"{torch.get_num_threads()} thread(s): {total:.0f} ms per training step ({what})")
    print(format_table(cats, [("category", "category", ""), ("ms_per_step", "ms/step", ".1f"), ("share", "share", ".1%")]))
    print(format_table(ops[:rows_shown], [("op", "op", ""), ("category", "category", ""),
                                          ("ms_per_step", "ms/step", ".1f"), ("calls_per_step", "calls", ".0f"),
                                          ("shapes", "input shapes", "")]))
    return {"model": model_name, "options": options, "channels_last": channels_last, "batch": batch, "clock": clock,
            "ms_per_step": total, "categories": cats, "ops": ops[:60]}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke mode: small batch, few short repeats")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 128, quick 32)")
    p.add_argument("--pairs", type=int, default=None, help="headline: timed pairs per regulator (default 7, quick 2)")
    p.add_argument("--headline", action="store_true",
                   help="the CPU-time pairs and the lab's inference rates only, not the wall-clock table")
    p.add_argument("--lab-images", type=int, default=None,
                   help=f"images of the eval/analyses rates (default {LAB_IMAGES:,}, quick 500)")
    p.add_argument("--lab-only", action="store_true", help="only the lab's eval/analyses rates")
    p.add_argument("--lab-threads", type=int, default=LAB_THREADS,
                   help=f"torch threads of the eval/analyses rates (default {LAB_THREADS}; 1 on a busy machine, "
                        "where idle threads spin at OpenMP barriers)")
    p.add_argument("--lab-rounds", type=int, default=None, help="rounds of the eval/analyses rates (default 3, quick 1)")
    p.add_argument("--lab-compare", action="store_true",
                   help="each round also on the general inference paths (the fast paths' before), interleaved")
    p.add_argument("--plain", action="store_true",
                   help="headline: also each regulator on the cells' plain torch-ops path (the fused path's before)")
    p.add_argument("--eager", action="store_true",
                   help="headline: also each regulator without the cells' C++ step (its before)")
    p.add_argument("--repeats", type=int, default=None, help="timed round-robin repeats (default 5, quick 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of the wall-clock table (default: every core; quick: 1, which stays fast "
                        "on a busy machine); the headline always uses 1")
    p.add_argument("--models", default="", metavar="MODEL[:CELL:GATES],...",
                   help="table: measure only these (resnet20 is always measured: the goals compare against it)")
    p.add_argument("--profile", metavar="MODEL[:CELL:GATES]", help="profile one configuration's training step instead")
    p.add_argument("--channels-last", action="store_true", help="with --profile: channels-last memory format")
    p.add_argument("--clock", choices=("profiler", "cpu"), default="profiler",
                   help="with --profile: torch.profiler's wall-clock, or CPU time per op (needs --threads 1; "
                        "robust on a busy machine)")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/[quick/]throughput.json)")
    p.add_argument("--label", default="", help="a note stored in the JSON, e.g. which code version was measured")
    args = p.parse_args(argv)
    args.threads = args.threads or (1 if args.quick else os.cpu_count())
    args.batch = args.batch or (32 if args.quick else 128)
    args.lab_rounds = args.lab_rounds or (1 if args.quick else 3)
    if args.profile and args.clock == "cpu" and args.threads != 1:
        p.error("--clock cpu adds up every thread's time; use it with --threads 1.")
    return args


def run_profile(args: argparse.Namespace) -> dict:
    result = profile(args.profile, args.channels_last, args.batch, iters=2 if args.quick else 5,
                     rows_shown=15 if args.quick else 40, clock=args.clock)
    payload = {"name": f"{NAME}_profile", "quick": args.quick, "label": args.label,
               "environment": environment(args.threads), "summary": [], **result}
    tag = "_".join([args.profile.replace(":", "_"), "cl" if args.channels_last else "nchw", args.clock])
    write_json(args.out or result_path(f"{NAME}_profile_{tag}", args.quick), payload)
    return payload


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    keep_freed_memory()  # as every regnet command does (bench/allocator.py measures glibc's default beside it)
    torch.set_num_threads(args.threads)
    if args.profile:
        return run_profile(args)
    env = environment(args.threads)
    batch = args.batch
    pairs = args.pairs or (2 if args.quick else 7)
    print(f"{NAME}: batch {batch}, {env['cpu']}, load average {env['load_average']}")
    headline, summary_rows = [], []
    paths = ("fast", *(["eager"] if args.eager else []), *(["plain"] if args.plain else []))
    if not args.lab_only:
        print(f"headline: {pairs} interleaved pairs per regulator, 1 thread, process CPU time, channels-last")
        headline = paired(batch, pairs, warmup=1 if args.quick else 2, paths=paths)
        summary_rows = headline_goals(headline, pairs)
        print_headline(headline, summary_rows)
    lab_images = args.lab_images or (500 if args.quick else LAB_IMAGES)
    print(f"lab inference: regnet20 on {lab_images:,} images, {args.lab_threads} threads, batch {LAB_BATCH}")
    lab = lab_inference(lab_images, args.lab_threads, LAB_BATCH, args.lab_rounds, args.lab_compare)
    lab_rows = lab_goals(lab)
    print_lab(lab, lab_rows)
    summary_rows = summary_rows + lab_rows
    payload = {"name": NAME, "quick": args.quick, "label": args.label, "environment": env, "batch": batch,
               "summary": summary_rows, "paired": {"pairs": pairs, "threads": 1, "clock": "process CPU time",
                                                   "paths": [] if args.lab_only else list(paths),
                                                   "native_step": native.kernels() is not None,
                                                   "format": "channels_last", "rows": headline},
               "lab_inference": lab}
    if not (args.headline or args.lab_only):
        print(f"wall-clock table: {args.threads} thread(s), round-robin")
        variants = [v for v in VARIANTS if v[0] == "resnet20" or not args.models
                    or spec(*v) in args.models.split(",")]
        result = measure(batch, warmup=1 if args.quick else 2, repeats=args.repeats or (1 if args.quick else 5),
                         iters=1 if args.quick else 2, variants=variants)
        table_goals = goals(result)
        print_result(result, table_goals)
        payload["summary"] += table_goals
        payload.update(result)
    env["load_average_after"] = load_average()
    path = write_json(args.out or result_path(NAME, args.quick), payload)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
