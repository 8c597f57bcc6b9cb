"""How fast the regulator lab answers: states and gates of one image, attributions, split analyses, the page.

For regnet20 (the shipped CIFAR-10 checkpoint when present, else fresh
weights; the timings do not depend on the weights):

* one 32x32 image: record every state and gate (``regnet.inspect.record_states``),
  the maps of the hidden and cell states and of every gate (``state_grid``),
  the gates along depth (``gate_profile``), and the plotly figures the
  regulator page draws (the hidden state's heat map per stage and step, one
  gate's, the gates along depth) with the dashboard's own
  ``dashboard.inspect_charts`` builders when present, else one ``go.Heatmap``
  per stage and step; goal under 0.3 s;
* each attribution method on one image at the page's defaults, by process CPU time: Integrated
  Gradients, Saliency, SmoothGrad and Grad-CAM under 1 s, Occlusion (32x32, batched) under 3 s;
* every split-level analysis (``analyze_split``) on 10,000 images of the
  ``shapes`` validation split, batches of 250 as the dashboard loads them;
  goal under 2 minutes, then under 1 s from the disk cache (``regnet.inspect.cached``);
* the Inspect page itself, driven through AppTest in fresh processes with one torch thread, each change
  timed from the widget change to idle by the process's CPU time (``bench/_inspect_page.py``): first
  open under 5 s, every change about one image under 1 s, Occlusion under 3 s, attribution quality
  under 30 s.

    python bench/inspection.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
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
MAPS_GOAL_S, METHOD_GOAL_S, OCCLUSION_GOAL_S, SPLIT_GOAL_S, CACHED_GOAL_S = 0.3, 1.0, 3.0, 120.0, 1.0


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
        from regnet.dashboard.inspect_charts import gate_depth_figure, state_grid_figure
    except ImportError:
        import plotly.graph_objects as go

        def state_grid_figure(rows, field, shared_scale=True):
            return [go.Figure(go.Heatmap(z=m.numpy()[::-1], colorscale="RdBu_r"),
                              layout=dict(title=f"{field} stage {r['stage'] + 1} step {r['step'] + 1} {label}"))
                    for r in rows for label, m in r["maps"]]

        return state_grid_figure, None, "plain plotly heat maps"
    return state_grid_figure, gate_depth_figure, "regnet.dashboard.inspect_charts"


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


def method_rows(model, x) -> list[dict]:
    """Each attribution method's first computation on one image at the page's defaults, by process CPU time."""
    layers = list(ri.attribution_layers(model))
    settings = ri.MethodSettings(layer=next(n for n in reversed(layers) if "regulator" in n))
    baseline = ri.make_baseline(x, "black", (0.5,) * 3, (0.25,) * 3)
    rows = []
    for method in ri.METHODS:
        start = time.process_time()
        ri.attribute(model, x, method, settings=settings, baseline=baseline)
        seconds = time.process_time() - start
        target = OCCLUSION_GOAL_S if method == "occlusion" else METHOD_GOAL_S
        rows.append(goal(f"{ri.METHOD_LABELS[method]} (1 image, defaults)", seconds, target, "s CPU", False))
    return rows


def page_rows() -> list[dict]:
    """The page's latencies from ``bench/_inspect_page.py``, each in a fresh process (cold, then warm),
    with one torch thread so that CPU seconds are not inflated by threads waiting on each other."""
    rows = []
    for mode in ("cold", "warm"):
        done = subprocess.run([sys.executable, str(REPO / "bench" / "_inspect_page.py"), mode, "1"],
                              capture_output=True, text=True, cwd=REPO, check=True)
        rows += json.loads(done.stdout.strip().splitlines()[-1])
    return rows


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
    method_goals = method_rows(model, x)
    page = page_rows()
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
        {"task": f"analyze_split on {result['num_images']:,} images", "seconds": split_s, "first_s": split_s},
        {"task": "analyze_split again, from the cache", "seconds": cached_s, "first_s": cached_s},
    ]
    summary = [
        goal("record states + state_grid + gate_profile + heat maps (1 image)", maps_s, MAPS_GOAL_S, "s", False,
             note=f"median of {repeats}; first call {maps_first:.2f} s"),
        *method_goals,
        goal(f"split analyses on {result['num_images']:,} images", split_s, split_goal, "s", False,
             note=f"{result['num_images'] / split_s:.0f} img/s, intact + ablated passes{scaled}"),
        goal("split analyses from the cache", cached_s, CACHED_GOAL_S, "s", False),
        *(goal(f"page: {r['task']}", r["cpu_s"], r["goal_s"], "s CPU", False, note=f"{r['wall_s']:.2f} s wall")
          for r in page if r["goal_s"] is not None),
    ]
    rows += [{"task": f"page: {r['task']} (CPU s)", "seconds": r["cpu_s"], "first_s": r["wall_s"]} for r in page]
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
