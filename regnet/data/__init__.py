"""Data sets by name, their standard transforms, and seeded stratified splits.

``load_splits(name, root)`` is the entry point: it returns train/val/test views with their own
transforms and a ``DatasetInfo``; ``check_data_available`` answers "is it there?" without loading;
``load_sample_split`` reads the few validation images a shipped checkpoint carries in ``samples/``.
Depends on torch, torchvision and PIL only.
"""
from .errors import DataError
from .info import DatasetInfo, recognised_name
from .registry import (Splits, check_data_available, list_datasets, load_splits, load_test_only, resolve_name,
                       test_only_tree)
from .samples import SAMPLES_DIR, has_samples, load_sample_split, read_manifest
from .shapes import SHAPE_NAMES, ShapesDataset, generate_shapes
from .splits import DatasetSplit, MaskedDatasetSplit, stratified_split, stratified_subset
from .transforms import build_transform, denormalize

__all__ = [
    "DataError", "DatasetInfo", "Splits", "check_data_available", "list_datasets", "load_splits", "load_test_only",
    "recognised_name", "resolve_name", "test_only_tree",
    "SHAPE_NAMES", "ShapesDataset", "generate_shapes", "DatasetSplit", "MaskedDatasetSplit", "stratified_split",
    "stratified_subset",
    "build_transform", "denormalize", "SAMPLES_DIR", "has_samples", "load_sample_split", "read_manifest",
]
