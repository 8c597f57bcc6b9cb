"""The MNIST study, the earlier report's table: mnist_cnn, rcnn_classifier and regnet20 (1 input channel), Adam 1e-3.

Trains the three with the shipped configs through the engine (``configs/mnist_cnn.yaml``,
``configs/mnist_rcnn.yaml``, ``configs/mnist_regnet20.yaml``), one after another on a writable copy
of ``../shared/data/MNIST``, with the same number of epochs (``--epochs``; the seed's recipe is 5),
then tabulates per model the validation split's (10% carved from the training images) and the
official test split's (10,000) accuracy, macro-F1 and loss, the training time and the parameters,
beside the earlier report's figures. Writes ``bench/results/mnist_study.json`` and ``mnist_study.md``.
``--runs`` tabulates finished run folders instead of training.

    python bench/mnist_study.py [--epochs 5] [--train-images N] [--threads 1] [--only CONFIG ...] [--runs RUN_DIR ...]
    python bench/mnist_study.py --merge PART.json ...   # the --only processes' results as one table
"""
from __future__ import annotations

import argparse
import gzip
import json
import struct
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench._common import REPO, environment, format_table, result_path, write_json
from regnet.runs import atomic_write_text
from regnet.train import load_config, train
from regnet.train.evaluate import compare_runs, evaluate_run

NAME = "mnist_study"
SHARED_MNIST = REPO.parent / "shared" / "data" / "MNIST"
CONFIGS = ("mnist_cnn.yaml", "mnist_rcnn.yaml", "mnist_regnet20.yaml")
MODEL_ORDER = ("mnist_cnn", "rcnn_classifier", "regnet20")
# The earlier MNIST report (5 epochs, Adam 1e-3; its evaluation split is MNIST's test set); it has no regnet20.
SEED_003 = {"mnist_cnn": {"top1": 0.9890, "macro_f1": 0.9890, "loss": 0.0290, "train_s": 587},
            "rcnn_classifier": {"top1": 0.9906, "macro_f1": 0.9906, "loss": 0.0289, "train_s": 2238}}
COLUMNS = [("model", "model", ""), ("epochs", "epochs", ""), ("val_top1", "val top-1", ".4f"),
           ("val_macro_f1", "val F1", ".4f"), ("val_loss", "val loss", ".4f"), ("test_top1", "test top-1", ".4f"),
           ("test_macro_f1", "test F1", ".4f"), ("test_loss", "test loss", ".4f"),
           ("train_time_s", "train s", ".0f"), ("params", "params", ","), ("seed_top1", "seed top-1", ".4f"),
           ("seed_macro_f1", "seed F1", ".4f"), ("seed_loss", "seed loss", ".4f"), ("seed_train_s", "seed s", ".0f")]


def skip_reason(quick: bool) -> str | None:
    """For bench/run_all.py: the study needs the MNIST files beside the project."""
    return None if SHARED_MNIST.is_dir() else f"{SHARED_MNIST} is missing"


def copy_mnist(data_root: Path, train_images: int | None) -> None:
    """MNIST's IDX files under ``data_root/MNIST/raw``, unpacked as torchvision leaves them; with
    ``train_images``, the training files keep only the first that many images (the test files are whole)."""
    raw = data_root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for packed in sorted((SHARED_MNIST / "raw").glob("*.gz")):
        data = gzip.decompress(packed.read_bytes())
        if train_images is not None and packed.name.startswith("train-"):
            data = _first_items(data, train_images)
        (raw / packed.name.removesuffix(".gz")).write_bytes(data)


def _first_items(idx: bytes, count: int) -> bytes:
    """An IDX file cut to its first ``count`` items (header: magic, item count, then the item's dimensions)."""
    dims = idx[3]
    shape = struct.unpack(f">{dims}I", idx[4:4 + 4 * dims])
    item = 1
    for side in shape[1:]:
        item *= side
    count = min(count, shape[0])
    header = idx[:4] + struct.pack(f">{dims}I", count, *shape[1:])
    start = 4 + 4 * dims
    return header + idx[start:start + count * item]


def train_all(workdir: Path, epochs: int, configs=CONFIGS, train_images: int | None = None) -> list[Path]:
    """Each config trained for ``epochs`` on one copy of the data."""
    if not SHARED_MNIST.is_dir():
        raise SystemExit(f"{SHARED_MNIST} is missing; this study needs the MNIST files there.")
    data_root = workdir / "data"
    copy_mnist(data_root, train_images)
    runs = []
    for name in configs:
        config = load_config(REPO / "configs" / name)
        config.data.root, config.data.workers, config.train.epochs = str(data_root), 0, epochs
        config.run.runs_root, config.run.run_id = str(workdir / "runs"), name.removesuffix(".yaml")
        runs.append(train(config, progress=False))
    return runs


def study_row(compared: dict, run_dir: Path) -> dict:
    """One model's row: its final validation figures, its last checkpoint on the test split, the seed's figures."""
    test = evaluate_run(run_dir, "test", "last")
    seed = SEED_003.get(compared["model"], {})
    return {"model": compared["model"], "epochs": compared["epochs"], "val_top1": compared["final_val_top1"],
            "val_macro_f1": compared["final_val_macro_f1"], "val_loss": compared["final_val_loss"],
            "test_top1": test["top1"], "test_macro_f1": test["macro_f1"], "test_loss": test["loss"],
            "train_time_s": compared["train_time_s"], "params": compared["params"],
            **{f"seed_{key}": value for key, value in seed.items()}, "run": str(run_dir)}


def markdown_table(rows: list[dict]) -> str:
    """The table as Markdown, for the README."""
    def cell(value, spec):
        return "-" if value is None else format(value, spec) if spec else str(value)

    lines = ["| " + " | ".join(header for _, header, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r.get(key), spec) for key, _, spec in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", type=Path, help="tabulate these finished runs instead of training")
    parser.add_argument("--epochs", type=int, default=5, help="epochs for every model (the seed's recipe: 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 is faster on a shared CPU)")
    parser.add_argument("--only", nargs="+", choices=CONFIGS, default=CONFIGS,
                        help="train only these configs (one process per model, tabulated later with --runs)")
    parser.add_argument("--train-images", type=int, default=None,
                        help="keep only the first N of MNIST's 60,000 training images (a budget that fits a "
                             "shared CPU); the validation split is carved from them, the test split is whole")
    parser.add_argument("--merge", nargs="+", type=Path,
                        help="join the result files of --only processes (one per model) into the study's table")
    parser.add_argument("--note", help="how the figures were taken, kept in the JSON (e.g. the budget and load)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.merge:
        parts = [json.loads(path.read_text()) for path in args.merge]
        rows = sorted((row for part in parts for row in part["rows"]), key=lambda r: MODEL_ORDER.index(r["model"]))
        extra = {"environments": [part["environment"] for part in parts],
                 "budget": next((part["budget"] for part in parts if part.get("budget")), None)}
    else:
        runs = args.runs or train_all(Path(tempfile.mkdtemp(prefix="regnet-mnist-")), args.epochs, args.only,
                                      args.train_images)
        rows = [study_row(compared, Path(run)) for compared, run in zip(compare_runs(runs), runs)]
        trained = None if args.runs else {"epochs": args.epochs, "train_images": args.train_images}
        extra = {"environment": environment(), "budget": trained}
    print(format_table(rows, COLUMNS))
    write_json(result_path(NAME, False), {"name": NAME, **extra, "note": args.note, "rows": rows})
    atomic_write_text(result_path(NAME, False).with_suffix(".md"), markdown_table(rows) + "\n")


if __name__ == "__main__":
    main()
