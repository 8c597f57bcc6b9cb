"""Linear probes and the regulator's channel index of a run, cached in its ``artifacts/`` (the
``regnet readout`` and ``regnet channels`` commands and the Inspect page read them from here).

Features and indexes are computed once per checkpoint (its path, size and modification time), split and
option, and written through the run-folder contract's atomic write, so an interrupted pass leaves no
partial file and a retrained checkpoint is computed again. Each epoch snapshot (``train.keep_every``) is a
checkpoint of its own: following a channel across epochs reads one index per snapshot.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

from torch import nn
from tqdm import tqdm

from regnet.data.device import evaluation_batches
from regnet.inspect import cache_file, cache_key, cached, file_identity
from regnet.inspect import channels as ch
from regnet.inspect.pooling import pooled_pass
from regnet.inspect.probes import L2_GRID, MAX_ITERATIONS, probe_table, probe_taps
from regnet.runs import ARTIFACTS, CHANNEL_INDEX, PROBE_FEATURES, PROBES, checkpoint_file, snapshot_epochs

from .evaluate import load_run_model, load_run_split

BATCH = 128
SOLVER = (f"multinomial logistic regression, full-batch L-BFGS (at most {MAX_ITERATIONS} iterations) on "
          f"standardised pooled features; L2 penalty from {', '.join(map(str, L2_GRID))} by top-1 on a "
          "held-out tenth of the training split (stratified, seed 0), then refitted on all of it")
Progress = Callable[[str, int, int], None]  # (what, done, total)


def terminal_progress() -> Progress:
    """A tqdm bar per pass on stderr (hidden when stderr is not a terminal)."""
    bars: dict[str, tqdm] = {}

    def report(what: str, done: int, total: int) -> None:
        bar = bars.get(what) or bars.setdefault(what, tqdm(total=total, desc=what, unit="img", disable=None,
                                                           file=sys.stderr))
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return report


def _pass(model: nn.Module, dataset, info, taps, reduce: str, what: str, progress: Progress | None) -> dict:
    batches = evaluation_batches(dataset, info, BATCH)
    report = None if progress is None else (lambda done: progress(what, done, len(dataset)))
    return pooled_pass(model, batches, taps, reduce, report)


def _features(run_dir: Path, model: nn.Module, identity: str, split: str, dataset, info,
              progress: Progress | None) -> dict:
    """Pooled block outputs and H of one split, cached as float16 (at most a few hundred columns)."""
    def compute() -> dict:
        result = _pass(model, dataset, info, probe_taps, "mean", f"features of {split}", progress)
        return {**result, "features": {k: v.half() for k, v in result["features"].items()}}

    key = cache_key(identity, info.name, split, len(dataset))
    result = cached(run_dir / ARTIFACTS, PROBE_FEATURES, key, compute)
    return {**result, "features": {k: v.float() for k, v in result["features"].items()}}


def run_probes(run_dir: str | Path, split: str = "val", data_root: str | None = None, which: str = "best",
               progress: Progress | None = None) -> dict:
    """The probe table of a run's checkpoint: fitted on its training split, scored on ``split``."""
    run_dir = Path(run_dir)
    if split == "train":
        raise ValueError("The probes are fitted on the training split; score them on val or test.")
    model, config = load_run_model(run_dir, which)
    identity = file_identity(checkpoint_file(run_dir, which))
    scored_set, info = load_run_split(run_dir, split, data_root)
    train_set, _ = load_run_split(run_dir, "train", data_root)
    train = _features(run_dir, model, identity, "train", train_set, info, progress)
    scored = _features(run_dir, model, identity, split, scored_set, info, progress)
    key = cache_key(identity, info.name, split, len(train_set), len(scored_set), L2_GRID, MAX_ITERATIONS)
    rows = cached(run_dir / ARTIFACTS, PROBES, key,
                  lambda: {"rows": probe_table(model, train, scored, info.num_classes)})["rows"]
    return {"run": str(run_dir), "model": config["model"]["name"], "checkpoint": which, "split": split,
            "num_train": len(train_set), "num_scored": len(scored_set),
            "model_top1": float((scored["predictions"] == scored["labels"]).double().mean()),
            "solver": SOLVER, "rows": rows}


def channel_index(run_dir: str | Path, checkpoint: Path, model: nn.Module, dataset, info, split: str,
                  reduce: str = "mean", progress: Progress | None = None) -> dict:
    """The regulator's channel index of ``dataset`` (the run's ``split``, or a sample of it), cached."""
    return _cached_index(run_dir, checkpoint, lambda: model, dataset, info, split, reduce,
                         None if progress is None else (lambda done: progress("channel index", done, len(dataset))))


def _index_key(checkpoint: Path, info, split: str, count: int, reduce: str) -> str:
    return cache_key(file_identity(checkpoint), info.name, split, count, reduce)


def _cached_index(run_dir: str | Path, checkpoint: Path, load: Callable[[], nn.Module], dataset, info, split: str,
                  reduce: str, report: Callable[[int], None] | None) -> dict:
    """The index of one checkpoint, from artifacts/ or built (``load()`` gives the model, called only then)."""
    def compute() -> dict:
        return ch.build_index(load(), evaluation_batches(dataset, info, BATCH), reduce, report)

    key = _index_key(checkpoint, info, split, len(dataset), reduce)
    return cached(Path(run_dir) / ARTIFACTS, CHANNEL_INDEX, key, compute)


def require_snapshots(run_dir: str | Path) -> dict[int, Path]:
    """{epoch: snapshot file} of a run; a one-sentence ValueError naming ``train.keep_every`` when it has none."""
    snapshots = snapshot_epochs(run_dir)
    if not snapshots:
        raise ValueError(f"{run_dir} kept no epoch snapshots, so its channels cannot be followed across epochs; "
                         "train it with train.keep_every: K (e.g. --set train.keep_every=1) to keep the weights "
                         "every K epochs.")
    return snapshots


def snapshots_to_index(run_dir: str | Path, dataset, info, split: str, reduce: str = "mean") -> list[int]:
    """The epochs whose snapshot has no cached channel index of ``dataset`` yet (what indexing will build)."""
    folder = Path(run_dir) / ARTIFACTS
    return [epoch for epoch, path in snapshot_epochs(run_dir).items()
            if not cache_file(folder, CHANNEL_INDEX, _index_key(path, info, split, len(dataset), reduce)).is_file()]


def snapshot_indexes(run_dir: str | Path, dataset, info, split: str, reduce: str = "mean",
                     progress: Progress | None = None) -> dict[int, dict]:
    """{epoch: channel index} of every epoch snapshot of a run (none: the ValueError of :func:`require_snapshots`).

    Each snapshot's index is the per-checkpoint cached one (built once, its model loaded only then);
    ``progress`` counts the images of the snapshots still to index, all together, as one pass.
    """
    snapshots = require_snapshots(run_dir)
    missing = snapshots_to_index(run_dir, dataset, info, split, reduce)
    what, total = f"channel indexes of {len(missing)} snapshots", len(missing) * len(dataset)
    indexes = {}
    for epoch, path in snapshots.items():
        before = missing.index(epoch) * len(dataset) if epoch in missing else 0
        report = None if progress is None else (lambda done, before=before: progress(what, before + done, total))
        indexes[epoch] = _cached_index(run_dir, path, lambda path=path: load_run_model(run_dir, path.stem)[0],
                                       dataset, info, split, reduce, report)
    return indexes
