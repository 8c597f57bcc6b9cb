"""The MNIST study: mnist_cnn against regnet20 (1 input channel), Adam 1e-3, 5 epochs, one table.

Trains both with the shipped configs through the engine (``configs/mnist_cnn.yaml``,
``configs/mnist_regnet20.yaml``), on a writable copy of ``../shared/data/MNIST``,
then tabulates accuracy, macro-F1, loss and training time with ``regnet compare``'s
rows. ``--runs`` tabulates finished run folders instead of training.

    python bench/mnist_study.py [--runs RUN_DIR RUN_DIR] [--threads 1]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench._common import REPO, environment, format_table, result_path, write_json
from regnet.train import load_config, train
from regnet.train.runs import compare_runs

NAME = "mnist_study"
SHARED_MNIST = REPO.parent / "shared" / "data" / "MNIST"
CONFIGS = ("mnist_cnn.yaml", "mnist_regnet20.yaml")


def skip_reason(quick: bool) -> str | None:
    """For bench/run_all.py: the study needs the MNIST files beside the project."""
    return None if SHARED_MNIST.is_dir() else f"{SHARED_MNIST} is missing"


def train_both(workdir: Path) -> list[Path]:
    if not SHARED_MNIST.is_dir():
        raise SystemExit(f"{SHARED_MNIST} is missing; this study needs the MNIST files there.")
    data_root = workdir / "data"
    shutil.copytree(SHARED_MNIST, data_root / "MNIST")  # torchvision unpacks beside the .gz files
    runs = []
    for name in CONFIGS:
        config = load_config(REPO / "configs" / name)
        config.data.root, config.data.workers = str(data_root), 0
        config.run.runs_root, config.run.run_id = str(workdir / "runs"), name.removesuffix(".yaml")
        runs.append(train(config))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs=2, type=Path, help="tabulate these finished runs instead of training")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 is faster on a shared CPU)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    runs = args.runs or train_both(Path(tempfile.mkdtemp(prefix="regnet-mnist-")))
    rows = compare_runs(runs)
    columns = [("model", "model", ""), ("final_val_top1", "val top-1", ".4f"),
               ("final_val_macro_f1", "macro-F1", ".4f"), ("final_val_loss", "val loss", ".4f"),
               ("train_time_s", "train s", ".0f"), ("params", "params", ",")]
    print(format_table(rows, columns))
    write_json(result_path(NAME, False), {"name": NAME, "environment": environment(), "rows": rows,
                                          "runs": [str(r) for r in runs]})


if __name__ == "__main__":
    main()
