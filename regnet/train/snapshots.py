"""Epoch snapshots (``train.keep_every: K``): the weights every K epochs, so a run can be inspected at any epoch.

A snapshot is weights-only (the model, its config, the epoch and that epoch's metrics line), about the
size of the model, written with the contract's atomic write, and read by every checkpoint reader
(``load_run_model(run, which="epoch-007")``). The first and the last epoch are always kept when K > 0, so
the series spans the run. A snapshot is written before last.pt: a kill in between repeats the epoch on
resume and writes the same snapshot again; snapshots of epochs after the resumed one (work the kill lost)
are removed when the run resumes, so the series always matches the run's history.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from regnet.runs import snapshot_epochs, snapshot_file

from .checkpoint import save_checkpoint


def snapshot_due(epoch: int, keep_every: int, last: bool) -> bool:
    """Whether epoch ``epoch`` (1-based) keeps a snapshot: every K-th, the first and the last, when K > 0."""
    return keep_every > 0 and (epoch == 1 or epoch % keep_every == 0 or last)


def save_snapshot(run_dir: str | Path, epoch: int, model: nn.Module, config: dict, metrics: dict) -> Path:
    """checkpoints/epoch-NNN.pt with the weights (float32, on the CPU), the config and the epoch's metrics."""
    weights = {k: v.detach().float().cpu() if v.is_floating_point() else v.detach().cpu()
               for k, v in model.state_dict().items()}
    path = snapshot_file(run_dir, epoch)
    save_checkpoint({"model": weights, "config": config, "epoch": epoch, "metrics": dict(metrics)}, path)
    return path


def drop_snapshots_after(run_dir: str | Path, epoch: int) -> None:
    """Remove the snapshots of epochs after ``epoch``: a resumed run trains those epochs again."""
    for kept, path in snapshot_epochs(run_dir).items():
        if kept > epoch:
            path.unlink(missing_ok=True)
