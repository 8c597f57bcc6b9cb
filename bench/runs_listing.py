"""Listing 10,000 run folders: the dashboard's first scan, a rescan, and the Runs page rendered again.

Issue 11's goals: the first scan takes < 5 s and the Runs page renders 10,000 run folders in < 1 s after
it. The runs are written here in the contract's layout (status.json, config.yaml, metrics.jsonl), 1% of
them running (this very process, so they are alive), 1% with a damaged status.json. Every figure is
given as wall time and as this process's CPU time (``time.process_time``), which other people's work on
a shared machine does not inflate; the files were just written, so the first scan reads them from the
page cache (a cold disk adds its seek times on top).

    python bench/runs_listing.py [--quick] [--runs N]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import REPO, environment, format_goals, format_table, goal, load_average, result_path, write_json

NAME = "runs_listing"
APP = REPO / "dashboard" / "app.py"
CONFIG_TEXT = ("model: {name: regnet20, options: {cell: lstm, gates: efficient, se: false}}\n"
               "data: {name: shapes, root: data}\ntrain: {epochs: 10, batch_size: 128}\n")


def make_runs(root: Path, count: int) -> None:
    """``count`` run folders: mostly finished, 1% running (this process), 1% with a damaged status.json."""
    from regnet.runs import process_identity

    me = process_identity()
    for index in range(count):
        run_dir = root / f"20260101-{index:06d}-regnet20-shapes"
        run_dir.mkdir(parents=True)
        state = "running" if index % 100 == 1 else "finished"
        status = {"state": state, **me, "run_id": run_dir.name, "model": "regnet20", "dataset": "shapes",
                  "epoch": 10, "epochs": 10, "step": 160, "steps_per_epoch": 16, "started_at": 1.7e9 + index,
                  "updated_at": 1.7e9 + index + 60, "finished_at": 1.7e9 + index + 60, "elapsed_s": 60.0,
                  "best_metric": "val_top1", "best_value": 0.5 + index / (4 * count), "best_epoch": 9,
                  "images_per_s": 300.0, "params": 308_698, "macs": 48_939_648, "error": None}
        (run_dir / "status.json").write_text("[1, 2]" if index % 100 == 2 else json.dumps(status))
        (run_dir / "config.yaml").write_text(CONFIG_TEXT)
        (run_dir / "metrics.jsonl").write_text(json.dumps({"kind": "epoch", "epoch": 1, "step": 16}) + "\n")


def timed(function) -> tuple[object, float, float]:
    """(result, wall seconds, CPU seconds of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def measure(root: Path, count: int) -> list[dict]:
    from streamlit.testing.v1 import AppTest

    from regnet.dashboard.run_listing import RunIndex, discover_runs, runs_table

    rows = []
    index = RunIndex()
    runs, wall, cpu = timed(lambda: discover_runs(root, None, index))
    assert len(runs) == count, len(runs)
    rows.append({"step": "first scan (discover_runs, empty index)", "wall_s": wall, "cpu_s": cpu})
    _, wall, cpu = timed(lambda: discover_runs(root, None, index))
    rows.append({"step": "rescan, nothing changed", "wall_s": wall, "cpu_s": cpu})
    for run_dir in sorted(root.iterdir())[3:13]:  # past the damaged one (index 2)
        status = json.loads((run_dir / "status.json").read_text())
        (run_dir / "status.json").write_text(json.dumps({**status, "epoch": 11}))
    _, wall, cpu = timed(lambda: discover_runs(root, None, index))
    rows.append({"step": "rescan, 10 statuses changed", "wall_s": wall, "cpu_s": cpu})
    _, wall, cpu = timed(lambda: runs_table(runs))
    rows.append({"step": "runs_table (the page's table)", "wall_s": wall, "cpu_s": cpu})

    os.environ.update(REGNET_RUNS_ROOT=str(root), REGNET_CHECKPOINTS_ROOT=str(root / "none"))
    at = AppTest.from_file(str(APP), default_timeout=300)
    _, wall, cpu = timed(at.run)
    assert not at.exception and len(at.dataframe[0].value) == count, at.exception
    rows.append({"step": "Runs page, first render (imports, first scan)", "wall_s": wall, "cpu_s": cpu})
    renders = [timed(at.run)[1:] for _ in range(3)]
    assert not at.exception
    rows.append({"step": "Runs page, rendered again (median of 3)", "wall_s": sorted(r[0] for r in renders)[1],
                 "cpu_s": sorted(r[1] for r in renders)[1]})
    return rows


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke mode: 500 runs")
    p.add_argument("--runs", type=int, default=None, help="how many run folders (default 10,000)")
    p.add_argument("--out", type=Path, help="where to write the JSON (default bench/results/runs_listing.json)")
    args = p.parse_args(argv)
    count = args.runs or (500 if args.quick else 10_000)
    env = environment()
    print(f"{NAME}: {count:,} run folders, load average {env['load_average']}")
    root = Path(tempfile.mkdtemp(prefix="regnet-runs-listing-")) / "runs"
    try:
        _, wall, _ = timed(lambda: make_runs(root, count))
        print(f"  wrote {count:,} run folders in {wall:.1f} s")
        rows = measure(root, count)
    finally:
        shutil.rmtree(root.parent, ignore_errors=True)
    by_step = {row["step"]: row for row in rows}
    first = by_step["first scan (discover_runs, empty index)"]
    again = by_step["Runs page, rendered again (median of 3)"]
    summary = [
        goal(f"first scan of {count:,} runs (CPU)", first["cpu_s"], 5.0, "s", higher_is_better=False,
             note=f"wall {first['wall_s']:.2f} s"),
        goal(f"Runs page re-render with {count:,} runs (CPU)", again["cpu_s"], 1.0, "s", higher_is_better=False,
             note=f"wall {again['wall_s']:.2f} s"),
    ]
    print(format_table(rows, [("step", "step", ""), ("wall_s", "wall s", ".3f"), ("cpu_s", "CPU s", ".3f")]))
    print(format_goals(summary))
    env["load_average_after"] = load_average()
    payload = {"name": NAME, "quick": args.quick, "environment": env, "runs": count, "summary": summary, "rows": rows}
    path = write_json(args.out or result_path(NAME, args.quick), payload)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
