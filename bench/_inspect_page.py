"""The Inspect page's latencies as a user meets them, timed through AppTest from a widget change to idle.

Run as its own process by ``bench/inspection.py`` (``python bench/_inspect_page.py cold|warm THREADS``),
so that the first open pays the imports a fresh server pays. The figure is the process's CPU time
(``time.process_time``, every thread: the server's time), which a busy shared machine does not inflate
the way it inflates wall-clock time; wall-clock seconds are printed beside it.

* cold: the app's first page, then Inspect at once (the imports still running);
* warm: Inspect opened after the server's background warm-up, then every change a user makes.

Prints one JSON line: a list of {"task", "cpu_s", "wall_s", "goal_s"}.
"""
from __future__ import annotations

import importlib
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMAGE_GOAL_S, OPEN_GOAL_S, OCCLUSION_GOAL_S, QUALITY_GOAL_S = 1.0, 5.0, 3.0, 30.0
SHAPES, CIFAR = "shipped/shapes-regnet20", "shipped/cifar10-regnet20"


def _timed(rows: list[dict], task: str, goal_s: float | None, action) -> None:
    cpu, wall = time.process_time(), time.perf_counter()
    at = action()
    rows.append({"task": task, "cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall,
                 "goal_s": goal_s})
    if at.exception:
        raise RuntimeError(f"{task}: the page raised {at.exception[0].value}")


def _image_changes(at, rows: list[dict]) -> None:
    """Every change that concerns one image, each after the page was idle."""
    changes = [
        ("next image", lambda: at.number_input(key="inspect_index").set_value(1).run()),
        ("state: hidden -> cell", lambda: at.selectbox(key="inspect_field").set_value("cell").run()),
        ("channels: mean -> top-N", lambda: at.selectbox(key="inspect_mode").set_value("top").run()),
        ("gate: i -> f", lambda: at.selectbox(key="inspect_gate").set_value("f").run()),
        ("target class (IG + Grad-CAM on)", lambda: at.selectbox(key="inspect_target").set_value(2).run()),
        ("signed maps", lambda: at.radio(key="inspect_sign").set_value("signed").run()),
    ]
    for task, action in changes:
        _timed(rows, task, IMAGE_GOAL_S, action)
    for method, label in (("saliency", "Saliency"), ("smoothgrad", "SmoothGrad")):
        _timed(rows, f"turn {label} on (first time)", IMAGE_GOAL_S,
               lambda: at.multiselect(key="inspect_methods").select(method).run())
    _timed(rows, "turn Occlusion on (first time, 32x32)", OCCLUSION_GOAL_S,
           lambda: at.multiselect(key="inspect_methods").select("occlusion").run())
    at.multiselect(key="inspect_methods").unselect("occlusion").run()
    _timed(rows, "turn Occlusion on again (computed before)", IMAGE_GOAL_S,
           lambda: at.multiselect(key="inspect_methods").select("occlusion").run())


def _open_tab(at, label: str):
    at.session_state["inspect_tab"] = label  # what a click on the tab sets
    return at.run()


def _split_jobs(at, rows: list[dict]) -> None:
    _timed(rows, "open the Whole split tab", IMAGE_GOAL_S, lambda: _open_tab(at, "Whole split"))
    _timed(rows, "whole-split analyses, shapes (400 images, first time)", None,
           lambda: at.toggle(key=f"inspect_split_{SHAPES}").set_value(True).run())
    _timed(rows, "attribution quality: time the first image (its estimate)", None,
           lambda: at.toggle(key=f"inspect_quality_{SHAPES}").set_value(True).run())
    _timed(rows, "attribution quality, shipped shapes model (32 images x 5 methods)", QUALITY_GOAL_S,
           lambda: at.button(key=f"inspect_do_score_{SHAPES}").click().run())
    _open_tab(at, "One image")
    _timed(rows, "open the shipped CIFAR-10 regnet20 (its 200 sample images)", IMAGE_GOAL_S * 2,
           lambda: at.selectbox(key="inspect_run").set_value(CIFAR).run())


def main(mode: str, threads: int) -> list[dict]:
    import torch
    from streamlit.testing.v1 import AppTest

    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    os.environ["REGNET_RUNS_ROOT"] = tempfile.mkdtemp(prefix="regnet-bench-runs.")  # no cache from before
    at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=900)
    at.run()
    rows: list[dict] = []
    if mode == "warm":
        importlib.import_module("regnet.dashboard.inspect_sections")  # waits for the server's warm-up thread
    _timed(rows, f"first open of Inspect ({mode} server)", OPEN_GOAL_S,
           lambda: at.switch_page("views/inspect.py").run())
    if mode == "warm":
        _image_changes(at, rows)
        _split_jobs(at, rows)
    return rows


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]))))
