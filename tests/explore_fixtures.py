"""Small run folders for the probe and channel tests: the shipped shapes-regnet20 and cifar10-resnet20 weights
on 200 generated ``shapes`` images (both read 32x32 RGB into 10 classes), and a data set without a test split."""
from __future__ import annotations

import shutil
from pathlib import Path

import torch
import yaml
from PIL import Image

CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"


def tiny_run(tmp_path: Path, shipped: str = "shapes-regnet20", size: int = 200, name: str | None = None) -> Path:
    """A copy of a shipped run (config and best.pt) whose data is ``size`` generated shapes images."""
    run = tmp_path / (name or shipped)
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(CHECKPOINTS / shipped / "checkpoints" / "best.pt", run / "checkpoints" / "best.pt")
    config = yaml.safe_load((CHECKPOINTS / shipped / "config.yaml").read_text())
    config["data"].update({"name": "shapes", "root": str(tmp_path / "data"), "size": size, "workers": 0})
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    return run


def folder_run_without_test(tmp_path: Path) -> Path:
    """The shapes regnet20 run re-pointed at an image folder of 2 classes x 6 images, which has no test split."""
    run = tiny_run(tmp_path, name="folder-run")
    root = tmp_path / "folder"
    g = torch.Generator().manual_seed(0)
    for cls in ("a", "b"):
        (root / "train" / cls).mkdir(parents=True)
        for i in range(6):
            pixels = torch.randint(0, 255, (32, 32, 3), generator=g, dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(root / "train" / cls / f"{i}.png")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"].update({"name": "imagefolder", "root": str(root), "size": None})
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    return run
