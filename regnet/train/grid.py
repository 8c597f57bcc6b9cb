"""Grid search: every combination of a few overrides, each an ordinary run folder, then a ranked table.

``--grid optim.lr=0.1,0.05 --grid model.options.cell=lstm,gru`` makes four
runs. Every combination's config is built and checked before the first run
starts, so a typo in the last value fails at once, not after hours. A run that
fails is recorded in the table and the grid goes on.
"""
from __future__ import annotations

import itertools
import re
import time
from pathlib import Path

from regnet.runs import atomic_write_json

from .build import check_names
from .config import Config, build_config, config_to_dict
from .loop import RunFailed, train
from .evaluate import compare_runs, rank_rows


def split_values(text: str) -> list[str]:
    """Split ``a,b,[c,d]`` on the commas outside brackets and braces (YAML lists and maps stay whole)."""
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p.strip() for p in parts]


def parse_grid(specs: list[str]) -> list[tuple[str, list[str]]]:
    """``["optim.lr=0.1,0.05", ...]`` -> ``[("optim.lr", ["0.1", "0.05"]), ...]`` (values still YAML text)."""
    axes = []
    for spec in specs:
        key, sep, values = spec.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise ValueError(f"Grid axis {spec!r} is not of the form KEY=V1,V2,..., e.g. optim.lr=0.1,0.05.")
        axes.append((key.strip(), split_values(values)))
    if not axes:
        raise ValueError("A grid needs at least one --grid KEY=V1,V2 axis.")
    return axes


def _label(key: str, value: str) -> str:
    """``lr_0.001``: within the run-id rule, so every grid run is listed like any other run."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", f"{key.split('.')[-1]}_{value}")


def plan_grid(base: Config, specs: list[str], grid_id: str) -> list[tuple[str, list[str], Config]]:
    """(run id, overrides, config) for every combination, each config already validated."""
    axes = parse_grid(specs)
    plan = []
    for index, values in enumerate(itertools.product(*(v for _, v in axes)), start=1):
        overrides = [f"{key}={value}" for (key, _), value in zip(axes, values)]
        config = build_config(*overrides, base=base)
        check_names(config)
        run_id = f"{grid_id}-{index:02d}-" + "-".join(_label(key, v) for (key, _), v in zip(axes, values))
        config.run.run_id = run_id
        plan.append((run_id, overrides, config))
    return plan


def run_grid(base: Config, specs: list[str], *, grid_id: str | None = None, progress: bool | None = None
             ) -> tuple[list[dict], Path]:
    """Train every combination in turn; returns the ranked rows and the grid's summary file."""
    grid_id = grid_id or time.strftime("grid-%Y%m%d-%H%M%S")
    plan = plan_grid(base, specs, grid_id)
    runs_root = Path(base.run.runs_root)
    existing = [run_id for run_id, _, _ in plan if (runs_root / run_id).exists()]
    if existing:
        raise ValueError(f"Run folder {runs_root / existing[0]} already exists and is never overwritten; "
                         f"choose another --grid-id.")
    run_dirs, overrides_of = [], {}
    for run_id, overrides, config in plan:
        try:
            path = train(config, progress=progress)
        except RunFailed as failure:
            path = failure.run_dir
        run_dirs.append(path)
        overrides_of[path.name] = overrides
    rows = rank_rows(compare_runs(run_dirs))
    for row in rows:
        row["overrides"] = " ".join(overrides_of[row["run"]])
    summary = runs_root / "grids" / f"{grid_id}.json"
    summary.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(summary, {"grid_id": grid_id, "axes": list(specs),
                                "base_config": config_to_dict(base),
                                "ranking": rows})
    return rows, summary


def format_grid(rows: list[dict]) -> str:
    lines = [f"{'rank':>4}  {'overrides':<44} {'state':<9} {'best':>8} {'epoch':>5} {'final top-1':>11} "
             f"{'time':>7}  run"]
    for rank, r in enumerate(rows, start=1):
        best = f"{r['best_value']:.4f}" if r["best_value"] is not None else "-"
        final = f"{r['final_val_top1']:.4f}" if r["final_val_top1"] is not None else "-"
        time_s = f"{r['train_time_s']:.0f}s" if r["train_time_s"] is not None else "-"
        lines.append(f"{rank:>4}  {r['overrides']:<44} {r['state'] or '-':<9} {best:>8} {r['best_epoch'] or '-':>5} "
                     f"{final:>11} {time_s:>7}  {r['run']}")
    if rows:
        lines.append(f"(ranked by best {rows[0]['best_metric']})")
    return "\n".join(lines)
