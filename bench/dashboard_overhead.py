"""Does following a run in the dashboard slow its training, and how soon does a new metric show?

* Throughput: the same short training run (``python -m regnet train --config configs/shapes_regnet20.yaml``,
  one epoch of a smaller ``shapes`` set, CPU) alone, and while the dashboard's Live page follows it in
  Chromium. Alone means no dashboard and no browser at all; watched means a fresh ``streamlit run`` server
  (warmed up by one Runs page load, so its first imports do not land on the run) and Chromium, then the Live
  page opened on the run as soon as its status says running, open until the run ends. Alone and watched
  runs alternate (alone, watched, alone, watched, ...) so that the drift of the other processes' load on
  this shared machine falls on both alike. The figure is each run's steady images/s (its step lines after
  its first ``SETTLE_S`` seconds of training, which hold the warm-up and the page's first load: a user opens
  the page once and then watches for minutes); goal: watched / alone >= 0.97. The whole-epoch figure (the
  epoch line, the page's first load included) is reported beside it.
* What following costs (the goal): the CPU time of the dashboard's processes (the Streamlit server and
  Chromium; Playwright's driver, which a user's browser does not have, is reported beside it), read from /proc, in CPU-seconds per second, server and browser
  together, at most ``CPU_GOAL`` (3 % of a 2-core machine). Measured on a probe run that is fed a step
  line every ``LINE_EVERY_S`` seconds (as the measured training writes them on an idle machine) while its
  Live page follows it: what the page does depends on how often lines come, and a fed run brings them
  at the same rate whatever else loads the machine, where a starved training run would write few and
  flatter the page. The same figure for the watched training runs is reported beside it.
  ``--follow-only`` skips the training pairs (for a machine too busy to train at its speed).
* Latency: a step line appended to a second, fixture run's metrics.jsonl until its point is drawn on that
  run's Live page (a stand-in process keeps the fixture run "running"). Each line is appended at a random
  moment of the page's refresh timer (``REGNET_LIVE_REFRESH_S``, default 4 s), so the median is that of a
  user's wait; goal: at most ``LATENCY_GOAL`` (3 s: W&B users see points within seconds).

The load averages before and after every run go into the JSON: other people's processes share the cores,
and on a busy machine the run-to-run spread of images/s can dwarf the dashboard's share.

    python bench/dashboard_overhead.py [--quick] [--follow-only]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._browser import CHROMIUM, chromium, dashboard, points, wait_for
from bench._common import REPO, environment, format_goals, format_table, goal, load_average, result_path, write_json
from regnet.train.config import Config, save_config

NAME = "dashboard_overhead"
CONFIG = "configs/shapes_regnet20.yaml"
RATIO_GOAL = 0.97
CPU_GOAL = 0.06  # CPU-s/s of the dashboard's server and browser processes together while following a run
LATENCY_GOAL = 3.0  # s from a metrics line written to its point drawn in the open Live page (median)
PROBE_RUN = "latency-probe"
# (images in the shapes set, 90% of them trained on; alone/watched pairs; step-line interval; latency samples)
# The watched run lasts ~45 s of training: the Live page loads in its first SETTLE_S seconds, then checks it
# every 4 s (its default).
FULL = {"size": 9000, "pairs": 3, "log_every": 2, "latency_samples": 15, "follow_s": 120.0}
SETTLE_S = 8.0
QUICK = {"size": 200, "pairs": 1, "log_every": 1, "latency_samples": 3, "follow_s": 20.0}
# The fed probe run: a step line as often as the measured training writes one on an idle machine (log_every 2,
# batch 64, ~170 images/s), an epoch line every EPOCH_EVERY steps.
LINE_EVERY_S = 0.75
EPOCH_EVERY = 40


def skip_reason(quick: bool) -> str | None:
    """Why this machine cannot run the benchmark (for bench/run_all.py), or None."""
    if not CHROMIUM.exists():
        return f"needs Chromium at {CHROMIUM}"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "needs the playwright Python package"
    return None


@contextmanager
def training(runs: Path, run_id: str, settings: dict, log: Path) -> Iterator[subprocess.Popen]:
    """The measured run, in its own session so that a failed benchmark stops it and anything it started."""
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "regnet", "train", "--config", CONFIG, "--device", "cpu", "--epochs", "1",
             "--set", f"data.size={settings['size']}", "--set", "data.workers=0",
             "--set", f"train.log_every={settings['log_every']}", "--runs-root", str(runs), "--run-id", run_id],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


def finish_training(process: subprocess.Popen, log: Path, timeout: float = 1800) -> None:
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"the training run took over {timeout:.0f} s; see {log}") from None
    if code != 0:
        raise RuntimeError(f"the training run failed (exit {code}):\n{log.read_text()[-2000:]}")


def status_of(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (OSError, json.JSONDecodeError):  # not written yet
        return {}


def throughput(run_dir: Path) -> dict:
    """The run's images/s: steady (step lines after its first ``SETTLE_S`` seconds of training, by which time a
    watched run's Live page has loaded and follows it) and over the whole epoch (the epoch line: train images
    / training seconds, the page's first load included)."""
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    [epoch] = [line for line in lines if line["kind"] == "epoch"]
    steps = [line for line in lines if line["kind"] == "step"]
    settled = [line for line in steps if line["time"] >= steps[0]["time"] + SETTLE_S]
    if len(settled) < 3:
        raise RuntimeError(f"{run_dir.name} logged {len(settled)} step lines after its first {SETTLE_S} s; "
                           "the benchmark needs at least 3 (a larger --set data.size).")
    # Each step line covers the window since the line before; its images are its rate times its length.
    windows = [(line["images_per_s"] * (line["time"] - previous["time"]), line["time"] - previous["time"])
               for previous, line in zip(settled, settled[1:])]
    return {"images_per_s": sum(n for n, _ in windows) / sum(t for _, t in windows),
            "epoch_images_per_s": epoch["images_per_s"], "train_s": status_of(run_dir).get("elapsed_s"),
            "first_step_time": steps[0]["time"]}


def dashboard_cpu(bench: int, server: int, training: int) -> dict[str, dict[int, float]]:
    """CPU seconds (user + system) so far of the dashboard's live processes, {"server"|"browser": {pid: s}}.

    The server is `streamlit run` and what it starts; the browser is Chromium's processes; the driver is
    Playwright's (node), which relays the browser to this script: a user's browser has none, so it is
    reported beside the goal, not in it. Linux /proc; a process that exits in
    between takes its seconds with it (the dashboard's processes live through a watched run).
    """
    tick = os.sysconf("SC_CLK_TCK")
    parent, used = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # gone meanwhile
            continue
        fields = text[text.rindex(")") + 2:].split()  # from field 3 (state) on: ppid, ..., utime, stime
        pid = int(stat.parent.name)
        parent[pid], used[pid] = int(fields[1]), (int(fields[11]) + int(fields[12])) / tick
    groups: dict[str, dict[int, float]] = {"server": {}, "browser": {}, "driver": {}}
    for pid, seconds in used.items():
        ancestor = pid
        while ancestor > 1 and ancestor not in (bench, server, training):
            ancestor = parent.get(ancestor, 0)
        if ancestor == server:
            groups["server"][pid] = seconds
        elif ancestor == bench and pid != bench:
            groups["driver" if _command(pid).startswith("node") else "browser"][pid] = seconds
    return groups


def _command(pid: int) -> str:
    """The process's command name ("node-MainThread" for Playwright's driver), "" once it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def cores_used(before: dict, after: dict, seconds: float) -> dict[str, float]:
    """Mean cores each group of processes kept busy between two ``dashboard_cpu`` snapshots."""
    return {group: sum(t - before[group].get(pid, 0.0) for pid, t in after[group].items()) / seconds
            for group in after}


def warm_up(browser, url: str) -> None:
    """One Runs page load: a fresh server's first script run imports pandas, plotly and torch."""
    page = browser.new_page()
    page.goto(url)
    page.get_by_role("heading", name="Runs", exact=True).wait_for(timeout=120_000)
    page.close()


def run_once(kind: str, index: int, tmp: Path, settings: dict) -> dict:
    """One training run, ``alone`` or ``watched`` by the Live page; returns its figures."""
    runs = tmp / "runs"
    run_id = f"{index:02d}-{kind}"
    log = tmp / f"{run_id}.log"
    load_before, started = load_average(), time.monotonic()
    browser_points = dashboard_cores = None
    if kind == "alone":
        with training(runs, run_id, settings, log) as process:
            finish_training(process, log)
    else:
        env = {"REGNET_RUNS_ROOT": str(runs), "REGNET_CHECKPOINTS_ROOT": str(tmp / "no-checkpoints")}
        with chromium() as browser, dashboard(env, tmp / f"{run_id}-streamlit.log") as app:
            warm_up(browser, app.url)
            with training(runs, run_id, settings, log) as process:
                def snapshot() -> tuple[float, dict]:
                    return time.monotonic(), dashboard_cpu(os.getpid(), app.process.pid, process.pid)

                wait_for(lambda: status_of(runs / run_id).get("state") == "running" or process.poll() is not None,
                         300, "the run to start")
                opened = snapshot()
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(f"{app.url}/live?run={run_id}")
                first = wait_for(lambda: points(page), 120, "the Live page's first points")
                following = snapshot()
                following_wall = time.time()
                finish_training(process, log)
                ended = snapshot()
            # The page must have followed the run, not just drawn it once.
            last = wait_for(lambda: points(page) > first and points(page), 30, "the Live page to gain points")
            browser_points = [first, last]
            # Over the whole watch (the page's first load included), and once the page was following.
            dashboard_cores = {"watch": cores_used(opened[1], ended[1], ended[0] - opened[0]),
                               "following": cores_used(following[1], ended[1], ended[0] - following[0])}
    figures = throughput(runs / run_id)
    if kind == "watched":
        figures["page_following_after_s"] = following_wall - figures["first_step_time"]
        if figures["page_following_after_s"] > SETTLE_S:
            print(f"  warning: the Live page followed {run_id} only {figures['page_following_after_s']:.1f} s into "
                  f"training, after the {SETTLE_S:g} s the steady figure skips", flush=True)
    print(f"  {run_id}: {figures['images_per_s']:.1f} img/s steady, {figures['epoch_images_per_s']:.1f} img/s "
          f"over the epoch, {figures['train_s']:.1f} s training, {time.monotonic() - started:.0f} s in all, "
          f"load {load_before[0]}", flush=True)
    return {"run": run_id, "kind": kind, **figures, "seconds": time.monotonic() - started,
            "dashboard_cores": dashboard_cores, "browser_points": browser_points,
            "load_average_before": load_before, "load_average_after": load_average()}


def write_probe_run(root: Path, pid: int) -> Path:
    """A run folder that the dashboard sees as running (``pid`` is alive and mentions regnet)."""
    folder = root / PROBE_RUN
    folder.mkdir(parents=True)
    save_config(Config(), folder / "config.yaml")
    now = time.time()
    (folder / "status.json").write_text(json.dumps({
        "state": "running", "pid": pid, "run_id": PROBE_RUN, "model": "regnet20", "dataset": "shapes", "epoch": 0,
        "epochs": 1, "step": 5, "steps_per_epoch": 1000, "started_at": now, "updated_at": now, "finished_at": None,
        "elapsed_s": 5.0, "best_metric": "val_top1", "best_value": None, "best_epoch": None, "images_per_s": 100.0,
        "params": 0, "macs": 0, "error": None}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(step_line(step)) + "\n" for step in range(1, 6)))
    return folder


def step_line(step: int) -> dict:
    return {"kind": "step", "epoch": 1, "step": step, "time": time.time(), "train_loss": 2.3 / step, "lr": 0.1,
            "images_per_s": 100.0}


def epoch_line(step: int) -> dict:
    return {"kind": "epoch", "epoch": step // EPOCH_EVERY, "step": step, "time": time.time(), "train_loss": 1.0,
            "train_top1": 0.3, "val_loss": 1.1, "val_top1": 0.3, "val_top5": 0.8, "val_macro_f1": 0.3, "lr": 0.1,
            "epoch_time_s": 30.0, "images_per_s": 100.0}


@contextmanager
def feeding(metrics: Path, first_step: int) -> Iterator[None]:
    """Append a step line every ``LINE_EVERY_S`` seconds (and an epoch line every ``EPOCH_EVERY`` steps), as the
    measured training run writes them on an idle machine, until the block ends."""
    stop = threading.Event()

    def feed() -> None:
        step = first_step
        while not stop.wait(LINE_EVERY_S):
            lines = [step_line(step)] + ([epoch_line(step)] if step % EPOCH_EVERY == 0 else [])
            with open(metrics, "a") as handle:
                handle.write("".join(json.dumps(line) + "\n" for line in lines))
            step += 1

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def probe_session(tmp: Path, samples: int, refresh_s: float, follow_s: float) -> tuple[list[float], dict]:
    """On the probe run's Live page: what following it costs while it is fed like a training run (CPU-s/s of
    the server and the browser), then the seconds from a step line appended to its point in the browser."""
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)", "regnet-latency-probe"],
                                start_new_session=True)
    try:
        metrics = write_probe_run(tmp / "runs", stand_in.pid) / "metrics.jsonl"
        env = {"REGNET_RUNS_ROOT": str(tmp / "runs"), "REGNET_CHECKPOINTS_ROOT": str(tmp / "no-checkpoints")}
        with chromium() as browser, dashboard(env, tmp / "latency-streamlit.log") as app:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{app.url}/live?run={PROBE_RUN}")
            wait_for(lambda: points(page), 120, "the probe run's Live charts")
            with feeding(metrics, 6):
                time.sleep(refresh_s)  # the first check after the page's load
                start, before = time.monotonic(), dashboard_cpu(os.getpid(), app.process.pid, stand_in.pid)
                time.sleep(follow_s)
                cost = cores_used(before, dashboard_cpu(os.getpid(), app.process.pid, stand_in.pid),
                                  time.monotonic() - start)
            phase = random.Random(0)
            latencies = []
            for step in range(100_000, 100_000 + samples):
                time.sleep(phase.uniform(0, refresh_s))  # a random moment of the page's refresh timer
                before_points = points(page)
                with open(metrics, "a") as handle:
                    handle.write(json.dumps(step_line(step)) + "\n")
                written = time.monotonic()
                wait_for(lambda: points(page) > before_points, 30, "the new metric line in the browser",
                         interval=0.02)
                latencies.append(time.monotonic() - written)
            return latencies, cost
    finally:
        stand_in.kill()
        stand_in.wait()


def live_refresh_s() -> float:
    """The Live page's refresh interval, read as the dashboard reads it.

    Imported quietly: outside `streamlit run`, importing the dashboard warns that there is no Streamlit runtime.
    """
    import streamlit.logger

    streamlit.logger.set_log_level("error")
    from regnet.dashboard import ui

    return ui.live_refresh_s()


def training_goals(runs: list[dict]) -> tuple[list[dict], dict | None]:
    """The watched/alone throughput goal and the dashboard's cores while watching real training runs."""
    if not runs:
        return [], None

    def ratio(key: str) -> tuple[float, list[float]]:
        """Mean watched over mean alone, and each pair's (watched over the alone run just before it)."""
        alone = [r[key] for r in runs if r["kind"] == "alone"]
        watched = [r[key] for r in runs if r["kind"] == "watched"]
        return statistics.mean(watched) / statistics.mean(alone), [w / a for a, w in zip(alone, watched)]

    steady, pair_ratios = ratio("images_per_s")
    whole_epoch, _ = ratio("epoch_images_per_s")
    watched = [r["dashboard_cores"] for r in runs if r["kind"] == "watched"]
    cores = {span: {group: statistics.mean(w[span][group] for w in watched) for group in ("server", "browser")}
             for span in ("watch", "following")}
    rows = [{**r, "load": r["load_average_before"][0], **{
        f"{group}_{span}": (r["dashboard_cores"] or {}).get(span, {}).get(group)
        for group in ("server", "browser") for span in ("watch", "following")}} for r in runs]
    print(format_table(rows, [("run", "run", ""), ("images_per_s", "img/s steady", ".1f"),
                              ("epoch_images_per_s", "img/s epoch", ".1f"), ("train_s", "train s", ".1f"),
                              ("server_watch", "server cores", ".2f"), ("browser_watch", "browser cores", ".2f"),
                              ("server_following", "server (following)", ".2f"),
                              ("browser_following", "browser (following)", ".2f"), ("seconds", "wall s", ".0f"),
                              ("load", "load 1 min", ".2f")]))
    note = (f"pairs {', '.join(f'{r:.3f}' for r in pair_ratios)}; over whole epochs {whole_epoch:.3f}; while "
            f"following these runs the dashboard used {sum(cores['following'].values()):.3f} CPU-s/s (server "
            f"{cores['following']['server']:.3f}, browser {cores['following']['browser']:.3f}), "
            f"{sum(cores['watch'].values()):.3f} over the whole watch")
    return [goal("training images/s watched by the Live page / alone", steady, RATIO_GOAL, "x", note=note)], cores


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke mode: a tiny run, one alone/watched pair")
    p.add_argument("--follow-only", action="store_true",
                   help="skip the alone/watched training pairs (on a machine too busy to train at its speed): "
                        "only the cost of following the fed probe run, and the latency")
    args = p.parse_args(argv)
    reason = skip_reason(args.quick)
    if reason:
        p.error(f"this benchmark {reason}; install it or skip the benchmark.")
    settings = {**(QUICK if args.quick else FULL), **({"pairs": 0} if args.follow_only else {})}
    refresh_s = live_refresh_s()
    env = environment()
    started = time.perf_counter()
    print(f"{NAME}: regnet20 on shapes ({settings['size']} images, 1 epoch), {settings['pairs']} alone/watched "
          f"pair(s), {settings['follow_s']:g} s following the fed probe run; load average {env['load_average']}",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="regnet-overhead-") as tmp_name:
        tmp = Path(tmp_name)
        runs = [run_once(kind, 2 * pair + offset, tmp, settings)
                for pair in range(settings["pairs"]) for offset, kind in enumerate(("alone", "watched"))]
        latencies, following = probe_session(tmp, settings["latency_samples"], refresh_s, settings["follow_s"])
    training, cores = training_goals(runs)
    latency = statistics.median(latencies)
    summary = [
        goal("dashboard CPU while the Live page follows a run (server + browser)",
             following["server"] + following["browser"], CPU_GOAL, "CPU-s/s", higher_is_better=False,
             note=f"server {following['server']:.3f}, browser {following['browser']:.3f} (and Playwright's driver "
                  f"{following['driver']:.3f}, not counted); the probe run fed a step line every {LINE_EVERY_S:g} s "
                  f"for {settings['follow_s']:g} s, checked every {refresh_s:g} s"),
        *training,
        goal("metric line written -> shown in the browser (median)", latency, LATENCY_GOAL, "s",
             higher_is_better=False, note=f"Live page checks every {refresh_s:g} s; {len(latencies)} lines"),
    ]
    print(f"latency samples (s): {', '.join(f'{x:.2f}' for x in latencies)}")
    print(format_goals(summary))
    env["load_average_after"] = load_average()
    payload = {"name": NAME, "quick": args.quick, "follow_only": args.follow_only, "environment": env,
               "settings": {**settings, "config": CONFIG, "refresh_s": refresh_s, "line_every_s": LINE_EVERY_S},
               "runs": runs, "dashboard_cores": cores, "following_probe_cpu_s_per_s": following,
               "latency_s": latencies, "latency_median_s": latency, "seconds": time.perf_counter() - started,
               "summary": summary}
    path = write_json(result_path(NAME, args.quick), payload)
    print(f"wrote {path.relative_to(REPO)} in {payload['seconds']:.0f} s; load average {env['load_average']} -> "
          f"{env['load_average_after']}")
    return payload


if __name__ == "__main__":
    main()
