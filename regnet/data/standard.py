"""CIFAR-10/100, MNIST and Fashion-MNIST through torchvision, with errors that say where the files go.

torchvision downloads when asked, but offline (or with a wrong root) it raises generic errors;
here every failure becomes a DataError naming the folder and the files it expects. No transform
is attached: the split views add their own.
"""
from __future__ import annotations

from pathlib import Path

from torchvision import datasets

from .errors import DataError
from .info import CIFAR10_STATS, CIFAR100_STATS, FASHION_MNIST_STATS, MNIST_STATS, RawData

_TITLES = {datasets.CIFAR10: "CIFAR-10", datasets.CIFAR100: "CIFAR-100", datasets.MNIST: "MNIST",
           datasets.FashionMNIST: "Fashion-MNIST"}
_ARCHIVES = {datasets.CIFAR10: "cifar-10-python.tar.gz", datasets.CIFAR100: "cifar-100-python.tar.gz"}
# What torchvision can fail with on a missing, partial or corrupt copy (and offline downloads: URLError is an OSError).
_OR_DOWNLOAD = "or load it with download=True on a machine with network access"
_READ_ERRORS = (RuntimeError, OSError, ValueError, EOFError, KeyError, AssertionError)


def _brief(error: Exception) -> str:
    """torchvision's messages span lines (one per mirror tried); fold them into one short clause."""
    text = " ".join(str(error).split())
    return text if len(text) <= 160 else text[:157] + "..."


def _require_root(root: Path, title: str) -> None:
    if not root.is_dir():
        raise DataError(f"Data root {root} does not exist; create it (downloads of {title} go there) "
                        "or pass the folder that holds the data.")


# ---- CIFAR ---------------------------------------------------------------------------------------

def _cifar_files(cls) -> list[str]:
    return [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]


def _cifar_base(root: Path, cls) -> Path:
    """Accept both the parent and the ``cifar-10-batches-py`` folder itself as the root."""
    return root.parent if root.name == cls.base_folder else root


def _cifar_files_go(root: Path, cls) -> str:
    return (f"put {', '.join(_cifar_files(cls))} (the python version, {_ARCHIVES[cls]} unpacked) "
            f"in {root / cls.base_folder}")


def check_cifar(root: Path, cls) -> None:
    root = _cifar_base(root, cls)
    _require_root(root, _TITLES[cls])
    missing = [name for name in _cifar_files(cls) if not (root / cls.base_folder / name).is_file()]
    if missing:
        raise DataError(f"{_TITLES[cls]} is not in {root}; {_cifar_files_go(root, cls)}, {_OR_DOWNLOAD}.")


def load_cifar(root: Path, cls, *, download: bool = True, **_) -> RawData:
    root = _cifar_base(root, cls)
    _require_root(root, _TITLES[cls])
    try:
        check_cifar(root, cls)
    except DataError:
        if not download:
            raise
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except _READ_ERRORS as error:
        raise DataError(f"Could not read or download {_TITLES[cls]} in {root} ({_brief(error)}); "
                        f"{_cifar_files_go(root, cls)} (official, unmodified files).") from error
    stats = CIFAR10_STATS if cls is datasets.CIFAR10 else CIFAR100_STATS
    return RawData(train, test, list(train.classes), 3, 32, "cifar", stats)


# ---- MNIST family --------------------------------------------------------------------------------

def _idx_files(cls) -> list[str]:
    return [filename.removesuffix(".gz") for filename, _ in cls.resources]


def _raw_folder(root: Path, cls) -> Path:
    return root / cls.__name__ / "raw"


def _mnist_base(root: Path, cls) -> Path:
    """Accept the parent, ``<root>/MNIST`` or ``<root>/MNIST/raw`` as the root."""
    if root.name == "raw" and root.parent.name == cls.__name__:
        return root.parent.parent
    return root.parent if root.name == cls.__name__ else root


def _mnist_files_go(root: Path, cls) -> str:
    return (f"put {', '.join(f + '.gz' for f in _idx_files(cls))} (or the same files unpacked) "
            f"in {_raw_folder(root, cls)}")


def _has_idx(root: Path, cls, suffix: str) -> bool:
    return all((_raw_folder(root, cls) / (name + suffix)).is_file() for name in _idx_files(cls))


def check_mnist(root: Path, cls) -> None:
    root = _mnist_base(root, cls)
    _require_root(root, _TITLES[cls])
    if not (_has_idx(root, cls, "") or _has_idx(root, cls, ".gz")):
        raise DataError(f"{_TITLES[cls]} is not in {root}; {_mnist_files_go(root, cls)}, {_OR_DOWNLOAD}.")


def _mnist_classes(cls, dataset) -> list[str]:
    # torchvision names the digits "0 - zero"; the bare digit reads better on chart axes.
    return [str(d) for d in range(10)] if cls is datasets.MNIST else list(dataset.classes)


def load_mnist(root: Path, cls, *, download: bool = True, **_) -> RawData:
    """The official IDX files: unpacked ones are read as they are; .gz ones are unpacked by torchvision.

    Unpacking local .gz files (md5-checked by torchvision) is not a download, so it happens even
    with ``download=False``.
    """
    root = _mnist_base(root, cls)
    _require_root(root, _TITLES[cls])
    unpacked = _has_idx(root, cls, "")
    if not unpacked and not download and not _has_idx(root, cls, ".gz"):
        raise DataError(f"{_TITLES[cls]} is not in {root}; {_mnist_files_go(root, cls)}, {_OR_DOWNLOAD}.")
    try:
        train = cls(str(root), train=True, download=not unpacked)
        test = cls(str(root), train=False, download=not unpacked)
    except _READ_ERRORS as error:
        raise DataError(f"Could not read, unpack or download {_TITLES[cls]} in {root} ({_brief(error)}); "
                        f"{_mnist_files_go(root, cls)} (official, unmodified files).") from error
    stats = MNIST_STATS if cls is datasets.MNIST else FASHION_MNIST_STATS
    return RawData(train, test, _mnist_classes(cls, train), 1, 28, "mnist", stats)
