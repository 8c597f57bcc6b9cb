"""What keeping freed memory (regnet.allocator.keep_freed_memory) does to a step and a pass, against glibc's default.

The setting is per process and cannot be undone, so each measurement is a
fresh child process, the two settings alternating (default, kept, default,
...). Each child, at one torch thread, times by process CPU time (which
counts the kernel's page-fault work) ``--steps`` interleaved training steps
of resnet20 and regnet20 (lstm/efficient, channels-last, batch 128:
``bench/throughput.py``'s ``Candidate``) and as many of Inspect's split
analyses of regnet20 (``analyze_split``: its folded copy, an intact and an
ablated pass) over two such batches, after one untimed of each, and counts
the minor page faults of each. The table gives, per
setting, the median over its processes and their range; regnet20's step as a
multiple of resnet20's is the headline of ``bench/throughput.py``.

    python bench/allocator.py [--processes 4] [--steps 4]
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import environment, format_table, result_path, write_json

NAME = "allocator"
SETTINGS = ("default", "kept")


def _usage() -> tuple[int, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_minflt, time.process_time()


def _measured(fn) -> tuple[int, float]:
    """(minor page faults, CPU ms) of one call."""
    faults, cpu = _usage()
    fn()
    after_faults, after_cpu = _usage()
    return after_faults - faults, 1000 * (after_cpu - cpu)


def child(setting: str, steps: int) -> dict:
    """One process's figures under ``setting``: medians over ``steps`` of each task."""
    if setting == "kept":
        from regnet.allocator import keep_freed_memory

        keep_freed_memory()
    import torch

    from bench.throughput import Candidate
    from regnet.inspect import analyze_split

    torch.set_num_threads(1)
    resnet = Candidate("resnet20", {}, True, 128)
    regnet = Candidate("regnet20", {"cell": "lstm", "gates": "efficient"}, True, 128)
    batches = [(regnet.x, regnet.y)] * 2
    tasks = {"resnet20 step": resnet.train_step, "regnet20 step": regnet.train_step,
             "regnet20 analyses": lambda: analyze_split(regnet.model, batches, [str(k) for k in range(10)])}
    figures: dict[str, list[tuple[int, float]]] = {name: [] for name in tasks}
    for step in range(steps + 1):
        for name, task in tasks.items():
            measured = _measured(task)
            if step:  # the first of each is untimed: the allocator and oneDNN warming up
                figures[name].append(measured)
    row = {"setting": setting}
    for name, values in figures.items():
        row[f"{name} faults"] = statistics.median(f for f, _ in values)
        row[f"{name} ms"] = statistics.median(ms for _, ms in values)
    row["step ratio"] = statistics.median(b[1] / a[1] for a, b in zip(figures["resnet20 step"],
                                                                       figures["regnet20 step"]))
    return row


def summarise(rows: list[dict]) -> list[dict]:
    """Per setting, each figure's median over the processes and its range."""
    out = []
    for setting in SETTINGS:
        mine = [r for r in rows if r["setting"] == setting]
        summary = {"setting": setting, "processes": len(mine)}
        for key in (k for k in mine[0] if k != "setting"):
            values = sorted(r[key] for r in mine)
            summary[key] = statistics.median(values)
            summary[f"{key} range"] = f"{values[0]:.4g}-{values[-1]:.4g}"
        out.append(summary)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=4, help="child processes per setting")
    parser.add_argument("--steps", type=int, default=4, help="timed steps (and passes) per child")
    parser.add_argument("--quick", action="store_true", help="a smoke run: one process per setting, one step")
    parser.add_argument("--child", choices=SETTINGS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.steps)))
        return {}
    processes, steps = (1, 1) if args.quick else (args.processes, args.steps)
    rows = []
    for _ in range(processes):
        for setting in SETTINGS:
            out = subprocess.run([sys.executable, __file__, "--child", setting, "--steps", str(steps)],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.splitlines()[-1]))
    summary = summarise(rows)
    columns = [("setting", "setting", ""), ("processes", "processes", "d")] + [
        (key, key, ".3g") for key in rows[0] if key != "setting"]
    print(format_table(summary, columns))
    for s in summary:
        print(f"{s['setting']}: regnet20 step / resnet20's {s['step ratio']:.2f}x ({s['step ratio range']}), "
              f"regnet20 step faults {s['regnet20 step faults']:.0f} ({s['regnet20 step faults range']})")
    result = {"name": NAME, "quick": args.quick, "environment": environment(1), "summary": [],
              "processes": rows, "settings": summary}
    write_json(result_path(NAME, args.quick), result)
    return result


if __name__ == "__main__":
    main()
