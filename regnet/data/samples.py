"""A shipped checkpoint's own sample of validation images: ``<run>/samples/<class>/<file>`` + ``manifest.json``.

A fresh clone has no data set, yet a user should still see the model on real images it never trained
on. So a shipped run may carry a few of its validation images, copied byte for byte, with a manifest
recording what they are (the data set's ``DatasetInfo``, the split they came from, each label).
``load_sample_split`` turns that folder back into a split that yields exactly what the run's real
validation split yields for the same images: same files, same labels and class order, same
evaluation transform. ``bench/ship_samples.py`` writes the folder.
"""
from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from .errors import DataError
from .folders import ImageFiles
from .info import DatasetInfo, recognised_name
from .splits import DatasetSplit
from .transforms import build_transform

SAMPLES_DIR = "samples"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
_INFO_KEYS = ("name", "num_classes", "in_channels", "image_size", "class_names", "mean", "std", "family")
_FIX = "re-create the folder with bench/ship_samples.py"


def has_samples(run_dir: str | Path) -> bool:
    """Whether a run folder carries a sample (its manifest exists); reads nothing, so it is cheap to call per run."""
    return (Path(run_dir) / SAMPLES_DIR / MANIFEST).is_file()


def _damaged(path: Path, what: str) -> DataError:
    return DataError(f"Sample manifest {path} is damaged ({what}); {_FIX}.")


def read_manifest(folder: str | Path) -> dict:
    """The parsed ``manifest.json`` of a samples folder; DataError when it is missing or not a JSON object."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise DataError(f"{Path(folder)} has no {MANIFEST}, so its images have no labels; {_FIX}.")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _damaged(path, f"not readable JSON: {error}") from None
    if not isinstance(manifest, dict):
        raise _damaged(path, "not a JSON object")
    if manifest.get("format") != MANIFEST_FORMAT:
        raise _damaged(path, f"format {manifest.get('format')!r}, expected {MANIFEST_FORMAT}")
    return manifest


def _is_number_list(value, length: int) -> bool:
    return (isinstance(value, list) and len(value) == length
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))


def _info_of(manifest: dict, path: Path) -> DatasetInfo:
    """The manifest's ``info`` as the DatasetInfo ``load_splits`` gives (tuples for mean and std, as there)."""
    info = manifest.get("info")
    if not isinstance(info, dict) or any(key not in info for key in _INFO_KEYS):
        raise _damaged(path, f"its 'info' needs the keys {', '.join(_INFO_KEYS)}")
    names, channels = info["class_names"], info["in_channels"]
    if not (isinstance(names, list) and names and all(isinstance(n, str) and n for n in names)
            and len(set(names)) == len(names) and info["num_classes"] == len(names)):
        raise _damaged(path, "'class_names' must be num_classes distinct names")
    if not (isinstance(channels, int) and _is_number_list(info["mean"], channels)
            and _is_number_list(info["std"], channels) and isinstance(info["image_size"], int)):
        raise _damaged(path, "'mean' and 'std' need in_channels numbers and 'image_size' a whole number")
    return DatasetInfo(recognised_name(str(info["name"]), names), len(names), channels, info["image_size"], list(names),
                       tuple(info["mean"]), tuple(info["std"]), str(info["family"]))


def _entries(manifest: dict, class_names: list[str], path: Path) -> list[tuple[str, int]]:
    """(relative file, label) of every listed image; each file must sit in its own label's class folder."""
    images = manifest.get("images")
    if not isinstance(images, list) or not images or manifest.get("count") != len(images):
        raise _damaged(path, "'images' must be a non-empty list of 'count' entries")
    entries = []
    for entry in images:
        file = entry.get("file") if isinstance(entry, dict) else None
        label = entry.get("label") if isinstance(entry, dict) else None
        parts = PurePosixPath(file).parts if isinstance(file, str) else ()
        if not (isinstance(label, int) and 0 <= label < len(class_names) and len(parts) == 2
                and parts[0] == class_names[label] and parts[1] not in ("", ".", "..")):
            raise _damaged(path, f"image entry {entry!r} is not {{'file': '<class>/<name>', 'label': <its index>}}")
        entries.append((file, label))
    return entries


def _check_folders(folder: Path, class_names: list[str]) -> None:
    """A class folder the manifest does not name would hold images of unknown label: refuse rather than skip."""
    known = set(class_names)
    unknown = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")
                     and p.name not in known)
    if unknown:
        raise DataError(f"{folder} has class folder(s) {', '.join(unknown[:3])} that its {MANIFEST} does not list; "
                        f"remove them or {_FIX}.")


def load_sample_split(folder: str | Path) -> tuple[DatasetSplit, DatasetInfo]:
    """The images of a samples folder (e.g. ``run_dir / SAMPLES_DIR``) as an evaluation split, with its DatasetInfo.

    Item i is the manifest's i-th image as a normalised tensor and its label; ``.targets`` lists the
    labels. The transform is the run's evaluation transform: image files may differ in size, so, like
    ``load_splits`` for every image-file data set, it resizes to ``image_size`` before normalising.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    info = _info_of(manifest, folder / MANIFEST)
    entries = _entries(manifest, info.class_names, folder / MANIFEST)
    _check_folders(folder, info.class_names)
    missing = [file for file, _ in entries if not (folder / file).is_file()]
    if missing:
        raise DataError(f"{folder} lacks {len(missing)} image(s) its {MANIFEST} lists, e.g. {missing[0]}; "
                        f"restore them or {_FIX}.")
    try:
        transform = build_transform(info.family, info.image_size, info.mean, info.std, train=False, resize=True)
    except ValueError as error:
        raise _damaged(folder / MANIFEST, str(error).rstrip(".")) from None
    base = ImageFiles([(str(folder / file), label) for file, label in entries], info.class_names)
    return DatasetSplit(base, range(len(entries)), transform), info
