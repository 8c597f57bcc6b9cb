"""Images/s the DataLoader delivers with CIFAR-style augmentation, against what training consumes.

The training split of each data set goes through ``regnet.data.load_splits``
(pad-4 crop + flip + normalise, as the engine trains) and a DataLoader with
the engine's default number of workers, batch 128, shuffled; the rate is
taken after the first batches, so worker start-up is reported on its own.
The goal: the loader delivers at least 3x the images/s that training
consumes (train images/s from ``bench/results/throughput.json``).

* ``cifar10-jpeg``: the 50,000 CIFAR-10 JPEGs of ``../shared/data/cifar10``,
  unpacked once to a cache folder outside the repository
  (``$REGNET_BENCH_CACHE``, default ``~/.cache/regnet-bench``); skipped with a
  message when the archive is absent (a fresh clone has no ``../shared``).
* ``shapes``: the synthetic set, generated in memory.

Caveat of a small machine: the workers and the training step compete for the
same cores, so a standalone loader rate is an upper bound on what it delivers
during training. What bounds the loader is printed too: the CPU time per image
to read (JPEG decode, or drawing a shape) and to augment it, and the rate that
gives with one core per worker.

    python bench/data_pipeline.py [--quick] [--workers N]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch.utils.data import DataLoader

from bench._common import (
    SHARED_DATA, environment, format_goals, format_table, goal, load_average, read_json, result_path, write_json,
)
from regnet.data import load_splits
from regnet.train.config import DataConfig

NAME = "data_pipeline"
CIFAR_TAR = SHARED_DATA / "cifar10" / "cifar10-train-jpeg.tar.gz"
CIFAR_FOLDER = "CIFAR-10-images"
BATCH = 128
LOADER_VS_TRAINING = 3.0
CONSUMERS = ("resnet20", "regnet20 lstm")  # throughput.py's headline labels


def cache_root() -> Path:
    return Path(os.environ.get("REGNET_BENCH_CACHE", Path.home() / ".cache" / "regnet-bench"))


def unpack_cifar(tar_path: Path, cache: Path) -> Path:
    """The unpacked ImageFolder tree, extracted once (into a temp folder, then renamed) and reused after."""
    stamp = f"{tar_path.stat().st_size}:{tar_path.stat().st_mtime_ns}"
    target = cache / "cifar10-jpeg"
    stamp_file = target / ".source"
    if stamp_file.exists() and stamp_file.read_text() == stamp:
        return target / CIFAR_FOLDER
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix="cifar10-jpeg."))
    try:
        with tarfile.open(tar_path) as tar:
            tar.extractall(tmp, filter="data")
        (tmp / ".source").write_text(stamp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target / CIFAR_FOLDER


def loader_rate(dataset, workers: int, warmup: int, batches: int) -> dict:
    """Images/s over ``batches`` batches after ``warmup`` batches (the first includes starting the workers)."""
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers, drop_last=True,
                        generator=torch.Generator().manual_seed(0))
    batches = min(batches, len(loader) - warmup)  # a small split (shapes: 42 batches) gives what it has
    it = iter(loader)
    start = time.perf_counter()
    next(it)
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
        next(it)
    start = time.perf_counter()
    images = 0
    for _ in range(batches):
        x, _ = next(it)
        images += x.shape[0]
    seconds = time.perf_counter() - start
    del it
    return {"workers": workers, "batches": batches, "images": images, "seconds": seconds,
            "img_s": images / seconds, "first_batch_s": first}


def per_image_cpu(split, count: int) -> dict:
    """CPU microseconds per image to read it (decode a JPEG, or draw a shape) and to augment it.

    Process CPU time, not wall-clock, so a busy machine does not inflate it: with W workers
    each on a core of its own, ``W * 1e6 / total_us`` images/s is the most the loader can give.
    """
    read = augment = 0.0
    for i in range(count):
        start = time.process_time()
        image, _ = split.base[split.indices[i]]
        middle = time.process_time()
        split.transform(image)
        read += middle - start
        augment += time.process_time() - middle
    return {"read_us": 1e6 * read / count, "augment_us": 1e6 * augment / count,
            "total_us": 1e6 * (read + augment) / count}


def consumption() -> tuple[dict[str, float], str | None]:
    """Training images/s of the consumers (one thread, channels-last) from throughput's JSON."""
    for quick in (False, True):
        data = read_json(result_path("throughput", quick))
        if not data or "headline" not in data:
            continue
        rates = {}
        for row in data["headline"]:
            if row["label"] in CONSUMERS:
                rates[row["label"]] = row["train_img_s"]
        return rates, str(result_path("throughput", quick))
    return {}, None


def main(argv: list[str] | None = None) -> dict:
    default_workers = DataConfig().workers
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke mode: a few batches only")
    p.add_argument("--workers", type=int, default=default_workers,
                   help=f"DataLoader workers (default {default_workers}, the engine's default)")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/[quick/]data_pipeline.json)")
    args = p.parse_args(argv)
    warmup, batches = (1, 6) if args.quick else (3, 60)
    env = environment()
    print(f"{NAME}: batch {BATCH}, {args.workers} worker(s), load average {env['load_average']}")
    sets: dict[str, object] = {}
    skipped: dict[str, str] = {}
    if CIFAR_TAR.exists():
        start = time.perf_counter()
        root = unpack_cifar(CIFAR_TAR, cache_root())
        print(f"  cifar10-jpeg ready in {root} ({time.perf_counter() - start:.1f} s)")
        sets["cifar10-jpeg"] = load_splits("imagefolder", root, val_ratio=0.1, split_seed=0).train
    else:
        skipped["cifar10-jpeg"] = f"{CIFAR_TAR} is absent (only a checkout beside ../shared/data has it)"
        print(f"  skipping cifar10-jpeg: {skipped['cifar10-jpeg']}")
    sets["shapes"] = load_splits("shapes", val_ratio=0.1, split_seed=0).train
    worker_counts = [args.workers] if args.quick else sorted({args.workers, 0})
    rows, costs = [], {}
    for name, dataset in sets.items():
        costs[name] = per_image_cpu(dataset, 50 if args.quick else 500)
        for workers in worker_counts:
            r = loader_rate(dataset, workers, warmup, batches)
            ceiling = max(workers, 1) * 1e6 / costs[name]["total_us"]
            rows.append({"dataset": name, "train_images": len(dataset), **r, "cpu_ceiling_img_s": ceiling})
            print(f"  {name}, {workers} worker(s): {r['img_s']:.0f} img/s", flush=True)
    rates, source = consumption()
    summary = []
    for row in rows:
        if row["workers"] != args.workers:
            continue
        for consumer, rate in rates.items():
            summary.append(goal(f"{row['dataset']} loader ({args.workers} workers) / {consumer} training",
                                row["img_s"] / rate, LOADER_VS_TRAINING, "x",
                                note=f"{row['img_s']:.0f} img/s delivered vs {rate:.0f} img/s consumed"))
        if not rates:
            summary.append(goal(f"{row['dataset']} loader ({args.workers} workers) / training", None,
                                LOADER_VS_TRAINING, "x", note="no throughput results yet: run bench/throughput.py"))
    env["load_average_after"] = load_average()
    payload = {"name": NAME, "quick": args.quick, "environment": env, "batch": BATCH, "summary": summary,
               "rows": rows, "per_image_cpu": costs, "training_img_s": rates, "training_source": source,
               "skipped": skipped}
    print(format_table(rows, [("dataset", "data set", ""), ("workers", "workers", "d"), ("img_s", "img/s", ".0f"),
                              ("cpu_ceiling_img_s", "CPU-bound ceiling img/s", ".0f"),
                              ("first_batch_s", "first batch s", ".2f"), ("images", "images timed", "d")]))
    print(format_table([{"dataset": k, **v} for k, v in costs.items()],
                       [("dataset", "data set", ""), ("read_us", "read us/img", ".0f"),
                        ("augment_us", "augment us/img", ".0f"), ("total_us", "total us/img", ".0f")]))
    print(format_goals(summary))
    path = write_json(args.out or result_path(NAME, args.quick), payload)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
