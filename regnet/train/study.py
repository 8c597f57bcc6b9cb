"""Studies over seeds: N seeds of each of several models (or variants) on one config, then means and intervals.

``python -m regnet study --models resnet20,regnet20:memory=reset --config X.yaml --seeds 3`` trains six
ordinary run folders under one study folder, ``<runs_root>/<name>/``, and tabulates them. A model entry is
``NAME[:OPTION=VALUE[:OPTION=VALUE...]]``, the values read as YAML (``regnet20:regulated_stages=[1]``);
entries are separated by commas outside brackets. Seed k of a model trains with ``train.seed`` = the
config's seed + k; the data split (``data.split_seed``) is the same for every member.

The study folder holds ``study.json`` (the plan, then the table), the members' run folders and, in
``.members/``, each member's config and console output. Running the same command again continues a
killed study: finished members are kept, unfinished ones resume from their last checkpoint. Members run
as subprocesses of ``python -m regnet train``, ``--parallel K`` of them at once, each with one thread.

Statistics are over seeds, of each member's last-epoch validation (no checkpoint selection on the
figures reported): mean and sample standard deviation per model, and for each model against the first
the difference of means with a 95% Welch t-interval (Welch-Satterthwaite degrees of freedom) and
Welch's two-sided t-test p-value (from ``scipy.stats.t``, as ``ttest_ind(equal_var=False)`` gives it).
"""
from __future__ import annotations

import math
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from regnet.models import model_info
from regnet.runs import (ACTIVE_STATES, ARTIFACTS, FINAL_EVAL, STUDY, STUDY_MEMBERS, atomic_write_json,
                         atomic_write_text, check_run_id, read_json_object, read_status, reported_state)

from .build import check_names
from .config import Config, build_config, config_to_dict, dump_config
from .grid import split_values
from .evaluate import compare_runs

METRICS = {"val_top1": "final_val_top1", "val_macro_f1": "final_val_macro_f1", "val_loss": "final_val_loss",
           "train_time_s": "train_time_s"}  # study metric -> regnet compare's column


@dataclass
class Member:
    """One run of the study: model entry ``label`` trained with seed ``seed`` into ``run_id``."""

    label: str
    seed: int
    run_id: str
    config: Config | None  # None for a member read back from study.json


def parse_models(text: str) -> list[tuple[str, dict]]:
    """``"resnet20,regnet20:memory=reset"`` -> ``[("resnet20", {}), ("regnet20", {"memory": "reset"})]``."""
    import yaml

    entries = []
    for entry in split_values(text or ""):
        name, *assignments = [part.strip() for part in entry.split(":")]
        if not name:
            raise ValueError(f"--models entry {entry!r} has no model name; write NAME[:OPTION=VALUE...], "
                             f"e.g. regnet20:memory=reset.")
        model_info(name)  # an unknown name is a sentence with close matches
        options = {}
        for assignment in assignments:
            key, sep, value = assignment.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"Option {assignment!r} in --models entry {entry!r} is not OPTION=VALUE, "
                                 f"e.g. regnet20:memory=reset.")
            try:
                options[key.strip()] = yaml.safe_load(value) if value.strip() else None
            except yaml.YAMLError:
                raise ValueError(f"The value in {assignment!r} is not valid YAML; quote it or fix it.") from None
        entries.append((name, options))
    labels = [entry_label(name, options) for name, options in entries]
    if not entries or len(set(labels)) != len(labels):
        raise ValueError(f"--models needs one or more distinct entries, e.g. resnet20,regnet20; got {text!r}.")
    return entries


def entry_label(name: str, options: dict) -> str:
    """The entry as it was written: ``regnet20`` or ``regnet20:memory=reset``."""
    return ":".join([name, *(f"{k}={v}" for k, v in options.items())])


def _slug(label: str) -> str:
    """``regnet20:regulated_stages=[1]`` -> ``regnet20-regulated_stages_1_``: a label inside the run-id rule."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", label.replace(":", "-").replace("=", "_"))


def plan_study(base: Config, models: list[tuple[str, dict]], seeds: int, name: str) -> list[Member]:
    """Every member's config, checked before the first one starts (a bad option fails at once, not hours in).

    Seed-major order: a study stopped part-way has every model at about the same number of seeds.
    """
    if seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {seeds}; a study needs a seed per model.")
    check_run_id(name)
    plan = []
    for k in range(seeds):
        for model, options in models:
            config = build_config({"model": {"name": model, "options": options}, "train": {"seed": base.train.seed + k},
                                   "run": {"runs_root": str(Path(base.run.runs_root) / name)}}, base=base)
            label = entry_label(model, options)
            config.run.run_id = check_run_id(f"{name}-{_slug(label)}-seed{config.train.seed}")
            check_names(config)
            plan.append(Member(label, config.train.seed, config.run.run_id, config))
    return plan


def _plan_record(base: Config, plan: list[Member]) -> dict:
    """What makes two invocations the same study: the recipe (device aside) and the members."""
    recipe = config_to_dict(base)
    for key in ("model", "run"):
        recipe.pop(key)
    recipe["train"].pop("device")
    return {"recipe": recipe, "members": [{"label": m.label, "seed": m.seed, "run_id": m.run_id,
                                           "options": m.config.model.options} for m in plan]}


def open_study(folder: Path, record: dict) -> dict:
    """Create the study folder with its plan, or reopen it; a folder that is not this study is one sentence."""
    path = folder / STUDY
    if folder.exists():
        try:
            saved = read_json_object(path, "study folder")
        except FileNotFoundError:
            raise ValueError(f"{folder} exists and is not a study folder (no {STUDY}); choose another --name "
                             f"or --runs-root.") from None
        if {k: saved.get(k) for k in record} != record:
            raise ValueError(f"Study {folder} was started with another recipe or other members; rerun it with "
                             f"its own flags to continue it, or choose another --name.")
        return saved
    (folder / STUDY_MEMBERS).mkdir(parents=True)
    atomic_write_json(path, record)
    return dict(record)


def member_state(run_dir: Path) -> str:
    """``new`` (no folder), ``done`` (finished with its final evaluation), ``running``, or ``resume``."""
    if not run_dir.exists():
        return "new"
    try:
        status = read_status(run_dir)
    except ValueError:
        return "resume"  # killed before its status was written: --resume starts it again
    if status.get("state") == "finished" and (run_dir / ARTIFACTS / FINAL_EVAL).is_file():
        return "done"
    return "running" if reported_state(status) in ACTIVE_STATES else "resume"


class _Runner:
    """Runs members as ``python -m regnet train`` subprocesses; SIGTERM stops them cleanly (resumable)."""

    def __init__(self, folder: Path, device: str | None, threads: int | None):
        self.folder, self.device, self.threads = folder, device, threads
        self.children: set[subprocess.Popen] = set()
        self.stopping = False
        self.lock = threading.Lock()

    def command(self, member: Member) -> list[str]:
        run_dir = self.folder / member.run_id
        if member_state(run_dir) == "new":
            config_file = self.folder / STUDY_MEMBERS / f"{member.run_id}.yaml"
            atomic_write_text(config_file, dump_config(member.config))
            return [sys.executable, "-m", "regnet", "train", "--config", str(config_file)]
        return [sys.executable, "-m", "regnet", "train", "--resume", str(run_dir),
                *(["--device", self.device] if self.device else [])]

    def run(self, member: Member) -> int:
        env = dict(os.environ)
        if self.threads:
            env.update(OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads))
        with self.lock:
            if self.stopping:
                return -1
            log = open(self.folder / STUDY_MEMBERS / f"{member.run_id}.out", "ab")
            child = subprocess.Popen(self.command(member), stdout=log, stderr=subprocess.STDOUT, env=env)
            self.children.add(child)
        try:
            return child.wait()
        finally:
            log.close()
            with self.lock:
                self.children.discard(child)

    def stop(self, *_) -> None:
        with self.lock:
            self.stopping = True
            for child in self.children:
                child.terminate()  # the trainer checkpoints and exits 0; the next invocation resumes it


def run_study(base: Config, models: list[tuple[str, dict]], seeds: int, *, name: str, parallel: int = 1,
              device: str | None = None, say=print) -> dict:
    """Train (or continue) every member, then return the study's table (also written to study.json)."""
    if parallel < 1:
        raise ValueError(f"--parallel must be at least 1, got {parallel}.")
    plan = plan_study(base, models, seeds, name)
    folder = Path(base.run.runs_root) / name
    open_study(folder, _plan_record(base, plan))
    states = {m.run_id: member_state(folder / m.run_id) for m in plan}
    running = [run_id for run_id, state in states.items() if state == "running"]
    if running:
        raise ValueError(f"Member {folder / running[0]} is still running; wait for it or stop it "
                         f"(create its STOP file) before continuing the study.")
    todo = [m for m in plan if states[m.run_id] != "done"]
    counts = {state: list(states.values()).count(state) for state in ("done", "resume", "new")}
    say(f"study {folder}: {len(plan)} members, {counts['done']} finished, {counts['resume']} to resume, "
        f"{counts['new']} to start ({parallel} at once)")
    runner = _Runner(folder, device, 1 if parallel > 1 else None)
    previous = signal.signal(signal.SIGTERM, runner.stop) if threading.current_thread() is threading.main_thread() \
        else None

    def one(member: Member) -> None:
        code = runner.run(member)
        say(f"  {member.label} seed {member.seed}: {member_state(folder / member.run_id)} (exit {code})")

    try:
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            list(pool.map(one, todo))
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    table = summarize(folder, plan)
    table["stopped"] = runner.stopping
    atomic_write_json(folder / STUDY, {**_plan_record(base, plan), "table": table})
    return table


def study_table(folder: str | Path) -> dict:
    """The table of an existing study folder as its members stand now (finished members only): what a study
    still running, or stopped part-way, has shown so far. Reads the folder only; trains nothing."""
    folder = Path(folder)
    try:
        record = read_json_object(folder / STUDY, "study folder")
    except FileNotFoundError:
        raise ValueError(f"{folder} is not a study folder (no {STUDY}); pass the folder python -m regnet study "
                         f"made under its runs root.") from None
    plan = [Member(m["label"], m["seed"], m["run_id"], None) for m in record.get("members", [])]
    return summarize(folder, plan)


def summarize(folder: Path, plan: list[Member]) -> dict:
    """Per model: each metric's values, mean and std over its finished seeds; per model after the first: the
    difference from the first with a Welch t-interval and p-value."""
    rows = {row["run"]: row for row in compare_runs([folder / m.run_id for m in plan if (folder / m.run_id).exists()])}
    labels = list(dict.fromkeys(m.label for m in plan))
    models = []
    for label in labels:
        done = [m for m in plan if m.label == label and member_state(folder / m.run_id) == "done"]
        entry = {"model": label, "seeds": [m.seed for m in done], "runs": [m.run_id for m in done],
                 "planned": sum(m.label == label for m in plan)}
        for metric, column in METRICS.items():
            values = [rows[m.run_id][column] for m in done if rows[m.run_id].get(column) is not None]
            entry[metric] = {"values": values, **mean_std(values)}
        models.append(entry)
    comparisons = [{"model": other["model"], "baseline": models[0]["model"],
                    **{metric: welch(models[0][metric]["values"], other[metric]["values"]) for metric in METRICS}}
                   for other in models[1:]]
    return {"folder": str(folder), "method": "Welch t-interval (95%) and Welch's t-test over seeds, of the "
                                             "last epoch's validation", "models": models,
            "comparisons": comparisons}


def mean_std(values: list[float]) -> dict:
    """Mean and sample standard deviation (n - 1); None where there are too few values."""
    n = len(values)
    return {"n": n, "mean": statistics.fmean(values) if n else None,
            "std": statistics.stdev(values) if n > 1 else None}


def welch(a: list[float], b: list[float], confidence: float = 0.95) -> dict:
    """mean(b) - mean(a) with its Welch t-interval and Welch's two-sided t-test p-value.

    None for the interval and p-value with fewer than two values on either side, or when both sides have
    no spread at all (the t statistic is undefined).
    """
    from scipy import stats

    result = {"diff": (sum(b) / len(b) - sum(a) / len(a)) if a and b else None, "low": None, "high": None,
              "p": None, "df": None}
    if len(a) < 2 or len(b) < 2:
        return result
    va, vb = mean_std(a)["std"] ** 2 / len(a), mean_std(b)["std"] ** 2 / len(b)
    if va + vb == 0:
        return result
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    p = 2 * float(stats.t.sf(abs(result["diff"]) / se, df))  # = ttest_ind(b, a, equal_var=False).pvalue
    return {**result, "low": result["diff"] - half, "high": result["diff"] + half, "p": p, "df": df}


def format_spread(stat: dict, spec: str) -> str:
    """``0.6628 ± 0.0102`` (mean ± sample std), the mean alone for one seed, ``-`` for none."""
    if stat["mean"] is None:
        return "-"
    return format(stat["mean"], spec) + (f" ± {format(stat['std'], spec)}" if stat["std"] is not None else "")


def format_difference(w: dict, spec: str = "+.4f") -> str:
    """``-0.0166 [-0.0400, +0.0068] p=0.120``: a difference from the first model with its interval."""
    if w["diff"] is None:
        return "-"
    if w["p"] is None:
        return f"{w['diff']:{spec}} (no interval: too few seeds or no spread)"
    return f"{w['diff']:{spec}} [{w['low']:{spec}}, {w['high']:{spec}}] p={w['p']:.3f}"


def format_study(table: dict) -> str:
    """The per-model table (mean ± std over seeds) and the differences from the first model."""
    lines = [f"{'model':<34} {'seeds':>5} {'val top-1':>17} {'macro-F1':>17} {'val loss':>17} {'time (s)':>13}"]
    for m in table["models"]:
        seeds = f"{len(m['seeds'])}/{m['planned']}"
        lines.append(f"{m['model']:<34} {seeds:>5} {format_spread(m['val_top1'], '.4f'):>17} "
                     f"{format_spread(m['val_macro_f1'], '.4f'):>17} {format_spread(m['val_loss'], '.4f'):>17} "
                     f"{format_spread(m['train_time_s'], '.0f'):>13}")
    if table["comparisons"]:
        lines += ["", f"difference from {table['models'][0]['model']} (mean, 95% Welch t-interval, Welch p):"]
    for c in table["comparisons"]:
        parts = [f"{metric} {format_difference(c[metric])}" for metric in ("val_top1", "val_macro_f1", "val_loss")]
        lines.append(f"  {c['model']:<32} " + "  ".join(parts))
    lines.append(f"({table['method']}; ± is the sample standard deviation)")
    return "\n".join(lines)
