"""Give a shipped checkpoint a few of its own validation images: ``checkpoints/<name>/samples/``.

A fresh clone has no data set, so without these a shipped model can only be shown uploads. The
images come from the run's own validation split (the images it never trained on, rebuilt from its
config's split rule), ``--per-class`` of each class chosen with a fixed seed, and are copied byte for
byte as ``samples/<class>/<NNNNN><ext>`` (NNNNN: the image's index among the data set's training
images), beside a ``manifest.json`` that ``regnet.data.load_sample_split`` reads back:

    python bench/ship_samples.py checkpoints/cifar10-regnet20 --data-root /tmp/data/CIFAR-10-images \
        --title CIFAR-10 --credit "CIFAR-10: A. Krizhevsky, Learning Multiple Layers of Features from Tiny Images, 2009; research use"

It then scores the checkpoint on its samples, which should land near its validation top-1 (a
check that the labels are right). Re-shipping a checkpoint with bench/ship_checkpoint.py replaces
its folder, samples included; run this again afterwards.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import torch

from regnet.data import SAMPLES_DIR, DatasetSplit, load_sample_split
from regnet.data.samples import MANIFEST, MANIFEST_FORMAT
from regnet.train.build import load_data
from regnet.train.evaluate import load_run_config, load_run_model

INFO_FIELDS = ("name", "num_classes", "in_channels", "image_size", "class_names", "mean", "std", "family")


def choose(val: DatasetSplit, num_classes: int, per_class: int, seed: int) -> list[int]:
    """Source indices (into the data set's training images) of ``per_class`` validation images per class.

    One generator seeded with ``seed`` permutes each class's validation images in label order, so the
    same split and seed pick the same images on every machine; the indices come back sorted.
    """
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in range(num_classes):
        members = [pos for pos, target in enumerate(val.targets) if target == label]
        if len(members) < per_class:
            raise ValueError(f"Class {label} has {len(members)} validation images, fewer than --per-class "
                             f"{per_class}; lower --per-class.")
        order = torch.randperm(len(members), generator=generator)[:per_class].tolist()
        chosen += [val.indices[members[i]] for i in order]
    return sorted(chosen)


def _validation_split(run_dir: Path, data_root: str):
    """The run's own validation split, rebuilt from its config with the data found at ``data_root``."""
    config = load_run_config(run_dir)
    if not config.data.val_ratio > 0:
        raise ValueError(f"{run_dir} validates on an official held-out split (val_ratio 0); this script "
                         "samples a validation split carved from the training images.")
    config.data.root = data_root
    splits = load_data(config, augment=False)
    if not hasattr(splits.val.base, "samples"):
        raise ValueError(f"{config.data.name} is not read from image files, so there are no files to copy "
                         "byte for byte; only image-folder data sets can be sampled.")
    return config, splits


def _copy_images(val: DatasetSplit, indices: list[int], class_names: list[str], data_root: str, out: Path):
    """Copy each chosen file unchanged into ``out/<class>/``; returns the manifest's image entries."""
    images = []
    for index in indices:
        path, label = val.base.samples[index]
        file = f"{class_names[label]}/{index:05d}{Path(path).suffix.lower()}"
        (out / class_names[label]).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out / file)
        images.append({"file": file, "label": label, "index": index,
                       "source_file": Path(os.path.relpath(path, data_root)).as_posix()})
    return images


def write_samples(run_dir: str | Path, data_root: str, *, title: str, credit: str, per_class: int = 20,
                  seed: int = 0) -> dict:
    """Write ``run_dir/samples/`` afresh (images and manifest.json) and return the manifest."""
    run_dir = Path(run_dir)
    config, splits = _validation_split(run_dir, data_root)
    info = splits.info
    indices = choose(splits.val, info.num_classes, per_class, seed)
    out = run_dir / SAMPLES_DIR
    if out.exists():
        shutil.rmtree(out)
    out.mkdir()
    images = _copy_images(splits.val, indices, info.class_names, data_root, out)
    manifest = {
        "format": MANIFEST_FORMAT,
        "info": {field: getattr(info, field) for field in INFO_FIELDS},
        "source": {"dataset": title, "data": config.data.name, "split": "validation split",
                   "val_ratio": config.data.val_ratio, "split_seed": config.data.split_seed,
                   "split_size": len(splits.val), "per_class": per_class, "sample_seed": seed,
                   "image_index": "each image's index among the data set's training images, in load_splits order"},
        "count": len(images),
        "credit": credit,
        "images": images,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


@torch.no_grad()
def sample_top1(run_dir: str | Path) -> float:
    """The shipped model's top-1 on its own samples, read back through ``load_sample_split``."""
    model, _ = load_run_model(run_dir)
    split, _ = load_sample_split(Path(run_dir) / SAMPLES_DIR)
    images = torch.stack([split[i][0] for i in range(len(split))])
    predicted = model(images).argmax(dim=1)
    return (predicted == torch.tensor(split.targets)).float().mean().item()


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path, help="the shipped checkpoint folder, e.g. checkpoints/cifar10-regnet20")
    p.add_argument("--data-root", required=True, help="where the run's data set is unpacked")
    p.add_argument("--title", required=True, help="the data set's name, as credited")
    p.add_argument("--credit", required=True, help="the credit line shipped with the images")
    p.add_argument("--per-class", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    manifest = write_samples(args.run_dir, args.data_root, title=args.title, credit=args.credit,
                             per_class=args.per_class, seed=args.seed)
    size = folder_bytes(args.run_dir / SAMPLES_DIR)
    print(f"{args.run_dir / SAMPLES_DIR}: {manifest['count']} images, {size:,} bytes; "
          f"top-1 on them {sample_top1(args.run_dir):.2%}")


if __name__ == "__main__":
    main()
