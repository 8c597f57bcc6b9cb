"""What every benchmark script shares: paths, the machine's description, timing, goals, tables, atomic JSON.

Each script writes ``bench/results/<name>.json`` with the same top level:
``{"name", "quick", "environment", "summary": [goal rows], ...script-specific...}``;
``run_all.py`` prints the ``summary`` rows of every script side by side.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterable, Sequence

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
SHARED_DATA = REPO.parent / "shared" / "data"


def result_path(name: str, quick: bool) -> Path:
    """``bench/results/<name>.json``; smoke runs go to ``results/quick/`` so they never overwrite real figures."""
    return (RESULTS / "quick" if quick else RESULTS) / f"{name}.json"


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages: on a shared machine, how much the timings can be trusted."""
    return [round(x, 2) for x in os.getloadavg()]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment(threads: int | None = None) -> dict:
    """Where and when the figures were taken, including the load average (others share these cores)."""
    return {
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "commit": git_commit(),
        "torch": torch.__version__,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": threads if threads is not None else torch.get_num_threads(),
        "load_average": load_average(),
    }


def goal(name: str, value: float | None, target: float, unit: str = "", higher_is_better: bool = True,
         note: str = "") -> dict:
    """One goal row: PASS/MISS against ``target``, or n/a when the value could not be measured."""
    if value is None:
        status = "n/a"
    else:
        status = "PASS" if (value >= target if higher_is_better else value <= target) else "MISS"
    return {"goal": name, "value": value, "target": target, "unit": unit,
            "comparison": ">=" if higher_is_better else "<=", "status": status, "note": note}


def format_goals(rows: Iterable[dict]) -> str:
    lines = []
    for r in rows:
        value = "n/a" if r["value"] is None else f"{r['value']:.3g}"
        line = f"[{r['status']:>4}] {r['goal']}: {value} {r['unit']} (goal {r['comparison']} {r['target']:g} {r['unit']})"
        lines.append(line + (f"  - {r['note']}" if r.get("note") else ""))
    return "\n".join(lines)


def format_table(rows: Sequence[dict], columns: Sequence[tuple[str, str, str]]) -> str:
    """A plain-text table; ``columns`` are (key, header, format spec), e.g. ("img_s", "img/s", ".0f")."""

    def cell(value, spec: str) -> str:
        if value is None:
            return "-"
        return format(value, spec) if spec else str(value)

    cells = [[cell(r.get(key), spec) for key, _, spec in columns] for r in rows]
    widths = [max([len(header)] + [len(c[i]) for c in cells]) for i, (_, header, _) in enumerate(columns)]
    out = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, ((_, h, _), w) in enumerate(zip(columns, widths)))]
    for c in cells:
        out.append("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(c, widths))))
    return "\n".join(out)


def write_json(path: Path, payload: dict) -> Path:
    """Write ``payload`` atomically (temp file in the same folder, then rename): readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2, default=_jsonable)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _jsonable(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
