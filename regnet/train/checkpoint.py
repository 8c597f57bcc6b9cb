"""Checkpoints: written with the contract's atomic write, read with ``weights_only=True``, failures in one sentence.

A checkpoint holds plain types and tensors only (the config as a dict, RNG
states as tensors and lists), so ``torch.load(weights_only=True)`` reads it and
loading never runs code from the file.
"""
from __future__ import annotations

import errno
import os
import random
import stat
from pathlib import Path

import numpy as np
import torch
from torch import nn

from regnet.runs import atomic_write

ZIP_MAGIC = b"PK\x03\x04"  # torch.save has written zip archives since PyTorch 1.6
OTHER_CHECKPOINT = ("evaluate the run's other checkpoint instead (`python -m regnet eval RUN --which last`, or "
                    "best), or start a new run, since `train --resume` cannot continue from this file")


def save_checkpoint(payload: dict, path: str | Path) -> None:
    """Write ``payload`` to ``path`` with the contract's atomic write.

    If the write fails (a full disk, say) the temp file is removed and the
    previous checkpoint at ``path`` is untouched, so the run can be resumed.
    """
    path = Path(path)
    try:
        atomic_write(path, lambda handle: torch.save(payload, handle))
    except OSError as error:
        reason = "the disk is full" if error.errno == errno.ENOSPC else (error.strerror or str(error))
        failure = OSError(f"Could not write checkpoint {path}: {reason}; free some space and resume the run "
                          f"(the previous checkpoint is intact).")
        failure.errno = error.errno
        raise failure from None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint safely; a missing, truncated, foreign or non-regular file is a one-sentence ValueError."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"No checkpoint at {path}; the run has not finished an epoch yet, or pick --which last/best.")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as error:
        raise ValueError(f"Checkpoint {path} cannot be opened ({error.strerror or error}).") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"Checkpoint {path} is not a regular file (a pipe, a device or a folder); remove it.")
        if handle.read(4) != ZIP_MAGIC:  # refused before torch reads it: a raw pickle makes torch warn first
            raise ValueError(f"{path} is not a RegNet Lab checkpoint (not a PyTorch zip archive: a raw pickle or "
                             f"another file); {OTHER_CHECKPOINT}.")
        handle.seek(0)
        try:
            payload = torch.load(handle, map_location=map_location, weights_only=True)
        except Exception as error:  # torch raises RuntimeError, EOFError, UnpicklingError... for damaged files
            text = str(error).strip()
            reason = text.splitlines()[0].split(". ")[0][:120] if text else type(error).__name__
            raise ValueError(f"Checkpoint {path} is truncated or corrupt and cannot be read ({reason}); "
                             f"{OTHER_CHECKPOINT}.") from None
    if not isinstance(payload, dict) or "model" not in payload:
        raise ValueError(f"{path} is not a RegNet Lab checkpoint (no model weights in it).")
    weights = payload["model"]
    if not isinstance(weights, dict) or not weights or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()):
        raise ValueError(f"{path} is not a RegNet Lab checkpoint (its 'model' entry is not a dict of named "
                         "weight tensors); pick another checkpoint or retrain.")
    return payload


def load_model_weights(model: nn.Module, state_dict: dict, path: str | Path, model_name: str) -> None:
    """``load_state_dict`` with a sentence instead of a page of missing keys when the checkpoint is another model's."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [k for k in own if k in state_dict and tuple(own[k].shape) != tuple(state_dict[k].shape)]
    if missing or unexpected or mismatched:
        example = (missing or unexpected or mismatched)[0]
        raise ValueError(
            f"Checkpoint {path} does not fit model {model_name} ({len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(mismatched)} mis-shaped tensors, e.g. {example}); it was saved from another model or options."
        )
    model.load_state_dict(state_dict)


def capture_rng() -> dict:
    """Every random stream a step draws from (torch CPU and CUDA, numpy, python), as weights_only-safe types."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": _to_lists(random.getstate()),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    random.setstate(_to_tuples(state["python"]))
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(value):
    return [_to_lists(v) for v in value] if isinstance(value, tuple) else value


def _to_tuples(value):
    return tuple(_to_tuples(v) for v in value) if isinstance(value, list) else value
