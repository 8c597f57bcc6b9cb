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

Stopping. SIGINT, SIGTERM or a file named STOP in the run folder make the run
finish its current step, write last.pt, set status ``stopped`` and return
normally. A non-finite loss or any exception sets status ``failed`` with one
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
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from regnet.metrics import per_class_table
from regnet.models import summary

from .build import build_model_from_config, check_names, load_data, make_loader, resolve_model
from .checkpoint import capture_rng, load_checkpoint, load_model_weights, restore_rng, save_checkpoint
from .config import Config, config_to_dict, dump_config, load_config, lower_is_better
from .distributed import (DistContext, SeededShardSampler, all_reduce_sum, autocast, broadcast_object,
                          cleanup_distributed, init_distributed)
from .metrics import evaluate
from .runfolder import (CONFIG, FINAL_EVAL, RunFolder, atomic_write_json, atomic_write_text, create_run_folder,
                        read_status)
from .schedules import build_optimizer, build_scheduler


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
    marked failed and resumes from its last epoch-end checkpoint.
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


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of an epoch's random streams on one process: a function of (seed, epoch, rank) alone."""
    return (seed * 1_000_003 + epoch * 7_919 + rank * 104_729) % 2**32


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def train(config: Config | None = None, *, resume: str | Path | None = None, device: str | None = None,
          progress: bool | None = None) -> Path:
    """Train a new run from ``config``, or continue the run in folder ``resume``; returns the run folder.

    Bad input (unknown model, missing data, a run folder that exists...)
    raises ValueError/OSError before any run folder is created. Once the run
    folder exists, failures raise ``RunFailed`` after recording themselves in
    status.json and train.log.
    """
    if resume is not None:
        resume = Path(resume)
        if not (resume / CONFIG).is_file():
            raise ValueError(f"{resume} is not a run folder (no {CONFIG}); pass a folder under runs/ to --resume.")
        config = load_config(resume / CONFIG)
    config = config if config is not None else Config()
    if device is not None:
        config.train.device = device
    check_names(config)
    ctx = init_distributed(config.train.device)
    try:
        return _train(config, ctx, resume, sys.stderr.isatty() if progress is None else progress)
    finally:
        cleanup_distributed(ctx)


def _train(config: Config, ctx: DistContext, resume: Path | None, progress: bool) -> Path:
    t, device = config.train, ctx.device

    # ---- everything that can be wrong with the input fails here, before a run folder exists
    checkpoint = None
    if resume is not None:
        _check_resumable(resume)
        checkpoint = load_checkpoint(RunFolder(resume).checkpoint("last"))
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
        load_model_weights(model, checkpoint["model"], RunFolder(resume).checkpoint("last"), config.model.name)

    local_batch = t.batch_size // ctx.world_size
    train_sampler = SeededShardSampler(len(splits.train), t.seed, ctx.rank, ctx.world_size)
    loader_generator = torch.Generator()  # seeds worker processes; re-seeded every epoch
    train_loader = make_loader(splits.train, local_batch, train_sampler, config.data.workers, device, loader_generator)
    val_sampler = SeededShardSampler(len(splits.val), rank=ctx.rank, world_size=ctx.world_size, shuffle=False,
                                     pad=False)
    val_loader = make_loader(splits.val, local_batch, val_sampler, config.data.workers, device)
    steps_per_epoch = len(train_loader)

    model.to(device)
    if t.channels_last:
        model.to(memory_format=torch.channels_last)
    if ctx.distributed:
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    raw_model = model.module if ctx.distributed else model
    optimizer = build_optimizer(raw_model, config.optim)
    scheduler = build_scheduler(optimizer, config.schedule, t.epochs, steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda", enabled=t.amp and device.type == "cuda")  # fp16 needs loss scaling
    criterion = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)

    # ---- where we are: from scratch, or from last.pt
    epoch, step, epoch_step = 0, 0, 0
    epoch_sums = [0.0, 0.0, 0.0, 0.0]  # this epoch so far: loss sum, correct, images, seconds
    best_value, best_epoch, bad_epochs, elapsed_s = None, None, 0, 0.0
    last_record: dict = {}
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        epoch, step, epoch_step = checkpoint["epoch"], checkpoint["step"], checkpoint["epoch_step"]
        epoch_sums = list(checkpoint["epoch_sums"])
        best_value, best_epoch = checkpoint["best_value"], checkpoint["best_epoch"]
        bad_epochs, elapsed_s = checkpoint["bad_epochs"], checkpoint["elapsed_s"]
        last_record = dict(checkpoint["metrics"])
        if epoch_step and ctx.is_main:
            restore_rng(checkpoint["rng"])
        elif epoch_step:
            seed_everything(epoch_seed(t.seed, epoch, ctx.rank) + step)

    # ---- the run folder (rank 0 writes it; the others only need its path)
    if ctx.is_main:
        path = resume if resume is not None else create_run_folder(config.run.runs_root, config.run.run_id,
                                                                    config.model.name, info.name)
    folder = RunFolder(broadcast_object(str(path) if ctx.is_main else None, ctx))
    config.run.runs_root, config.run.run_id = str(folder.path.parent), folder.path.name
    writer = None
    log = _open_log(folder, ctx.is_main)
    if ctx.is_main:
        folder.make_subfolders()
        if resume is None:
            atomic_write_text(folder.config_path, dump_config(config))
            folder.status = {"started_at": time.time()}
        else:
            folder.status = read_status(folder.path)
            folder.truncate_metrics(after_step=step)  # lines logged after last.pt would repeat
            folder.stop_path.unlink(missing_ok=True)
        folder.write_status(
            state="running", pid=os.getpid(), run_id=folder.path.name, model=config.model.name, dataset=info.name,
            epoch=epoch, epochs=t.epochs, step=step, steps_per_epoch=steps_per_epoch, finished_at=None,
            elapsed_s=elapsed_s, best_metric=t.early_stop_metric, best_value=best_value, best_epoch=best_epoch,
            images_per_s=folder.status.get("images_per_s"), params=measured.params, macs=measured.macs, error=None,
        )
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(folder.path), purge_step=step if resume is not None else None)
        log.info(f"{'resumed' if resume else 'started'} {folder.path}: {config.model.name} on {info.name}, "
                 f"{measured.params:,} params, {len(splits.train)} train / {len(splits.val)} val images, "
                 f"{steps_per_epoch} steps per epoch, device {device}, {ctx.world_size} process(es)")

    def save(which: str) -> None:
        save_checkpoint({
            "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "epoch": epoch, "step": step, "epoch_step": epoch_step, "epoch_sums": epoch_sums,
            "best_value": best_value, "best_epoch": best_epoch, "bad_epochs": bad_epochs, "elapsed_s": elapsed_s,
            "rng": {**capture_rng(), "data_order": {"seed": t.seed + epoch, "position": epoch_step * local_batch}},
            "config": config_to_dict(config), "metrics": last_record,
        }, folder.checkpoint(which))

    def stop_requested(signals: StopSignals) -> bool:
        """Any process's signal, or the STOP file (read by rank 0), stops every process at the same step."""
        flag = torch.tensor([float(signals.received is not None or (ctx.is_main and folder.stop_requested()))],
                            device=device)
        return all_reduce_sum(flag).item() > 0

    last_val = None
    try:
        with StopSignals() as signals:
            while epoch < t.epochs:
                # ---- one epoch of training
                started = time.time()
                if epoch_step == 0:
                    seed_everything(epoch_seed(t.seed, epoch, ctx.rank))
                train_sampler.set_epoch(epoch, skip=epoch_step * local_batch)
                loader_generator.manual_seed(epoch_seed(t.seed, epoch, ctx.rank))
                model.train()
                bar = tqdm(total=steps_per_epoch, initial=epoch_step, desc=f"epoch {epoch + 1}/{t.epochs}",
                           disable=not (progress and ctx.is_main), leave=False, dynamic_ncols=True)
                window = [0.0, 0, time.time()]  # since the last step line: loss sum, images, start
                lr = optimizer.param_groups[0]["lr"]
                stop = False
                for images, targets in train_loader:
                    images = images.to(device, non_blocking=True)
                    targets = targets.to(device, non_blocking=True)
                    if t.channels_last:
                        images = images.contiguous(memory_format=torch.channels_last)
                    lr = optimizer.param_groups[0]["lr"]
                    with autocast(device, t.amp):
                        logits = model(images)
                        loss = criterion(logits, targets)
                    # One all-reduce per step: the global batch's loss and accuracy, a non-finite loss on any
                    # process, and a stop request on any process; checked before the update touches the weights.
                    stop_flag = signals.received is not None or (ctx.is_main and folder.stop_requested())
                    stats = torch.stack([
                        loss.detach().float() * len(targets), (logits.argmax(1) == targets).sum().float(),
                        torch.tensor(float(len(targets)), device=device),
                        (~torch.isfinite(loss.detach())).float(), torch.tensor(float(stop_flag), device=device),
                    ]).double()
                    loss_sum, correct, count, nonfinite, stop = all_reduce_sum(stats).tolist()
                    if nonfinite:
                        raise NonFiniteLoss(
                            f"The training loss became non-finite (inf or nan) at epoch {epoch + 1}, "
                            f"step {step + 1}; "
                            f"lower the learning rate or set train.grad_clip (e.g. --set train.grad_clip=1.0).")
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    if t.grad_clip is not None:
                        scaler.unscale_(optimizer)
                        nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
                    scaler.step(optimizer)
                    scaler.update()
                    scheduler.step()
                    step += 1
                    epoch_step += 1
                    epoch_sums[:3] = [epoch_sums[0] + loss_sum, epoch_sums[1] + correct, epoch_sums[2] + count]
                    window[:2] = [window[0] + loss_sum, window[1] + count]
                    bar.update(1)
                    if step % t.log_every == 0 or epoch_step == steps_per_epoch:
                        now = time.time()
                        record = {"kind": "step", "epoch": epoch + 1, "step": step, "time": now,
                                  "train_loss": window[0] / window[1], "lr": lr,
                                  "images_per_s": window[1] / max(now - window[2], 1e-9)}
                        bar.set_postfix(loss=f"{record['train_loss']:.3f}", img_s=f"{record['images_per_s']:.0f}")
                        if ctx.is_main:
                            folder.append_metrics(record)
                            for key in ("train_loss", "lr", "images_per_s"):
                                writer.add_scalar(f"step/{key}", record[key], step)
                            folder.write_status(step=step, images_per_s=record["images_per_s"],
                                                elapsed_s=elapsed_s + epoch_sums[3] + now - started)
                        window = [0.0, 0, now]
                    if stop:
                        break
                bar.close()
                train_end = time.time()
                epoch_sums[3] += train_end - started

                if stop:  # mid-epoch: save how far we got, to continue from exactly here
                    elapsed_s += train_end - started
                    if ctx.is_main:
                        save("last")
                        folder.write_status(state="stopped", step=step, elapsed_s=elapsed_s, finished_at=time.time())
                        log.info(f"stopped at epoch {epoch + 1}, step {step} ({signals.received or 'STOP file'}); "
                                 f"continue with: python -m regnet train --resume {folder.path}")
                    return folder.path

                # ---- validation, logging, checkpoints
                val = evaluate(raw_model, val_loader, info.num_classes, device, amp=t.amp,
                               channels_last=t.channels_last)
                loss_sum, correct, count, train_seconds = epoch_sums
                now = time.time()
                elapsed_s += now - started
                epoch += 1
                last_record = {
                    "kind": "epoch", "epoch": epoch, "step": step, "time": now,
                    "train_loss": loss_sum / count, "train_top1": correct / count,
                    "val_loss": val["loss"], "val_top1": val["top1"], "val_top5": val["top5"],
                    "val_macro_f1": val["macro_f1"], "lr": lr,  # the LR of the epoch's last step
                    "epoch_time_s": train_seconds + (now - train_end),
                    "images_per_s": count / max(train_seconds, 1e-9),
                }
                epoch_step, epoch_sums = 0, [0.0, 0.0, 0.0, 0.0]
                value = last_record[t.early_stop_metric]
                improved = best_value is None or (value < best_value if lower_is_better(t.early_stop_metric)
                                                  else value > best_value)
                if improved:
                    best_value, best_epoch, bad_epochs = value, epoch, 0
                else:
                    bad_epochs += 1
                last_val = val
                if ctx.is_main:
                    folder.append_metrics(last_record)
                    for key, number in last_record.items():
                        if key not in ("kind", "epoch", "step", "time"):
                            writer.add_scalar(f"epoch/{key}", number, step)
                    writer.flush()
                    save("last")
                    if improved:
                        save("best")
                    folder.write_status(epoch=epoch, step=step, elapsed_s=elapsed_s, best_value=best_value,
                                        best_epoch=best_epoch)
                    log.info(f"epoch {epoch}/{t.epochs}: train loss {last_record['train_loss']:.4f} "
                             f"top-1 {last_record['train_top1']:.3f} | val loss {val['loss']:.4f} "
                             f"top-1 {val['top1']:.3f} top-5 {val['top5']:.3f} macro-F1 {val['macro_f1']:.3f} | "
                             f"{last_record['epoch_time_s']:.1f}s, {last_record['images_per_s']:.0f} img/s")
                if t.early_stop_patience is not None and bad_epochs >= t.early_stop_patience:
                    if ctx.is_main:
                        log.info(f"early stop: {t.early_stop_metric} has not improved for {bad_epochs} epochs "
                                 f"(best {best_value:.4f} at epoch {best_epoch})")
                    break
                if epoch < t.epochs and stop_requested(signals):
                    if ctx.is_main:
                        folder.write_status(state="stopped", finished_at=time.time())
                        log.info(f"stopped after epoch {epoch}; continue with: "
                                 f"python -m regnet train --resume {folder.path}")
                    return folder.path

            # ---- the final model's evaluation
            if last_val is None:  # resumed after the last epoch's checkpoint
                last_val = evaluate(raw_model, val_loader, info.num_classes, device, amp=t.amp,
                                    channels_last=t.channels_last)
            if ctx.is_main:
                final = {"split": "val", "checkpoint": "last", "epoch": epoch,
                         **{k: last_val[k] for k in ("loss", "top1", "top5", "macro_f1")},
                         "class_names": info.class_names, "confusion_matrix": last_val["confusion_matrix"],
                         "per_class": per_class_table(last_val["confusion_matrix"], info.class_names)}
                atomic_write_json(folder.artifacts / FINAL_EVAL, final)
                folder.write_status(state="finished", finished_at=time.time(), elapsed_s=elapsed_s)
                log.info(f"finished {folder.path}: val top-1 {last_val['top1']:.4f}, best {t.early_stop_metric} "
                         f"{best_value:.4f} at epoch {best_epoch}, {elapsed_s:.0f}s")
            return folder.path
    except BaseException as error:
        message = _one_sentence(error)
        if ctx.is_main:
            log.error(f"failed: {message}", exc_info=True)
            folder.write_status(state="failed", error=message, finished_at=time.time())
        raise RunFailed(message, folder.path) from error
    finally:
        if writer is not None:
            writer.close()
        for handler in list(log.handlers):
            handler.close()
            log.removeHandler(handler)


def _check_resumable(run_dir: Path) -> None:
    """A finished run has nothing left to do, and a live one must not get a second writer."""
    status = read_status(run_dir)
    if status.get("state") == "finished":
        raise ValueError(f"Run {run_dir} already finished; start a new run (or a longer one) instead of resuming it.")
    pid = status.get("pid")
    if status.get("state") == "running" and isinstance(pid, int) and pid != os.getpid() and _alive(pid):
        raise ValueError(f"Run {run_dir} is still running (pid {pid}); stop it first (create {run_dir}/STOP).")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
