"""Run every benchmark script and print their goals side by side.

Scripts are discovered, not listed: every ``bench/*.py`` that defines a
``main()`` (except this file and ``_``-prefixed helpers) runs in its own
process, so one script's threads and memory never colour another's figures.
A script is skipped, with its reason, when

* it defines ``skip_reason(quick: bool) -> str | None`` and that returns a reason
  (missing data, no GPU, ...), or
* it appears in ``NEEDS`` below with a requirement this machine lacks, or
* this is a ``--quick`` run and the script has no ``--quick`` flag.

Each script writes ``bench/results/[quick/]<name>.json`` with a ``summary`` list of
goal rows (see ``bench/_common.py``); this runner collects them into one table and
into ``bench/results/[quick/]run_all.json``.

    python bench/run_all.py [--quick] [--only throughput,inspection] [--skip data_pipeline]
"""
from __future__ import annotations

import argparse
import ast
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import REPO, environment, load_average, read_json, result_path, write_json

NAME = "run_all"
BENCH = REPO / "bench"
# Order: scripts that others read come first (data_pipeline compares against throughput's figures).
ORDER = ("throughput", "data_pipeline", "inspection")
# Requirements of scripts that cannot say so themselves (they have no skip_reason()); "tool": not a benchmark.
NEEDS = {"cifar_paper": "cuda", "ship_checkpoint": "tool", "ship_samples": "tool"}


def discover() -> list[Path]:
    """Every bench script with a top-level ``main()``, in ``ORDER`` first, then by name."""
    scripts = []
    for path in sorted(BENCH.glob("*.py")):
        if path.stem == NAME or path.stem.startswith("_"):
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        if any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body):
            scripts.append(path)
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(scripts, key=lambda p: (rank.get(p.stem, len(ORDER)), p.stem))


def defines(path: Path, name: str) -> bool:
    tree = ast.parse(path.read_text(), filename=str(path))
    return any(isinstance(node, ast.FunctionDef) and node.name == name for node in tree.body)


def skip_reason(path: Path, quick: bool) -> str | None:
    need = NEEDS.get(path.stem)
    if need == "tool":
        return "a tool, not a benchmark"
    if need == "cuda":
        import torch

        if not torch.cuda.is_available():
            return "needs a CUDA GPU"
    if quick and "--quick" not in path.read_text():
        return "has no --quick mode"
    if defines(path, "skip_reason"):
        spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.skip_reason(quick)
    return None


def run(path: Path, quick: bool) -> dict:
    """Run one script in its own process; its goal rows come from the JSON it writes."""
    cmd = [sys.executable, str(path)] + (["--quick"] if quick else [])
    print(f"\n=== {path.stem}: {' '.join(cmd[1:])} (load {load_average()[0]})", flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO)
    seconds = time.perf_counter() - start
    data = read_json(result_path(path.stem, quick))
    fresh = data is not None and result_path(path.stem, quick).stat().st_mtime >= time.time() - seconds - 1
    return {"script": path.stem, "returncode": proc.returncode, "seconds": seconds,
            "summary": data.get("summary", []) if fresh else [],
            "status": "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="run every script in its smoke mode")
    p.add_argument("--only", default="", help="comma-separated script names to run (default: all)")
    p.add_argument("--skip", default="", help="comma-separated script names not to run")
    args = p.parse_args(argv)
    only = {s for s in args.only.split(",") if s}
    skip = {s for s in args.skip.split(",") if s}
    unknown = (only | skip) - {path.stem for path in discover()}
    if unknown:
        p.error(f"no benchmark script named {', '.join(sorted(unknown))}; "
                f"choose from {', '.join(path.stem for path in discover())}.")
    env = environment()
    results = []
    for path in discover():
        if (only and path.stem not in only) or path.stem in skip:
            continue
        reason = skip_reason(path, args.quick)
        if reason:
            print(f"\n=== {path.stem}: skipped ({reason})")
            results.append({"script": path.stem, "status": f"skipped: {reason}", "summary": []})
            continue
        results.append(run(path, args.quick))
    env["load_average_after"] = load_average()
    print("\n=== all benchmarks" + (" (quick)" if args.quick else "") + f", load average {env['load_average']} "
          f"-> {env['load_average_after']}")
    for r in results:
        took = f", {r['seconds']:.0f} s" if "seconds" in r else ""
        print(f"{r['script']}: {r['status']}{took}")
        for g in r["summary"]:
            value = "n/a" if g["value"] is None else f"{g['value']:.3g}"
            print(f"  [{g['status']:>4}] {g['goal']}: {value} {g['unit']} (goal {g['comparison']} {g['target']:g})")
    payload = {"name": NAME, "quick": args.quick, "environment": env, "results": results,
               "summary": [g for r in results for g in r["summary"]]}
    write_json(result_path(NAME, args.quick), payload)
    failed = [r["script"] for r in results if r["status"].startswith("failed")]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)
    return payload


if __name__ == "__main__":
    main()
