"""What the Inspect page loads, cached: a run's model, its validation split, split-level analyses.

Models and splits are cached in memory per checkpoint identity (path, size,
mtime); split analyses are cached on disk under the run's ``artifacts/`` by
``regnet.inspect.cached``, so a second tab or a restarted server gets them at once.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st
from torch.utils.data import DataLoader, Subset

from regnet import inspect as ri
from regnet.data import check_data_available
from regnet.train.build import load_data
from regnet.train.runs import load_run_config, load_run_model

ANALYSIS_LIMIT = 10_000


def checkpoint_path(run_dir: Path) -> Path | None:
    """best.pt if present, else last.pt, else None (a run that has not finished an epoch)."""
    for name in ("best", "last"):
        path = run_dir / "checkpoints" / f"{name}.pt"
        if path.is_file():
            return path
    return None


@st.cache_resource(show_spinner="Loading the model...", max_entries=6)
def model_of(run_dir: str, which: str, identity: str):
    """(model, config dict) of a run; ``identity`` makes a retrained checkpoint load again."""
    return load_run_model(run_dir, which=which)


@st.cache_resource(show_spinner="Loading the validation split...", max_entries=4)
def splits_of(run_dir: str, data_root: str):
    """The run's splits without augmentation, from ``data_root``; never downloads from the dashboard."""
    config = load_run_config(run_dir)
    config.data.root = data_root
    check_data_available(config.data.name, data_root)  # a DataError naming the files, instead of a download
    return load_data(config, augment=False)


def split_analysis(run_dir: Path, which_path: Path, model, splits, limit: int = ANALYSIS_LIMIT) -> dict:
    """Every split-level analysis of a checkpoint on (up to ``limit`` images of) its validation split."""
    val = splits.val
    count = min(limit, len(val))
    key = ri.cache_key(ri.file_identity(which_path), splits.info.name, len(val), count)

    def compute() -> dict:
        subset = val if count == len(val) else Subset(val, range(count))
        loader = DataLoader(subset, batch_size=250)
        return ri.analyze_split(model, loader, splits.info.class_names)

    return ri.cached(run_dir / "artifacts", "inspect-split", key, compute)
