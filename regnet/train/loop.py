"""The training loop, readable top to bottom like nanoGPT's train.py.

``train(config)`` creates a run folder and trains; ``train(resume=run_dir)``
continues a run from its ``checkpoints/last.pt``.

Reproducibility. The data order of an epoch depends only on (seed, epoch): a
permutation drawn from a generator seeded with seed + epoch (exactly
``DistributedSampler``'s). The global random streams (augmentation, dropout)
are re-seeded from (seed, epoch, rank) at the start of every epoch. So a run
resumed from an epoch-end checkpoint repeats, bit for bit on the CPU, what the
uninterrupted run computes. A run stopped mid-epoch saves how far into the
epoch it got and its random state; the resumed run skips the images already
seen and continues with the same random stream, so it too matches (with
``data.workers: 0``; with worker processes the order still matches but the
rest of that epoch's augmentations differ, and in a distributed run only rank
0's random state is saved).

Crash consistency. Every file but metrics.jsonl is written with the
contract's atomic write, in an order chosen so that a SIGKILL at any write
leaves a run that ``--resume`` continues, losing only the work since the last
checkpoint: at the end of an epoch the metrics line, then last.pt (the commit
point: the state the run resumes from), then best.pt, then status.json. A
kill between last.pt and best.pt leaves best.pt one improvement behind; that
can only happen when the newest epoch is the best, so last.pt then holds the
best model and resuming writes it to best.pt first. Metrics lines after
last.pt's step are dropped at resume, and a run killed before its first
checkpoint starts again in the same folder. A time-based checkpoint
(``train.checkpoint_every_s``) bounds the work a kill can lose mid-epoch.

Stopping. SIGINT, SIGTERM or a file named STOP in the run folder make the run
finish its current step, write last.pt, set status ``stopped`` and return
normally. DataLoader workers ignore both signals (Ctrl-C in a terminal
reaches the whole process group), so they keep serving until the main
process stops. A non-finite loss or any exception sets status ``failed`` with one
sentence in status.json and the traceback in train.log, and raises
``RunFailed``.

Distributed. Under torchrun every process runs this same function; rank 0
alone writes the run folder. The per-process batch is the global batch divided
by the world size, and the loss, accuracy and validation metrics are summed
over processes. On CUDA, BatchNorm becomes SyncBatchNorm; on CPU (gloo) torch
has no SyncBatchNorm, so each process normalises with its own batch's
statistics.
"""
from __future__ import annotations

import logging
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from regnet.metrics import per_class_table
from regnet.models import fast, summary
from regnet.runs import (ACTIVE_STATES, ARTIFACTS, FINAL_EVAL, STATUS, atomic_write_json, check_note, checkpoint_file,
                         clean_tags, process_identity, read_config_dict, read_status, reported_state)

from .build import build_model_from_config, check_names, compile_model, load_data, make_batches, resolve_model
from .clock import EpochClock
from .checkpoint import capture_rng, load_checkpoint, load_model_weights, restore_rng, save_checkpoint
from .config import Config, config_from_dict, config_to_dict, dump_config, lower_is_better
from .distributed import (DistContext, SeededShardSampler, all_reduce_sum, amp_dtype, autocast, broadcast_object,
                          cleanup_distributed, init_distributed)
from .metrics import evaluate
from .regulator_stats import RegulatorLog
from .runfolder import RunFolder, create_run_folder
from .schedules import build_optimizer, build_scheduler
from .snapshots import drop_snapshots_after, save_snapshot, snapshot_due

STATE_FIELDS = ("epoch", "step", "epoch_step", "epoch_sums", "best_value", "best_epoch", "bad_epochs", "elapsed_s")
# What last.pt must hold to be resumed (a shipped checkpoint holds only model, config and metrics).
RESUME_KEYS = ("model", "optimizer", "scheduler", "scaler", "rng", "metrics", *STATE_FIELDS)


class RunFailed(Exception):
    """The run started but did not finish; ``message`` is the sentence also written to status.json."""

    def __init__(self, message: str, run_dir: Path):
        super().__init__(message)
        self.message = message
        self.run_dir = run_dir


class NonFiniteLoss(ValueError):
    pass


class StopSignals:
    """SIGINT and SIGTERM set a flag read after each step, so the process never dies halfway through a write.

    A second signal (Ctrl-C pressed twice) interrupts at once; the run is then
    marked failed and resumes from its last checkpoint.
    """

    def __init__(self):
        self.received: str | None = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread only
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@dataclass
class EpochSums:
    """What the current epoch has trained so far, over every process: loss x images, correct, images, seconds."""

    loss: float = 0.0
    correct: float = 0.0
    images: float = 0.0
    seconds: float = 0.0

    def as_list(self) -> list[float]:
        """The order last.pt stores them in."""
        return [self.loss, self.correct, self.images, self.seconds]


@dataclass
class TrainState:
    """Where a run is; saved in last.pt and restored from it by the same two methods, so a resume is exact."""

    epoch: int = 0  # completed epochs
    step: int = 0
    epoch_step: int = 0  # steps into the current epoch (0 at an epoch boundary)
    epoch_sums: EpochSums = field(default_factory=EpochSums)
    best_value: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    elapsed_s: float = 0.0
    last_record: dict = field(default_factory=dict)  # the last epoch line

    def to_checkpoint(self, running_s: float = 0.0) -> dict:
        """The state as last.pt stores it; ``running_s`` adds the seconds of an epoch still in progress."""
        saved = {name: getattr(self, name) for name in STATE_FIELDS}
        saved["epoch_sums"] = [*self.epoch_sums.as_list()[:3], self.epoch_sums.seconds + running_s]
        saved["elapsed_s"] = self.elapsed_s + running_s
        return {**saved, "metrics": dict(self.last_record)}

    @classmethod
    def from_checkpoint(cls, checkpoint: dict | None) -> "TrainState":
        if checkpoint is None:
            return cls()
        state = cls(**{name: checkpoint[name] for name in STATE_FIELDS}, last_record=dict(checkpoint["metrics"]))
        state.epoch_sums = EpochSums(*checkpoint["epoch_sums"])
        return state


@dataclass
class Run:
    """Everything a training process holds while it trains, built once by ``_build``."""

    config: Config
    ctx: DistContext
    info: Any  # the data set's DataInfo
    model: nn.Module  # what the step calls (DistributedDataParallel in a distributed run)
    raw_model: nn.Module  # the module itself: its state dict is what checkpoints hold
    eval_model: nn.Module  # what evaluation calls: raw_model, compiled if train.compile
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    train_loader: Any
    val_loader: Any
    train_sampler: SeededShardSampler
    loader_generator: torch.Generator
    local_batch: int
    measured: Any  # params and MACs
    state: TrainState
    progress: bool
    folder: RunFolder | None = None
    log: logging.Logger | None = None
    writer: Any = None
    regulator: RegulatorLog | None = None  # per-epoch regulator statistics (rank 0 of a RegNet run)
    epoch_started: float = 0.0  # this process's start of the current epoch
    clock: EpochClock = field(default_factory=EpochClock)  # where the current epoch's time goes (host clocks)
    train_end: float = 0.0
    lr: float = 0.0  # the LR of the epoch's last step
    last_saved: float = field(default_factory=time.monotonic)
    # The steps' sums since they were last read, on the device: loss x images, correct, images, non-finite losses.
    pending: torch.Tensor | None = None
    data_note: str | None = None  # a choice the data loader made (e.g. a carved validation split), for the log

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_loader)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of an epoch's random streams on one process: a function of (seed, epoch, rank) alone."""
    return (seed * 1_000_003 + epoch * 7_919 + rank * 104_729) % 2**32


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def train(config: Config | None = None, *, resume: str | Path | None = None, device: str | None = None,
          progress: bool | None = None, tags: Sequence[str] = (), note: str = "") -> Path:
    """Train a new run from ``config``, or continue the run in folder ``resume``; returns the run folder.
    A new run's folder appears with ``tags`` and ``note`` (``regnet.runs.annotations``) already in it.

    Bad input (unknown model, missing data, a run folder that exists...)
    raises ValueError/OSError before any run folder is created. Once the run
    folder exists, failures raise ``RunFailed`` after recording themselves in
    status.json and train.log.
    """
    checkpoint, status = None, None
    if resume is not None:
        resume = Path(resume)
        config, checkpoint, status = _resumable(resume)
    config = config if config is not None else Config()
    if device is not None:
        config.train.device = device
    check_names(config)
    annotations = (clean_tags(tags), check_note(note))  # refused before anything starts
    ctx = init_distributed(config.train.device)
    try:
        with fast.gates_in_order(config.train.fast_gates):
            run = _build(config, ctx, resume, checkpoint, sys.stderr.isatty() if progress is None else progress)
            _open_folder(run, resume, status, checkpoint, annotations)
            return _run_epochs(run)
    finally:
        cleanup_distributed(ctx)


def _resumable(run_dir: Path) -> tuple[Config, dict | None, dict | None]:
    """The config, last.pt (None before the first checkpoint) and status of a run that may be resumed.

    A finished run has nothing left to do and a live one must not get a second writer; anything damaged
    is one sentence, except status.json: the status is only a summary of last.pt and metrics.jsonl, so a
    damaged one is left out and rebuilt from them (as after a kill before the first status was written).
    """
    config = config_from_dict(read_config_dict(run_dir))
    last = checkpoint_file(run_dir, "last")
    try:
        status = read_status(run_dir) if os.path.lexists(run_dir / STATUS) else None
    except ValueError as error:  # DamagedFile: not valid JSON, not an object, not a regular file
        if not os.path.lexists(last):
            raise ValueError(f"{str(error).rstrip('.')}, and there is no {last} to rebuild it from; delete "
                             f"{run_dir / STATUS} and resume again to start the run over.") from None
        status = None
    if status is not None:
        if status.get("state") == "finished" and (run_dir / ARTIFACTS / FINAL_EVAL).is_file():
            raise ValueError(f"Run {run_dir} already finished; start a new run (or a longer one) instead of "
                             f"resuming it.")
        if reported_state(status) in ACTIVE_STATES and status.get("pid") != os.getpid():
            raise ValueError(f"Run {run_dir} is still running (pid {status.get('pid')}); stop it first "
                             f"(create {run_dir}/STOP).")
    if not os.path.lexists(last):
        return config, None, status  # killed before its first checkpoint: it starts again, same id and config
    checkpoint = load_checkpoint(last)
    missing = [key for key in RESUME_KEYS if key not in checkpoint]
    if missing:
        raise ValueError(f"Checkpoint {last} has no {', '.join(missing)} and cannot be resumed (a shipped or "
                         f"foreign checkpoint?); start a new run instead.")
    return config, checkpoint, status


def _build(config: Config, ctx: DistContext, resume: Path | None, checkpoint: dict | None, progress: bool) -> Run:
    """Data, model, optimizer and schedule, restored from ``checkpoint`` if given; fails before any folder exists."""
    t, device = config.train, ctx.device
    if t.batch_size % ctx.world_size:
        raise ValueError(f"train.batch_size {t.batch_size} does not split over {ctx.world_size} processes; "
                         f"use a multiple of {ctx.world_size}.")
    seed_everything(t.seed)
    splits = load_data(config)
    info = splits.info
    resolve_model(config, info)
    model = build_model_from_config(config)  # the initial weights depend on the seed alone
    measured = summary(model, (info.in_channels, info.image_size, info.image_size))
    if checkpoint is not None:
        load_model_weights(model, checkpoint["model"], checkpoint_file(resume, "last"), config.model.name)
    local_batch = t.batch_size // ctx.world_size
    train_sampler = SeededShardSampler(len(splits.train), t.seed, ctx.rank, ctx.world_size)
    loader_generator = torch.Generator()  # seeds worker processes; re-seeded every epoch
    train_loader = make_batches(config, splits.train, info, local_batch, train_sampler, device, train=True,
                                generator=loader_generator)
    val_sampler = SeededShardSampler(len(splits.val), rank=ctx.rank, world_size=ctx.world_size, shuffle=False,
                                     pad=False)
    val_loader = make_batches(config, splits.val, info, local_batch, val_sampler, device, train=False)
    model.to(device)
    if t.channels_last:
        model.to(memory_format=torch.channels_last)
    if ctx.distributed and hasattr(model, "training_loss"):
        raise ValueError(f"Model {config.model.name!r} trains through its own loss, which DistributedDataParallel "
                         f"does not wrap; train it on one process.")
    if ctx.distributed:
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    raw_model = model.module if ctx.distributed else model
    eval_model = compile_model(raw_model, config)
    model = compile_model(model, config)
    optimizer = build_optimizer(raw_model, config.optim)
    scheduler = build_scheduler(optimizer, config.schedule, t.epochs, len(train_loader))
    # float16 needs loss scaling; bfloat16 has float32's range
    scaler = torch.amp.GradScaler("cuda", enabled=t.amp and device.type == "cuda"
                                  and amp_dtype(device, t.amp_dtype) == torch.float16)
    state = TrainState.from_checkpoint(checkpoint)
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        if state.epoch_step and ctx.is_main:
            restore_rng(checkpoint["rng"])
        elif state.epoch_step:
            seed_everything(epoch_seed(t.seed, state.epoch, ctx.rank) + state.step)
    return Run(config, ctx, info, model, raw_model, eval_model, optimizer, scheduler, scaler,
               nn.CrossEntropyLoss(label_smoothing=t.label_smoothing), train_loader, val_loader, train_sampler,
               loader_generator, local_batch, measured, state, progress, data_note=splits.note)


def _open_folder(run: Run, resume: Path | None, status: dict | None, checkpoint: dict | None,
                 annotations: tuple[Sequence[str], str] = ((), "")) -> None:
    """Claim (or take over) the run folder, repair what a kill left, and write the ``running`` status."""
    config, ctx, st = run.config, run.ctx, run.state
    path = None
    if ctx.is_main:
        path = resume if resume is not None else create_run_folder(
            config.run.runs_root, config.run.run_id, config.model.name, run.info.name,
            lambda run_id: dump_config(_with_run_id(config, run_id)), *annotations)
    folder = run.folder = RunFolder(broadcast_object(str(path) if ctx.is_main else None, ctx))
    config.run.runs_root, config.run.run_id = str(folder.path.parent), folder.path.name
    run.log = _open_log(folder, ctx.is_main)
    if not ctx.is_main:
        return
    folder.take_over()
    folder.status = dict(status) if status is not None and checkpoint is not None else {"started_at": time.time()}
    if resume is not None:
        folder.truncate_metrics(after_step=st.step)  # lines logged after last.pt would repeat
        folder.stop_path.unlink(missing_ok=True)
        if checkpoint is not None:
            _repair_best(folder, checkpoint)
    folder.write_status(
        state="running", **process_identity(), run_id=folder.path.name, model=config.model.name,
        dataset=run.info.name, epoch=st.epoch, epochs=config.train.epochs, step=st.step,
        steps_per_epoch=run.steps_per_epoch, finished_at=None, elapsed_s=st.elapsed_s,
        best_metric=config.train.early_stop_metric, best_value=st.best_value, best_epoch=st.best_epoch,
        images_per_s=folder.status.get("images_per_s"), params=run.measured.params, macs=run.measured.macs, error=None,
    )
    from torch.utils.tensorboard import SummaryWriter

    run.writer = SummaryWriter(log_dir=str(folder.path), purge_step=st.step if resume is not None else None)
    run.regulator = RegulatorLog.open(run.raw_model, run.val_loader.dataset, config.train.seed, folder.path,
                                      ctx.device, st.epoch, run.writer, config.train.channels_last)
    drop_snapshots_after(folder.path, st.epoch)
    run.log.info(f"{'resumed' if resume else 'started'} {folder.path}: {config.model.name} on {run.info.name}, "
                 f"{run.measured.params:,} params, {len(run.train_loader.dataset)} train / "
                 f"{len(run.val_loader.dataset)} val images, {run.steps_per_epoch} steps per epoch, "
                 f"device {ctx.device}, {ctx.world_size} process(es)")
    cells_path = fast.describe(run.raw_model, ctx.device)
    if cells_path:
        run.log.info(cells_path)
    if run.data_note:
        run.log.info(run.data_note)


def _with_run_id(config: Config, run_id: str) -> Config:
    config.run.run_id = run_id
    return config


def _repair_best(folder: RunFolder, checkpoint: dict) -> None:
    """A kill between last.pt and best.pt leaves best.pt behind; last.pt then holds the best model, so copy it."""
    if checkpoint["epoch_step"] or checkpoint["best_epoch"] is None or checkpoint["best_epoch"] != checkpoint["epoch"]:
        return
    best = folder.checkpoint("best")
    try:
        epoch = load_checkpoint(best).get("epoch") if best.exists() else None
    except ValueError:
        epoch = None
    if epoch != checkpoint["epoch"]:
        save_checkpoint(checkpoint, best)


def _run_epochs(run: Run) -> Path:
    """Epochs until the last one, an early stop or a stop request, then the final evaluation; failures recorded."""
    t, st, folder = run.config.train, run.state, run.folder
    try:
        with StopSignals() as signals:
            last_val = None
            while st.epoch < t.epochs and not _early_stopped(run):
                if _train_epoch(run, signals):
                    return folder.path  # stopped mid-epoch, last.pt saved
                last_val = _validate_and_checkpoint(run)
                if _early_stopped(run):
                    _log(run, f"early stop: {t.early_stop_metric} has not improved for {st.bad_epochs} epochs "
                              f"(best {st.best_value:.4f} at epoch {st.best_epoch})")
                elif st.epoch < t.epochs and _stop_requested(run, signals):
                    if run.ctx.is_main:
                        folder.write_status(state="stopped", finished_at=time.time())
                    _log(run, f"stopped after epoch {st.epoch} ({st.epoch}/{t.epochs} epochs done); continue with: "
                              f"python -m regnet train --resume {folder.path}")
                    return folder.path
            _finish(run, last_val)
            return folder.path
    except BaseException as error:
        message = _one_sentence(error)
        if run.ctx.is_main:
            run.log.error(f"failed: {message}", exc_info=True)
            folder.write_status(state="failed", error=message, finished_at=time.time())
        raise RunFailed(message, folder.path) from error
    finally:
        if run.writer is not None:
            run.writer.close()
        for handler in list(run.log.handlers):
            handler.close()
            run.log.removeHandler(handler)


def _early_stopped(run: Run) -> bool:
    patience = run.config.train.early_stop_patience
    return patience is not None and run.state.bad_epochs >= patience


def _log(run: Run, message: str) -> None:
    if run.ctx.is_main:
        run.log.info(message)


def _train_epoch(run: Run, signals: StopSignals) -> bool:
    """One epoch of training (or the rest of one); True when a stop request ended it early (last.pt saved)."""
    t, st, ctx = run.config.train, run.state, run.ctx
    run.epoch_started, run.clock = time.time(), EpochClock()
    if st.epoch_step == 0:
        seed_everything(epoch_seed(t.seed, st.epoch, ctx.rank))
    run.train_sampler.set_epoch(st.epoch, skip=st.epoch_step * run.local_batch)
    run.loader_generator.manual_seed(epoch_seed(t.seed, st.epoch, ctx.rank))
    run.model.train()
    bar = tqdm(total=run.steps_per_epoch, initial=st.epoch_step, desc=f"epoch {st.epoch + 1}/{t.epochs}",
               disable=not (run.progress and ctx.is_main), leave=False, dynamic_ncols=True)
    window = EpochSums(seconds=time.time())  # since the last step line; ``seconds`` holds its start
    stop, waited = False, time.perf_counter()
    for images, targets, *boxes in run.train_loader:  # boxes: a detector's object boxes, where the data has them
        run.clock.add("data_s", time.perf_counter() - waited)
        run.lr = run.optimizer.param_groups[0]["lr"]
        with run.clock.phase("compute_s"):
            _train_step(run, images, targets, boxes)
        st.step += 1
        st.epoch_step += 1
        bar.update(1)
        asked = signals.received is not None or (ctx.is_main and run.folder.stop_requested())
        alone, log_step = ctx.world_size == 1, st.step % t.log_every == 0
        # A distributed run reads its sums at log steps only (collectively); a run alone also where it must.
        due = st.epoch_step < run.steps_per_epoch and _checkpoint_due(run) and (alone or log_step)
        if (asked and alone) or log_step or due:
            with run.clock.phase("compute_s"):  # the read waits for the device's queued steps
                stop = _read_sums(run, window, asked)
        if stop or log_step:
            _log_step(run, window, bar)  # a stop logs its last step too, so no trained step goes unrecorded
            window = EpochSums(seconds=time.time())
        if stop:
            break
        if due:
            with run.clock.phase("checkpoint_s"):
                _save(run, "last", running_s=time.time() - run.epoch_started)
            run.folder.write_status(step=st.step, elapsed_s=st.elapsed_s + st.epoch_sums.seconds + time.time()
                                    - run.epoch_started)
        waited = time.perf_counter()
    if run.pending is not None:  # the epoch's last steps since the last read (every process ends here alike)
        with run.clock.phase("compute_s"):
            stop = _read_sums(run, window, False)
        _log_step(run, window, bar)
    bar.close()
    run.train_end = time.time()
    st.epoch_sums.seconds += run.train_end - run.epoch_started
    if not stop:
        return False
    st.elapsed_s += run.train_end - run.epoch_started  # mid-epoch: save how far we got, to continue from here
    if ctx.is_main:
        _save(run, "last")
        run.folder.write_status(state="stopped", step=st.step, elapsed_s=st.elapsed_s, finished_at=time.time())
    _log(run, f"stopped in epoch {st.epoch + 1} at step {st.step} ({st.epoch}/{t.epochs} epochs done; "
              f"{signals.received or 'STOP file'}); continue with: python -m regnet train --resume {run.folder.path}")
    return True


def _train_step(run: Run, images, targets, boxes: list) -> None:
    """One optimizer step; its loss, accuracy and finiteness are added to ``run.pending`` on the device.

    Nothing is read back to the host here (on a GPU that would stall every
    step): :func:`_read_sums` reads the sums at log steps. A non-finite loss
    is therefore found at the next log step, before any checkpoint is written.
    """
    t, device = run.config.train, run.ctx.device
    images = images.to(device, non_blocking=True)
    targets = targets.to(device, non_blocking=True)
    boxes = [b.to(device, non_blocking=True) for b in boxes]
    if t.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with autocast(device, t.amp, t.amp_dtype):
        logits, loss = _forward_and_loss(run, images, targets, boxes)
    loss_ = loss.detach().double()
    stats = torch.stack([loss_ * len(targets), (logits.argmax(1) == targets).sum().double(),
                         torch.full((), float(len(targets)), dtype=torch.float64, device=device),
                         (~torch.isfinite(loss_)).double()])
    run.pending = stats if run.pending is None else run.pending + stats
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if t.grad_clip is not None:
        run.scaler.unscale_(run.optimizer)
        nn.utils.clip_grad_norm_(run.model.parameters(), t.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()


def _read_sums(run: Run, window: EpochSums, asked: bool) -> bool:
    """Sum the steps' pending stats over processes, read them to the host, and add them to ``window`` and the
    epoch's sums; True when any process asked to stop (``asked`` is this one's request).

    Every process calls this at the same steps (the all-reduce is collective); a process alone also calls it
    at the step a stop was asked for.
    """
    st = run.state
    flag = torch.full((1,), float(asked), dtype=torch.float64, device=run.ctx.device)
    loss, correct, images, nonfinite, stop = all_reduce_sum(torch.cat([run.pending, flag])).tolist()
    run.pending = None
    if nonfinite:
        raise NonFiniteLoss(f"The training loss became non-finite (inf or nan) in epoch {st.epoch + 1}, by step "
                            f"{st.step}; lower the learning rate or set train.grad_clip "
                            f"(e.g. --set train.grad_clip=1.0).")
    for sums in (window, st.epoch_sums):
        sums.loss, sums.correct, sums.images = sums.loss + loss, sums.correct + correct, sums.images + images
    return stop > 0


def _forward_and_loss(run: Run, images: torch.Tensor, targets: torch.Tensor,
                      boxes: list) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, loss) of a training batch: the model's own ``training_loss`` where it defines one (a detector
    trains on its detection losses, and on the batch's object ``boxes`` where it has them), else the config's
    criterion on its logits."""
    own_loss = getattr(run.raw_model, "training_loss", None)
    if own_loss is not None:
        return own_loss(images, targets, *boxes)
    logits = run.model(images)
    return logits, run.criterion(logits, targets)


def _log_step(run: Run, window: EpochSums, bar) -> None:
    """A step line in metrics.jsonl and TensorBoard, and the step in status.json."""
    st, now = run.state, time.time()
    record = {"kind": "step", "epoch": st.epoch + 1, "step": st.step, "time": now,
              "train_loss": window.loss / window.images, "lr": run.lr,
              "images_per_s": window.images / max(now - window.seconds, 1e-9)}
    bar.set_postfix(loss=f"{record['train_loss']:.3f}", img_s=f"{record['images_per_s']:.0f}")
    if not run.ctx.is_main:
        return
    run.folder.append_metrics(record)
    for key in ("train_loss", "lr", "images_per_s"):
        run.writer.add_scalar(f"step/{key}", record[key], st.step)
    train_s = st.epoch_sums.seconds + now - run.epoch_started  # this epoch's training seconds so far
    # status.json's images/s is the epoch's average so far (the step line keeps the window's, for the curve).
    run.folder.write_status(step=st.step, images_per_s=st.epoch_sums.images / max(train_s, 1e-9),
                            elapsed_s=st.elapsed_s + train_s)


def _checkpoint_due(run: Run) -> bool:
    """A mid-epoch last.pt every ``train.checkpoint_every_s`` (rank 0 alone writes it, so no process waits)."""
    every = run.config.train.checkpoint_every_s
    if every is None or not run.ctx.is_main or time.monotonic() - run.last_saved < every:
        return False
    return True


def _validate_and_checkpoint(run: Run) -> dict:
    """Validate, log the epoch line, then write last.pt, best.pt (if improved) and status.json, in that order."""
    t, st, info = run.config.train, run.state, run.info
    with run.clock.phase("eval_s"):
        val = evaluate(run.eval_model, run.val_loader, info.num_classes, run.ctx.device, amp=t.amp,
                       amp_dtype=t.amp_dtype, channels_last=t.channels_last)
    sums = st.epoch_sums
    now = time.time()
    st.elapsed_s += now - run.epoch_started
    st.epoch += 1
    st.last_record = {
        "kind": "epoch", "epoch": st.epoch, "step": st.step, "time": now,
        "train_loss": sums.loss / sums.images, "train_top1": sums.correct / sums.images,
        "val_loss": val["loss"], "val_top1": val["top1"], "val_top5": val["top5"],
        "val_macro_f1": val["macro_f1"], "lr": run.lr,
        "epoch_time_s": sums.seconds + (now - run.train_end), "images_per_s": sums.images / max(sums.seconds, 1e-9),
    }
    st.epoch_step, st.epoch_sums = 0, EpochSums()
    value = st.last_record[t.early_stop_metric]
    improved = st.best_value is None or (value < st.best_value if lower_is_better(t.early_stop_metric)
                                         else value > st.best_value)
    if improved:
        st.best_value, st.best_epoch, st.bad_epochs = value, st.epoch, 0
    else:
        st.bad_epochs += 1
    if run.ctx.is_main:
        run.folder.append_metrics(st.last_record)
        for key, number in st.last_record.items():
            if key not in ("kind", "epoch", "step", "time"):
                run.writer.add_scalar(f"epoch/{key}", number, st.step)
        if run.regulator is not None:
            with run.clock.phase("probe_s"):
                run.regulator.epoch_end(st.epoch, st.step)
        run.writer.flush()
        with run.clock.phase("checkpoint_s"):
            if snapshot_due(st.epoch, t.keep_every, last=st.epoch >= t.epochs or _early_stopped(run)):
                save_snapshot(run.folder.path, st.epoch, run.raw_model, config_to_dict(run.config), st.last_record)
            _save(run, "last")
            if improved:
                _save(run, "best")
        run.folder.write_status(epoch=st.epoch, step=st.step, elapsed_s=st.elapsed_s, best_value=st.best_value,
                                best_epoch=st.best_epoch)
        run.folder.append_metrics({"kind": "system", "epoch": st.epoch, "step": st.step, "time": time.time(),
                                   **run.clock.record(run.ctx.device)})
        r = st.last_record
        run.log.info(f"epoch {st.epoch}/{t.epochs}: train loss {r['train_loss']:.4f} top-1 {r['train_top1']:.3f} | "
                     f"val loss {val['loss']:.4f} top-1 {val['top1']:.3f} top-5 {val['top5']:.3f} macro-F1 "
                     f"{val['macro_f1']:.3f} | {r['epoch_time_s']:.1f}s, {r['images_per_s']:.0f} img/s")
    return val


def _finish(run: Run, last_val: dict | None) -> None:
    """The final model's evaluation (again, if a kill interrupted it), then status ``finished``."""
    t, st, info = run.config.train, run.state, run.info
    if last_val is None:  # resumed after the last epoch's checkpoint
        last_val = evaluate(run.eval_model, run.val_loader, info.num_classes, run.ctx.device, amp=t.amp,
                            amp_dtype=t.amp_dtype, channels_last=t.channels_last)
    if not run.ctx.is_main:
        return
    final = {"split": "val", "checkpoint": "last", "epoch": st.epoch,
             **{k: last_val[k] for k in ("loss", "top1", "top5", "macro_f1")},
             "class_names": info.class_names, "confusion_matrix": last_val["confusion_matrix"],
             "per_class": per_class_table(last_val["confusion_matrix"], info.class_names)}
    atomic_write_json(run.folder.artifacts / FINAL_EVAL, final)
    run.folder.write_status(state="finished", finished_at=time.time(), elapsed_s=st.elapsed_s)
    run.log.info(f"finished {run.folder.path}: val top-1 {last_val['top1']:.4f}, best {t.early_stop_metric} "
                 f"{st.best_value:.4f} at epoch {st.best_epoch}, {st.elapsed_s:.0f}s")


def _save(run: Run, which: str, running_s: float = 0.0) -> None:
    """last.pt or best.pt: the weights, the optimizer, the schedule, the TrainState and every random stream."""
    t, st = run.config.train, run.state
    save_checkpoint({
        "model": run.raw_model.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict(),
        **st.to_checkpoint(running_s),
        "rng": {**capture_rng(),
                "data_order": {"seed": t.seed + st.epoch, "position": st.epoch_step * run.local_batch}},
        "config": config_to_dict(run.config),
    }, run.folder.checkpoint(which))
    run.last_saved = time.monotonic()


def _stop_requested(run: Run, signals: StopSignals) -> bool:
    """Any process's signal, or the STOP file (read by rank 0), stops every process at the same step."""
    flag = torch.tensor([float(signals.received is not None or (run.ctx.is_main and run.folder.stop_requested()))],
                        device=run.ctx.device)
    return all_reduce_sum(flag).item() > 0


def _open_log(folder: RunFolder, is_main: bool) -> logging.Logger:
    """train.log in the run folder, echoed to stderr; a process other than rank 0 logs nothing."""
    log = logging.getLogger(f"regnet.run.{folder.path.resolve()}")
    log.setLevel(logging.INFO)
    log.propagate = False
    if is_main:
        file_handler = logging.FileHandler(folder.log_path)
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(file_handler)
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(_MessageOnly())  # tracebacks go to train.log only
        log.addHandler(console)
    else:
        log.addHandler(logging.NullHandler())
    return log


class _MessageOnly(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage()


def _one_sentence(error: BaseException) -> str:
    """Our own errors already are one sentence; anything else is named by its type and first line."""
    if isinstance(error, KeyboardInterrupt):
        return "Interrupted before the run could stop cleanly; resume it with --resume from its last checkpoint."
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if isinstance(error, (ValueError, OSError)) and text:
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
