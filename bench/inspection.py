"""How fast the regulator lab answers: states and gates of one image, Integrated Gradients, split analyses.

For regnet20 (the shipped CIFAR-10 checkpoint when present, else fresh
weights; the timings do not depend on the weights):

* one 32x32 image: record every state and gate (``regnet.inspect.record_states``),
  the maps of the hidden and cell states and of every gate (``state_grid``),
  the gates along depth (``gate_profile``), and the plotly figures the
  regulator page draws (the hidden state's heat map per stage and step, one
  gate's, the gates along depth) with the dashboard's own
  ``dashboard.inspect_charts`` builders when present, else one ``go.Heatmap``
  per stage and step; goal under 0.3 s;
* Integrated Gradients with 32 steps (``regnet.inspect.attribute``); goal under 2 s;
* every split-level analysis (``analyze_split``) on 10,000 images of the
  ``shapes`` validation split, batches of 250 as the dashboard loads them;
  goal under 2 minutes, then under 1 s from the disk cache (``regnet.inspect.cached``).

    python bench/inspection.py [--quick]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch.utils.data import DataLoader

from bench._common import REPO, environment, format_goals, format_table, goal, load_average, result_path, write_json
from regnet import inspect as ri
from regnet.data import load_splits
from regnet.models import build_model

NAME = "inspection"
CHECKPOINT = REPO / "checkpoints" / "cifar10-regnet20"
SPLIT_IMAGES = 10_000
SPLIT_BATCH = 250  # as the dashboard's split analysis loads them
MAPS_GOAL_S, IG_GOAL_S, SPLIT_GOAL_S, CACHED_GOAL_S = 0.3, 2.0, 120.0, 1.0


def load_model() -> tuple[torch.nn.Module, str]:
    """The shipped trained regnet20 when it loads, else a freshly initialised one."""
    if (CHECKPOINT / "checkpoints" / "best.pt").exists():
        from regnet.train import load_run_model

        model, _ = load_run_model(CHECKPOINT)
        return model.eval(), str(CHECKPOINT.relative_to(REPO))
    torch.manual_seed(0)
    return build_model("regnet20").eval(), "regnet20, fresh weights"


def figure_builders():
    """The dashboard's chart builders when the dashboard is there; plain heat maps otherwise."""
    try:
        from dashboard.inspect_charts import gate_depth_figure, state_grid_figure
    except ImportError:
        import plotly.graph_objects as go

        def state_grid_figure(rows, field, shared_scale=True):
            return [go.Figure(go.Heatmap(z=m.numpy()[::-1], colorscale="RdBu_r"),
                              layout=dict(title=f"{field} stage {r['stage'] + 1} step {r['step'] + 1} {label}"))
                    for r in rows for label, m in r["maps"]]

        return state_grid_figure, None, "plain plotly heat maps"
    return state_grid_figure, gate_depth_figure, "dashboard.inspect_charts"


def states_and_maps(model, x, builders) -> dict[str, float]:
    """What the regulator view computes for one image, part by part (seconds).

    Every state and gate is recorded and mapped; the figures drawn are the
    page's: the hidden state's grid (a heat map per stage and step), one
    gate's grid and the gates along depth.
    """
    state_grid_figure, gate_depth_figure, _ = builders
    parts = {}
    start = time.perf_counter()
    _, trace = ri.record_states(model, x)
    parts["record_states"] = time.perf_counter() - start
    start = time.perf_counter()
    grids = {field: ri.state_grid(trace, field, "mean") for field in ["hidden", "cell", *trace[0].gates]}
    profile = ri.gate_profile(trace)
    parts["state_grid + gate_profile"] = time.perf_counter() - start
    start = time.perf_counter()
    state_grid_figure(grids["hidden"], "hidden", True)
    first_gate = next(iter(trace[0].gates))
    state_grid_figure(grids[first_gate], f"gate {first_gate}", True)
    if gate_depth_figure is not None:
        gate_depth_figure(profile)
    parts["plotly figures"] = time.perf_counter() - start
    parts["total"] = sum(parts.values())
    return parts


def timed_parts(fn, repeats: int) -> tuple[float, dict[str, float]]:
    """(first call's total, median of each part over the next ``repeats`` calls) in seconds."""
    first = fn()["total"]
    runs = [fn() for _ in range(repeats)]
    return first, {k: sorted(r[k] for r in runs)[len(runs) // 2] for k in runs[0]}


def timed(fn, repeats: int) -> tuple[float, float]:
    """(first call, median of the next ``repeats``) in seconds: the first includes lazy set-up."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return first, times[len(times) // 2]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help=f"smoke mode: 1,000 split images instead of {SPLIT_IMAGES:,}")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: every core; quick: 1, which stays fast on a busy machine)")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/[quick/]inspection.json)")
    args = p.parse_args(argv)
    args.threads = args.threads or (1 if args.quick else os.cpu_count())
    torch.set_num_threads(args.threads)
    env = environment(args.threads)
    model, source = load_model()
    builders = figure_builders()
    print(f"{NAME}: {source}, figures by {builders[2]}, {args.threads} thread(s), load average {env['load_average']}")
    images = 1_000 if args.quick else SPLIT_IMAGES
    splits = load_splits("shapes", size=2 * images, val_ratio=0.5, split_seed=0)
    x = splits.val[0][0][None]
    repeats = 3 if args.quick else 7
    maps_first, parts = timed_parts(lambda: states_and_maps(model, x, builders), repeats)
    maps_s = parts["total"]
    ig_first, ig_s = timed(lambda: ri.attribute(model, x, "integrated_gradients", settings=ri.MethodSettings(steps=32)), 1 if args.quick else 3)
    loader = DataLoader(splits.val, batch_size=SPLIT_BATCH)
    with tempfile.TemporaryDirectory(prefix="regnet-bench-cache.") as cache:
        key = ri.cache_key(source, "shapes-val", len(splits.val))
        start = time.perf_counter()
        result = ri.cached(cache, "bench-split", key, lambda: ri.analyze_split(model, loader, splits.info.class_names))
        split_s = time.perf_counter() - start
        start = time.perf_counter()
        again = ri.cached(cache, "bench-split", key, lambda: ri.analyze_split(model, loader, splits.info.class_names))
        cached_s = time.perf_counter() - start
    if again["num_images"] != result["num_images"] or not torch.equal(again["preds"], result["preds"]):
        raise RuntimeError("The cached split analysis differs from the computed one; the cache is broken.")
    split_goal = SPLIT_GOAL_S * images / SPLIT_IMAGES
    scaled = f" (scaled to {images:,} images)" if images != SPLIT_IMAGES else ""
    rows = [
        {"task": "states, gates and their maps, one image", "seconds": maps_s, "first_s": maps_first},
        *({"task": f"  of which {k}", "seconds": v} for k, v in parts.items() if k != "total"),
        {"task": "Integrated Gradients, 32 steps", "seconds": ig_s, "first_s": ig_first},
        {"task": f"analyze_split on {result['num_images']:,} images", "seconds": split_s, "first_s": split_s},
        {"task": "analyze_split again, from the cache", "seconds": cached_s, "first_s": cached_s},
    ]
    summary = [
        goal("record states + state_grid + gate_profile + heat maps (1 image)", maps_s, MAPS_GOAL_S, "s", False,
             note=f"median of {repeats}; first call {maps_first:.2f} s"),
        goal("Integrated Gradients, 32 steps (1 image)", ig_s, IG_GOAL_S, "s", False,
             note=f"first call {ig_first:.2f} s"),
        goal(f"split analyses on {result['num_images']:,} images", split_s, split_goal, "s", False,
             note=f"{result['num_images'] / split_s:.0f} img/s, intact + ablated passes{scaled}"),
        goal("split analyses from the cache", cached_s, CACHED_GOAL_S, "s", False),
    ]
    env["load_average_after"] = load_average()
    payload = {"name": NAME, "quick": args.quick, "environment": env, "model": source, "figures": builders[2],
               "summary": summary, "rows": rows}
    print(format_table(rows, [("task", "task", ""), ("seconds", "seconds (median)", ".3f"),
                              ("first_s", "first call s", ".3f")]))
    print(format_goals(summary))
    path = write_json(args.out or result_path(NAME, args.quick), payload)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
