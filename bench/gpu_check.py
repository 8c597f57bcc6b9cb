"""The whole GPU measurement in one command (issue 14, point 4): speeds, then the paper's CIFAR-10 recipe for both.

Sized to one 10-minute command on an H200, with a hard deadline inside the
script (``--budget-s``, default 540 s from the script's start, a minute
under the device tool's per-command limit):

1. the environment (torch, CUDA, GPU, CPU, commit);
2. speeds of resnet20 and regnet20 (ConvLSTM, efficient gates): training and
   evaluation images/s, eager against ``torch.compile``, in bf16 autocast,
   channels-last, with the data on the device (``regnet.data.device``),
   through the engine's own pieces (``make_batches``, ``compile_model``);
3. the paper's CIFAR-10 recipe (``bench/cifar_paper.py``'s: SGD 0.1, momentum
   0.9, weight decay 1e-4, batch 128, LR /10 at 50% and 75%, pad-4 crop and
   flip; 45,000 / 5,000 stratified split, seed 0; ``configs/cifar10_paper_gpu.yaml``) for both models with equal
   epochs, as many as the time left allows, trained by ``regnet.train.train``
   into real run folders (``--runs-root``), then their accuracies.

The deadline: a watchdog thread creates the running run's STOP file at the
deadline (the engine stops after its step and writes last.pt), then, after a
grace of ``--grace-s``, writes what was measured and ends the process. The
JSON (``$OUT/gpu_check.json`` when ``OUT`` is set, else
``bench/results/gpu_check.json``) and one ``.tar.gz`` per run folder (under
``$OUT``) hold everything.

The data: ``cifar10-train-jpeg.tar.gz`` from ``shared/data/cifar10/`` inside
the repository (the device tool sends a checkout's ``shared/`` folder, not
the ``../shared`` beside it), else from ``../shared/data/cifar10/``, or
``--tar``. Before the device call, in the checkout the session started in::

    echo /shared/ >> .git/info/exclude          # never committed
    mkdir -p shared/data/cifar10 && cp ../shared/data/cifar10/cifar10-train-jpeg.tar.gz shared/data/cifar10/

then ``run(command="PYTHONUNBUFFERED=1 python bench/gpu_check.py", timeout_s=600)``.

    python bench/gpu_check.py --smoke    # the same phases on the CPU: shapes, a few steps, aot_eager (a minute)
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch.nn import functional as F

from bench._common import environment, format_goals, goal, result_path, write_json
from regnet.data.device import evaluation_batches
from regnet.runs import STOP, comparison_row, read_summary
from regnet.train.build import build_model_from_config, compile_model, load_data, make_batches, resolve_model
from regnet.train.config import Config, apply_override, load_config
from regnet.train.distributed import SeededShardSampler, autocast
from regnet.train.loop import RunFailed, train
from regnet.train.schedules import build_optimizer

NAME = "gpu_check"
REPO = Path(__file__).resolve().parents[1]
TAR_NAME = "cifar10-train-jpeg.tar.gz"
TAR_PLACES = (REPO / "shared/data/cifar10", REPO.parent / "shared/data/cifar10")
MODELS = ("resnet20", "regnet20")
RECIPE = REPO / "configs/cifar10_paper_gpu.yaml"  # the paper's recipe with the GPU path's settings
RESNET_TRAIN_GOAL = 30_000.0  # img/s on an H200
REGNET_VS_RESNET_GOAL = 0.6
EVAL_BATCH = 1024
ENGINE_OVERHEAD = 1.25  # an engine epoch against the speed phase's pure steps: per-step stats, logging, eval


@dataclass
class Deadline:
    """Seconds since the script started, and the watchdog that enforces the budget."""

    budget_s: float
    grace_s: float
    started: float = field(default_factory=time.monotonic)
    current_run: Path | None = None
    on_timeout: object = None
    done: threading.Event = field(default_factory=threading.Event)  # set when the script ends in time

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.started)

    def start_watchdog(self) -> None:
        threading.Thread(target=self._watch, name="deadline", daemon=True).start()

    def _watch(self) -> None:
        if self.done.wait(max(self.left(), 0.0)):
            return
        if self.current_run is not None:
            print(f"deadline: stopping {self.current_run.name}", flush=True)
            (self.current_run / STOP).touch()
        if self.done.wait(self.grace_s):
            return
        print("deadline: the grace period is over; writing what was measured and exiting", flush=True)
        if callable(self.on_timeout):
            self.on_timeout()
        os._exit(3)


def gpu_environment(device: torch.device) -> dict:
    """``bench._common.environment`` plus the GPU, CUDA and cuDNN."""
    env = {**environment(), "python": platform.python_version(), "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, capability=f"{props.major}.{props.minor}", memory_gib=props.total_memory / 2**30,
                   cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    return env


def find_tar(explicit: Path | None) -> Path | None:
    for path in ([explicit] if explicit else []) + [place / TAR_NAME for place in TAR_PLACES]:
        if path.is_file():
            return path
    return None


def data_overrides(args: argparse.Namespace, workdir: Path) -> tuple[list[str], str]:
    """The data section: the CIFAR-10 JPEGs unpacked as an image folder, or (smoke, or no tar) ``shapes``."""
    tar = None if args.smoke else find_tar(args.tar)
    if tar is None:
        size = 480 if args.smoke else 6000
        return ["data.name=shapes", f"data.size={size}"], f"shapes ({size} synthetic images)"
    with tarfile.open(tar) as archive:
        archive.extractall(workdir / "cifar10", filter="data")
    root = next(p.parent for p in sorted((workdir / "cifar10").rglob("train")) if p.is_dir())
    return ["data.name=imagefolder", f"data.root={root}"], f"CIFAR-10 JPEG from {tar} (45,000 / 5,000)"


def base_config(data: list[str], device: torch.device, runs_root: Path, batch: int) -> Config:
    """``configs/cifar10_paper_gpu.yaml`` with this machine's data, device, runs root and (smoke) batch."""
    config = load_config(RECIPE)
    for assignment in (*data, f"train.device={device}", f"run.runs_root={runs_root}", f"train.batch_size={batch}"):
        apply_override(config, assignment)
    return config


def model_config(config: Config, model: str, compiled: bool, backend: str) -> Config:
    config = copy.deepcopy(config)
    apply_override(config, f"model.name={model}")
    config.model.options = {"cell": "lstm", "gates": "efficient"} if model.startswith("regnet") else {}
    apply_override(config, f"train.compile={str(compiled).lower()}")
    apply_override(config, f"train.compile_backend={backend}")
    return config


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Data:
    """The splits and their on-device batches, decoded once for every speed measurement."""

    splits: object
    train: object  # DeviceBatches of the training split, augmented
    val: object  # the validation split in batches of EVAL_BATCH


def device_data(config: Config, device: torch.device) -> Data:
    splits = load_data(config)
    train = make_batches(config, splits.train, splits.info, config.train.batch_size,
                         SeededShardSampler(len(splits.train)), device, train=True)
    return Data(splits, train, evaluation_batches(splits.val, splits.info, EVAL_BATCH, device))


def speed(config: Config, data: Data, device: torch.device, steps: int, warmup: int) -> dict:
    """Training images/s (bf16, channels-last, on-device batches) and evaluation images/s of one configuration.

    The first ``warmup`` steps (and, compiled, the compilation) are timed
    apart as ``warmup_s``; evaluation is timed on its second pass.
    """
    resolve_model(config, data.splits.info)
    torch.manual_seed(0)
    model = build_model_from_config(config).to(device).to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, config.optim)
    net = compile_model(model, config)
    b, batches = config.train.batch_size, data.train

    def endless():
        while True:
            yield from batches

    feed = endless()

    def step() -> None:
        x, y = next(feed)
        with autocast(device, True, config.train.amp_dtype):
            loss = F.cross_entropy(net(x.contiguous(memory_format=torch.channels_last)), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.train()
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    sync(device)
    warm = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    train_s = time.perf_counter() - start
    eval_first, eval_s, count = eval_pass(net, config, data, device)
    return {"model": config.model.name, "compiled": config.train.compile, "warmup_s": warm + eval_first,
            "train_img_s": steps * b / train_s, "step_ms": 1e3 * train_s / steps, "eval_img_s": count / eval_s}


@torch.inference_mode()
def eval_pass(net, config: Config, data: Data, device: torch.device) -> tuple[float, float, int]:
    """(first pass s, second pass s, images) of the validation split in batches of ``EVAL_BATCH``."""
    net.eval()
    times = []
    for _ in range(2):
        start = time.perf_counter()
        for x, _y in data.val:
            with autocast(device, True, config.train.amp_dtype):
                net(x.contiguous(memory_format=torch.channels_last))
        sync(device)
        times.append(time.perf_counter() - start)
    net.train()
    return times[0], times[1], len(data.splits.val)


def speed_phase(args, base: Config, data: Data, device, deadline: Deadline, result: dict) -> None:
    """Eager first (cheap), then compiled, each model; a compiled measure is skipped when time runs short."""
    result["speed"] = rows = []
    for compiled in (False, True):
        for model in MODELS:
            if compiled and deadline.left() < args.compile_reserve_s + 0.5 * args.budget_s:
                print(f"speed: skipping compiled {model} ({deadline.left():.0f} s left)", flush=True)
                continue
            try:
                row = speed(model_config(base, model, compiled, args.compile_backend), data, device, args.steps,
                            args.warmup)
            except Exception as error:  # a compiler failure costs this row, not the training phase
                if not compiled:
                    raise
                print(f"speed: compiled {model} failed ({type(error).__name__}: {str(error)[:200]})", flush=True)
                rows.append({"model": model, "compiled": True, "error": f"{type(error).__name__}: {error}"[:500]})
                continue
            rows.append(row)
            print(f"speed: {model:9s} {'compiled' if compiled else 'eager   '}  train {row['train_img_s']:8.0f} "
                  f"img/s ({row['step_ms']:.2f} ms/step)  eval {row['eval_img_s']:8.0f} img/s  "
                  f"warm-up {row['warmup_s']:.1f} s", flush=True)


def fastest(rows: list[dict], model: str) -> dict:
    return max((r for r in rows if r["model"] == model and "error" not in r), key=lambda r: r["train_img_s"])


def plan_epochs(rows: list[dict], train_images: int, batch: int, seconds: float, max_epochs: int
                ) -> tuple[int, dict]:
    """Equal epochs for both models in ``seconds``, from each one's fastest measured step; and the choice made."""
    steps = -(-train_images // batch)
    choice = {m: fastest(rows, m) for m in MODELS}
    per_epoch = sum(steps * c["step_ms"] / 1e3 * ENGINE_OVERHEAD for c in choice.values())
    warm = sum(c["warmup_s"] * 2 for c in choice.values())  # the engine's fresh graphs: training, eval, last batch
    return max(1, min(max_epochs, int((seconds - warm) / per_epoch))), choice


def train_phase(args, base: Config, train_images: int, device, deadline: Deadline, result: dict) -> None:
    epochs, choice = plan_epochs(result["speed"], train_images, base.train.batch_size,
                                 deadline.left() - args.final_reserve_s, args.max_epochs)
    result["train"] = {"epochs": epochs, "runs": []}
    print(f"train: {epochs} epochs each ({deadline.left():.0f} s left); "
          + ", ".join(f"{m} {'compiled' if c['compiled'] else 'eager'}" for m, c in choice.items()), flush=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for model in MODELS:
        config = model_config(base, model, choice[model]["compiled"], args.compile_backend)
        apply_override(config, f"train.epochs={epochs}")
        config.run.run_id = f"gpu-{model}-{stamp}"
        run_dir = Path(config.run.runs_root) / config.run.run_id
        deadline.current_run = run_dir
        start = time.perf_counter()
        try:
            train(config, progress=False)
        except RunFailed as error:
            print(f"train: {model} failed: {error.message}", flush=True)
        deadline.current_run = None
        result["train"]["runs"].append(summarise_run(run_dir, time.perf_counter() - start))
        if deadline.left() < 0:
            break


def summarise_run(run_dir: Path, seconds: float) -> dict:
    """The run's comparison row (``regnet.runs.comparison_row``: state, epochs, best and final validation,
    average speed), with the seconds it took here and its folder."""
    summary = read_summary(run_dir)
    row = {**comparison_row(summary), "epochs_done": summary.epoch, "seconds": seconds, "run_dir": str(run_dir)}
    print(f"train: {row['model']}: {row['state']}, {row['epochs_done']} epochs in {seconds:.0f} s, final val top-1 "
          f"{row['final_val_top1']}, best {row['best_val_top1']} (epoch {row['best_epoch']})", flush=True)
    return row


def goals(result: dict) -> list[dict]:
    rows = result.get("speed", [])
    if not all(any(r["model"] == m for r in rows) for m in ("resnet20", "regnet20")):
        return []
    resnet, regnet = fastest(rows, "resnet20"), fastest(rows, "regnet20")
    out = [goal("resnet20 training img/s (bf16, channels-last, on-device data)", resnet["train_img_s"],
                RESNET_TRAIN_GOAL, "img/s", note="compiled" if resnet["compiled"] else "eager"),
           goal("regnet20 training img/s / resnet20's", regnet["train_img_s"] / resnet["train_img_s"],
                REGNET_VS_RESNET_GOAL, "x", note="compiled" if regnet["compiled"] else "eager")]
    return [{**r, "status": "info"} if result["smoke"] else r for r in out]


def skip_reason(quick: bool) -> str | None:
    """For run_all: the full measurement needs CUDA; the smoke run (--quick) runs anywhere."""
    if quick or torch.cuda.is_available():
        return None
    return "needs a CUDA GPU (python bench/gpu_check.py --smoke checks it on the CPU)"


class Tee:
    """Everything printed also goes to a log file under ``$OUT`` (the device tool returns only the output's tail)."""

    def __init__(self, stream, log):
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        self.log.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.log.flush()
        self.stream.flush()

    def isatty(self) -> bool:
        return False


def pack_runs(result: dict, out: Path) -> None:
    """Each run folder as ``<run id>.tar.gz`` in ``out`` (the device tool returns files, not folder trees)."""
    for run in result.get("train", {}).get("runs", []):
        run_dir = Path(run["run_dir"])
        if run_dir.is_dir():
            with tarfile.open(out / f"{run_dir.name}.tar.gz", "w:gz") as archive:
                archive.add(run_dir, arcname=run_dir.name)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", "--quick", action="store_true",
                   help="the same phases on the CPU, tiny: shapes, a few steps")
    p.add_argument("--budget-s", type=float, default=None, help="the hard deadline from the start (default 540)")
    p.add_argument("--grace-s", type=float, default=30.0, help="after the deadline's STOP, before the exit")
    p.add_argument("--steps", type=int, default=None, help="timed training steps per speed (default 60, smoke 3)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 10, smoke 1)")
    p.add_argument("--compile-backend", default=None, help="default inductor (smoke: aot_eager, no C++ build)")
    p.add_argument("--compile-reserve-s", type=float, default=60.0,
                   help="a compiled speed is measured only with more than this plus half the budget left")
    p.add_argument("--final-reserve-s", type=float, default=25.0, help="left over after the training phase")
    p.add_argument("--max-epochs", type=int, default=None, help="at most this many epochs (default 180, smoke 1)")
    p.add_argument("--tar", type=Path, default=None, help=f"the {TAR_NAME} to use")
    p.add_argument("--runs-root", type=Path, default=None, help="default: a temporary folder, packed into $OUT")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default $OUT/gpu_check.json or bench/results)")
    args = p.parse_args(argv)
    smoke = args.smoke
    args.budget_s = args.budget_s or (300.0 if smoke else 540.0)
    args.steps = args.steps or (3 if smoke else 60)
    args.warmup = args.warmup or (1 if smoke else 10)
    args.compile_backend = args.compile_backend or ("aot_eager" if smoke else "inductor")
    args.max_epochs = args.max_epochs or (1 if smoke else 180)
    if smoke:
        args.compile_reserve_s = min(args.compile_reserve_s, 0.0)
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    out_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else None
    streams = sys.stdout, sys.stderr
    log = open(out_dir / f"{NAME}.log", "a") if out_dir is not None else None
    if log is not None:
        sys.stdout, sys.stderr = Tee(sys.stdout, log), Tee(sys.stderr, log)
    deadline = Deadline(args.budget_s, args.grace_s)
    try:
        return measure(args, deadline, out_dir)
    finally:
        deadline.done.set()
        sys.stdout, sys.stderr = streams
        if log is not None:
            log.close()


def measure(args: argparse.Namespace, deadline: Deadline, out_dir: Path | None) -> dict:
    """The phases in order, under the watchdog; the JSON (and the packed runs) at the end or at the deadline."""
    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    torch.backends.cudnn.benchmark = True
    if args.smoke:
        torch.set_num_threads(1)
    json_path = args.out or (out_dir / f"{NAME}.json" if out_dir else result_path(NAME, args.smoke))
    result = {"name": NAME, "quick": args.smoke, "smoke": args.smoke, "environment": gpu_environment(device),
              "budget_s": args.budget_s, "summary": []}
    print(json.dumps(result["environment"]), flush=True)
    deadline.on_timeout = lambda: finish(result, json_path, out_dir, deadline)
    deadline.start_watchdog()
    with tempfile.TemporaryDirectory(prefix="regnet-gpu-check.") as work:
        work = Path(work)
        data, result["data"] = data_overrides(args, work)
        print(f"data: {result['data']}", flush=True)
        base = base_config(data, device, args.runs_root or work / "runs", 32 if args.smoke else 128)
        data = device_data(base, device)
        speed_phase(args, base, data, device, deadline, result)
        train_images = len(data.splits.train)
        del data  # the engine decodes its own copy
        train_phase(args, base, train_images, device, deadline, result)
        return finish(result, json_path, out_dir, deadline)


def finish(result: dict, json_path: Path, out_dir: Path | None, deadline: Deadline) -> dict:
    result["summary"] = goals(result)
    result["elapsed_s"] = time.monotonic() - deadline.started
    print(format_goals(result["summary"]), flush=True)
    if out_dir is not None:
        pack_runs(result, out_dir)
    print(f"wrote {write_json(json_path, result)}", flush=True)
    return result


if __name__ == "__main__":
    main()
