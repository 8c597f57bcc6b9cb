"""Data sets read from image files: any ``root/<split>/<class>/*`` tree, and Tiny-ImageNet's own layout.

Files are listed once up front (so a wrong layout fails at load time with a clear message) and
decoded lazily; every image is converted to RGB because Tiny-ImageNet and ImageNet mix in a few
greyscale and CMYK files that would otherwise break batching.
"""
from __future__ import annotations

import os
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

from .errors import DataError
from .info import IMAGENET_STATS, TINY_IMAGENET_STATS, RawData

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
TINY_FOLDER = "tiny-imagenet-200"


_DECODE_ERRORS = (OSError, ValueError, Image.DecompressionBombError)  # PIL's UnidentifiedImageError is an OSError


def _undecodable(path, error: Exception) -> DataError:
    return DataError(f"Cannot decode image {path} ({error}); delete or replace that file.")


def load_rgb(path: str | Path) -> Image.Image:
    """Decode one image as RGB; a file PIL cannot read raises DataError naming it."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except _DECODE_ERRORS as error:
        raise _undecodable(path, error) from None


class ImageFiles(Dataset):
    """A list of (path, label) decoded on access; yields (RGB PIL image, int label)."""

    def __init__(self, samples: list[tuple[str, int]], classes: list[str]):
        self.samples = samples
        self.targets = [label for _, label in samples]
        self.classes = classes

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        return load_rgb(path), label


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _images_under(folder: Path) -> list[str]:
    """Every image file below ``folder`` (recursively, as torchvision's ImageFolder does), sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames.sort()
        found += [os.path.join(dirpath, f) for f in sorted(filenames) if _is_image(f)]
    return found


def _subdirs(folder: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith("."))


def _require_dir(root: Path, what: str) -> None:
    if not root.is_dir():
        raise DataError(f"Data root {root} does not exist; create it and put {what} there, or pass the right root.")


def find_folder_root(root: Path) -> Path:
    """The folder holding ``train/``: ``root`` itself, or its only sub-folder (as an unpacked archive leaves it)."""
    _require_dir(root, "a train/<class>/<image> tree")
    if (root / "train").is_dir():
        return root
    children = [root / name for name in _subdirs(root)]
    if len(children) == 1 and (children[0] / "train").is_dir():
        return children[0]
    raise DataError(f"No train/ folder in {root}; arrange the images as {root}/train/<class>/<image> "
                    "(optionally val/ or test/ beside it).")


def folder_class_names(root: str | Path) -> list[str] | None:
    """The class folders of the image-folder tree at ``root`` (its train/ split), or None where there is none.

    Cheap (no image is listed): it lets a listing name an old run recorded as "imagefolder" by its classes.
    """
    try:
        return _subdirs(find_folder_root(Path(root)) / "train")
    except (DataError, OSError):
        return None


def _scan_classes(split_dir: Path, class_to_idx: dict[str, int] | None = None, known: str = "train/",
                  fix: str = "give train/ and the held-out split the same class folders."):
    """(samples, classes) of one split folder.

    Without ``class_to_idx`` this is the training split: its folders define the classes and each must
    hold images. A held-out split reuses the training indices so label i means the same class in both;
    ``known`` names where those classes come from and ``fix`` the remedy, for a folder that is not one of them.
    """
    classes = _subdirs(split_dir)
    if not classes:
        if any(_is_image(f) for f in os.listdir(split_dir)):
            raise DataError(f"{split_dir} holds images but no class folders; sort them into {split_dir}/<class>/ "
                            "(for Tiny-ImageNet's val/images + val_annotations.txt use the tiny_imagenet data set).")
        raise DataError(f"{split_dir} has no class folders; put the images in {split_dir}/<class>/<image>.")
    training = class_to_idx is None
    if training:
        class_to_idx = {name: i for i, name in enumerate(classes)}
    unknown = [name for name in classes if name not in class_to_idx]
    if unknown:
        raise DataError(f"{split_dir} has class folder(s) {', '.join(unknown[:3])} that {known} lacks; {fix}")
    samples = []
    for name in classes:
        files = _images_under(split_dir / name)
        if training and not files:
            raise DataError(f"Class folder {split_dir / name} has no images ({', '.join(IMAGE_EXTENSIONS)}); "
                            "add images or remove the folder.")
        samples += [(path, class_to_idx[name]) for path in files]
    return samples, sorted(class_to_idx, key=class_to_idx.get)


def _probe_size(path: str) -> int:
    """The longer side of one image, read from its header only."""
    try:
        with Image.open(path) as image:
            return max(image.size)
    except _DECODE_ERRORS as error:
        raise _undecodable(path, error) from None


def load_imagefolder(root: Path, **_) -> RawData:
    """``root/train/<class>/*`` plus an optional ``root/test`` or ``root/val`` as the held-out split.

    The first training image sets the regime: images up to 32 px are treated like CIFAR (pad-crop,
    flip, native size), up to 64 px like Tiny-ImageNet, larger ones like ImageNet (224 px crops).
    """
    base = find_folder_root(root)
    train_samples, classes = _scan_classes(base / "train")
    class_to_idx = {name: i for i, name in enumerate(classes)}
    held_out = None
    for name in ("test", "val"):
        if (base / name).is_dir():
            samples, _ = _scan_classes(base / name, class_to_idx)
            held_out = ImageFiles(samples, classes)
            break
    family, natural = image_regime(_probe_size(train_samples[0][0]))
    return RawData(ImageFiles(train_samples, classes), held_out, classes, 3, natural, family, IMAGENET_STATS,
                   fixed_size=False)


def image_regime(side: int) -> tuple[str, int]:
    """(transform family, natural side) of image files whose longer side is ``side``: CIFAR-like up to 32 px,
    Tiny-ImageNet-like up to 64 px, ImageNet-like (224 px crops) above."""
    return ("cifar", side) if side <= 32 else ("tiny", side) if side <= 64 else ("imagenet", 224)


def held_out_tree(root: Path) -> Path | None:
    """The class folders of a copy that holds only a held-out split: ``test/`` (or ``val/``), also one level down
    as an unpacked archive leaves it, or ``root`` itself (a flat ``<class>/`` tree). None when a ``train/``
    tree is there (the ordinary layout) or ``root`` is no folder (the ordinary loader says what is wrong)."""
    if not root.is_dir():
        return None
    children = _subdirs(root)
    if len(children) == 1 and not {"train", "test", "val"} & set(children):
        inner = root / children[0]
        if {"train", "test", "val"} & set(_subdirs(inner)):
            root, children = inner, _subdirs(inner)
    if "train" in children or not children:
        return None
    for name in ("test", "val"):
        if name in children:
            return root / name
    return root


def load_held_out(split_dir: Path, class_names: list[str], wnid_words: bool = False) -> ImageFiles:
    """A held-out-only tree's images, labelled by a run's own class list (a folder it does not know is an error).

    ``wnid_words``: folders may also be Tiny-ImageNet wnids, named through a ``words.txt`` beside the tree.
    """
    class_to_idx = {name: i for i, name in enumerate(class_names)}
    if wnid_words:
        folders = _subdirs(split_dir)
        words = _class_names(split_dir.parent, folders)
        class_to_idx.update({wnid: class_to_idx[word] for wnid, word in zip(folders, words) if word in class_to_idx})
    known = f"the run's class list ({', '.join(class_names[:5])}{', ...' if len(class_names) > 5 else ''})"
    samples, _ = _scan_classes(split_dir, class_to_idx, known, "rename or remove them: a model is evaluated "
                               "on the classes it was trained on.")
    if not samples:
        raise DataError(f"No images under {split_dir}; put them in {split_dir}/<class>/<image>.")
    return ImageFiles(samples, list(class_names))


def check_imagefolder(root: Path) -> None:
    base = find_folder_root(root)
    for name in _subdirs(base / "train"):
        if _images_under(base / "train" / name):
            return
    raise DataError(f"No images under {base / 'train'}; put them in {base / 'train'}/<class>/<image>.")


def find_tiny_root(root: Path) -> Path:
    """The ``tiny-imagenet-200`` folder: ``root`` itself or ``root/tiny-imagenet-200``."""
    _require_dir(root, f"the unpacked {TINY_FOLDER}/ folder")
    for candidate in (root, root / TINY_FOLDER):
        if (candidate / "train").is_dir():
            return candidate
    raise DataError(f"No Tiny-ImageNet in {root}; unpack tiny-imagenet-200.zip there so that "
                    f"{root / TINY_FOLDER}/train/<wnid>/images/*.JPEG exists.")


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _class_names(base: Path, wnids: list[str]) -> list[str]:
    """The first synonym of each wnid in words.txt ("goldfish, Carassius auratus" -> "goldfish")."""
    words = {}
    if (base / "words.txt").is_file():
        for line in _read_lines(base / "words.txt"):
            wnid, _, text = line.partition("\t")
            words[wnid] = text.split(",")[0].strip()
    return [words.get(wnid, wnid) for wnid in wnids]


def load_tiny_imagenet(root: Path, **_) -> RawData:
    """Tiny-ImageNet's official layout; the classes are the wnids present under train/ (subsets work).

    val/images/*.JPEG with val/val_annotations.txt is the held-out split (kept to the present
    classes); the unlabeled test/ folder is ignored.
    """
    base = find_tiny_root(root)
    wnids = _subdirs(base / "train")
    if (base / "wnids.txt").is_file():
        listed = set(_read_lines(base / "wnids.txt"))
        stray = [w for w in wnids if w not in listed]
        if stray:
            raise DataError(f"{base / 'train'} has folder(s) {', '.join(stray[:3])} not listed in wnids.txt; "
                            "remove them or restore the official wnids.txt.")
    class_to_idx = {wnid: i for i, wnid in enumerate(wnids)}
    train_samples = []
    for wnid in wnids:
        folder = base / "train" / wnid
        files = _images_under(folder / "images" if (folder / "images").is_dir() else folder)
        if not files:
            raise DataError(f"{folder}/images has no images; restore the class's JPEG files or remove {folder}.")
        train_samples += [(path, class_to_idx[wnid]) for path in files]
    if not train_samples:
        raise DataError(f"No class folders in {base / 'train'}; expected train/<wnid>/images/*.JPEG.")
    held_out = _tiny_val(base, class_to_idx, wnids)
    names = _class_names(base, wnids)
    return RawData(ImageFiles(train_samples, names), held_out, names, 3, 64, "tiny", TINY_IMAGENET_STATS,
                   fixed_size=False)


def _tiny_val(base: Path, class_to_idx: dict[str, int], wnids: list[str]) -> ImageFiles | None:
    val = base / "val"
    if not val.is_dir():
        return None
    annotations = val / "val_annotations.txt"
    if not annotations.is_file():
        raise DataError(f"{val} has no val_annotations.txt; restore it from tiny-imagenet-200.zip or remove {val}.")
    samples = []
    for line in _read_lines(annotations):
        fields = line.split("\t")
        if len(fields) < 2:
            raise DataError(f"Line {line!r} of {annotations} is not 'file<TAB>wnid...'; restore the official file.")
        if fields[1] in class_to_idx:
            path = val / "images" / fields[0]
            if not path.is_file():
                raise DataError(f"{path} is listed in val_annotations.txt but missing; restore it or remove its line.")
            samples.append((str(path), class_to_idx[fields[1]]))
    return ImageFiles(samples, _class_names(base, wnids)) if samples else None


def check_tiny_imagenet(root: Path) -> None:
    base = find_tiny_root(root)
    for wnid in _subdirs(base / "train"):
        folder = base / "train" / wnid
        if _images_under(folder / "images" if (folder / "images").is_dir() else folder):
            return
    raise DataError(f"No images in {base / 'train'}; expected train/<wnid>/images/*.JPEG.")
