"""What the Inspect page loads and computes, each once: a run's model, its images, one image's trace and
attributions, split-level analyses.

Models and image sets stay in memory per checkpoint identity (path, size, mtime), so a retrained
checkpoint loads again and nothing else does. A trace or an attribution is computed once per
(checkpoint, image, method, target, settings) and kept in a bounded in-memory store shared by every
session. Split analyses and attribution scores are cached on disk in one cache folder under the runs
folder (never in the source tree), so a second tab or a restarted server gets them at once.
"""
from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import streamlit as st
import torch
from torch.utils.data import Dataset

from regnet import inspect as ri
from regnet import runs
from regnet.data import SAMPLES_DIR, DataError, DatasetInfo, check_data_available, has_samples, load_sample_split
from regnet.data.device import evaluation_batches
from regnet.train.build import load_data
from regnet.train.evaluate import load_run_config, load_run_model

ANALYSIS_LIMIT = 10_000
ANALYSIS_BATCH = 128  # regnet20's fastest inference batch on a CPU (bench/throughput.py measures batch sizes)
QUALITY_IMAGES = 32
CACHE_FOLDER = ".inspect-cache"  # dot-named: the runs listing skips it


@dataclass
class InspectImages:
    """The labelled images Inspect offers for a run: its validation split, or the sample shipped with it."""

    val: Dataset  # yields (normalised tensor, label); ``targets`` lists the labels
    info: DatasetInfo
    sample: bool  # True: the shipped sample, not the whole split

    @property
    def description(self) -> str:
        if self.sample:
            return f"a shipped sample of {len(self.val):,} validation images"
        return f"the validation split ({len(self.val):,} images)"


def checkpoint_path(run_dir: Path) -> Path | None:
    """The contract's checkpoint to inspect (best.pt, else last.pt); None for a run without one, and for one
    whose checkpoint resolves outside its folder (refused, so never loaded)."""
    try:
        return runs.checkpoint_path(run_dir)
    except runs.RefusedPath:
        return None


def snapshots_of(run_dir: Path) -> dict[int, Path]:
    """{epoch: checkpoints/epoch-NNN.pt} of a run kept with ``train.keep_every`` (empty without snapshots)."""
    return runs.snapshot_epochs(run_dir)


def cache_folder(runs_root: Path) -> Path:
    """Where Inspect keeps what it computed: under the runs folder, whichever run it was computed for."""
    return Path(runs_root) / CACHE_FOLDER


@st.cache_resource(show_spinner="Loading the model...", max_entries=24)  # a run's snapshots too
def model_of(run_dir: str, which: str, identity: str):
    """(model, config dict) of a run; ``identity`` makes a retrained checkpoint load again."""
    return load_run_model(run_dir, which=which)


@st.cache_resource(show_spinner="Loading the images...", max_entries=4)
def images_of(run_dir: str, data_root: str) -> InspectImages:
    """The run's validation split from ``data_root`` when its files are there, else its shipped sample.

    Never downloads: a data set that is not on disk is a DataError naming the files, unless the run
    ships a sample of its validation split.
    """
    config = load_run_config(run_dir)
    config.data.root = data_root
    try:
        check_data_available(config.data.name, data_root)
    except DataError:
        if not has_samples(run_dir):
            raise
        val, info = load_sample_split(Path(run_dir) / SAMPLES_DIR)
        return InspectImages(val, info, sample=True)
    splits = load_data(config, augment=False)
    return InspectImages(splits.val, splits.info, sample=False)


class _Store:
    """A bounded, thread-safe memo shared by the sessions (one server process serves them all)."""

    def __init__(self, size: int):
        self.size, self.items, self.lock = size, OrderedDict(), threading.Lock()

    def get_or_compute(self, key: tuple, compute: Callable[[], object]):
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        value = compute()
        with self.lock:
            self.items[key] = value
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return value


@st.cache_resource
def _store() -> _Store:
    return _Store(256)


def image_key(*parts: object) -> str:
    """A short key for an image: where it came from (split and index) or the upload's bytes."""
    digest = hashlib.sha1()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else str(part).encode())
        digest.update(b"|")
    return digest.hexdigest()[:16]


def trace_of(identity: str, key: str, model, x: torch.Tensor):
    """(logits, regulator trace) of one image, recorded once per checkpoint and image."""
    return _store().get_or_compute(("trace", identity, key), lambda: ri.record_states(model, x))


def attribution_of(identity: str, key: str, method: str, target: int, settings: ri.MethodSettings,
                   baseline: str, model, x: torch.Tensor, mean, std,
                   progress: ri.attribution.Progress | None = None) -> ri.Attribution:
    """One method's attribution of one image, computed once per (checkpoint, image, method, target, settings)."""
    settings = settings.relevant(method)
    uses_baseline = method in ("integrated_gradients", "occlusion")
    cache_key = ("attribution", identity, key, method, int(target), settings, baseline if uses_baseline else None)

    def compute() -> ri.Attribution:
        reference = ri.make_baseline(x, baseline, mean, std) if uses_baseline else None
        return ri.attribute(model, x, method, int(target), settings, reference, progress)

    return _store().get_or_compute(cache_key, compute)


class ProgressBar:
    """A progress bar with the count and the time left, for jobs that may take more than two seconds.

    Drawn at the first report and removed when the job ends, so a cached answer shows no bar at all.
    """

    def __init__(self, what: str, unit: str):
        self.what, self.unit = what, unit
        self.slot = st.empty()
        self.start = time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        elapsed = time.perf_counter() - self.start
        left = f" · about {elapsed / done * (total - done):.0f} s left" if done else ""
        self.slot.progress(min(done / max(total, 1), 1.0), text=f"{self.what}: {done:,} / {total:,} {self.unit}{left}")

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc) -> None:
        self.slot.empty()


def split_analysis(cache: Path, which_path: Path, model, images: InspectImages, limit: int = ANALYSIS_LIMIT,
                   progress: Callable[[int, int], None] | None = None) -> dict:
    """Every split-level analysis of a checkpoint on (up to ``limit`` of) its validation images."""
    val = images.val
    count = min(limit, len(val))
    key = ri.cache_key(ri.file_identity(which_path), images.info.name, images.sample, len(val), count)

    def compute() -> dict:
        batches = evaluation_batches(val, images.info, ANALYSIS_BATCH, count=count)
        report = None if progress is None else (lambda done: progress(done, count))
        return ri.analyze_split(model, batches, images.info.class_names, progress=report)

    return ri.cached(cache, "inspect-split", key, compute)


def _quality_job(which_path: Path, images: InspectImages, settings: ri.MethodSettings, n: int) -> tuple[str, str]:
    """(cache name, key) of the attribution scores of a checkpoint's first ``n`` validation images."""
    return "inspect-quality", ri.cache_key(ri.file_identity(which_path), "quality", images.info.name, n, settings)


def quality_is_cached(cache: Path, which_path: Path, images: InspectImages, settings: ri.MethodSettings) -> bool:
    """Whether the scores are on disk already, so showing them needs no estimate and no wait."""
    name, key = _quality_job(which_path, images, settings, min(QUALITY_IMAGES, len(images.val)))
    return (Path(cache) / f"{name}-{key}.pt").is_file()


def _quality_rows(model, images: InspectImages, settings: ri.MethodSettings, n: int,
                  progress: Callable[[int, int], None] | None) -> dict:
    xs = torch.stack([images.val[i][0] for i in range(n)])
    ys = torch.tensor(images.val.targets[:n])
    masks = torch.stack([images.val.mask(i) for i in range(n)])
    return {"rows": ri.attribution_quality(model, xs, masks, ys, list(ri.METHODS), settings, progress=progress)}


def quality_seconds_per_image(cache: Path, which_path: Path, model, images: InspectImages, settings: ri.MethodSettings,
                              progress: Callable[[int, int], None] | None = None) -> float:
    """Seconds that scoring one image with every method takes on this machine: the first image, timed once
    per checkpoint and settings and kept on disk, so a long scoring says how long it takes before it starts."""
    name, key = _quality_job(which_path, images, settings, 1)

    def compute() -> dict:
        start = time.perf_counter()
        _quality_rows(model, images, settings, 1, progress)
        return {"seconds": time.perf_counter() - start}

    return float(ri.cached(cache, name + "-timing", key, compute)["seconds"])


def quality_scores(cache: Path, which_path: Path, model, images: InspectImages, settings: ri.MethodSettings,
                   progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """Pointing game and mass on object of every method on the first validation images (``shapes`` masks)."""
    n = min(QUALITY_IMAGES, len(images.val))
    name, key = _quality_job(which_path, images, settings, n)
    return ri.cached(cache, name, key, lambda: _quality_rows(model, images, settings, n, progress))["rows"]
