"""The paper's CIFAR-10 comparison at a CPU budget: resnet20 against regnet20 (ConvLSTM, efficient gates).

Both train through the engine with one recipe (``configs/cifar10_budget_resnet20.yaml`` and
``configs/cifar10_budget_regnet20.yaml``: the paper's SGD and augmentation, 20 epochs with a
1-epoch warmup and a cosine decay to the end) on the CIFAR-10 JPEG copy in
``../shared/data/cifar10``, unpacked to a temporary folder, with a stratified, seeded
45,000 / 5,000 train/validation split. The table gives validation top-1 and macro-F1, the
training time and images/s of each, and regnet20's margin beside the paper's (Table III, 180
epochs: 91.62% against 92.72%, +1.10 points).

On this 2-core machine the two runs took about 73 and 110 minutes side by side
(``OMP_NUM_THREADS=1`` each). ``--runs`` tabulates finished run folders instead of training.

    python bench/cifar_budget.py [--seed 0] [--epochs 20]
    python bench/cifar_budget.py --runs RESNET_RUN_DIR REGNET_RUN_DIR
"""
from __future__ import annotations

import argparse
import sys
import tarfile
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import REPO, environment, format_table, result_path, write_json
from regnet.train import load_config, train
from regnet.train.evaluate import compare_runs
from regnet.train.runfolder import read_metrics

NAME = "cifar_budget"
TAR = REPO.parent / "shared" / "data" / "cifar10" / "cifar10-train-jpeg.tar.gz"
CONFIGS = ("cifar10_budget_resnet20.yaml", "cifar10_budget_regnet20.yaml")
PAPER = {"resnet20": 0.9162, "regnet20": 0.9272}  # Xu et al., Table III: CIFAR-10 top-1 at 180 epochs


def skip_reason(quick: bool) -> str | None:
    """For bench/run_all.py: the comparison needs the CIFAR-10 JPEG tar beside the project."""
    return None if TAR.is_file() else f"{TAR} is missing"


def train_both(workdir: Path, seed: int, epochs: int | None) -> list[Path]:
    """Unpack the JPEG tree, then train both models one after the other with the same recipe."""
    if not TAR.is_file():
        raise SystemExit(f"{TAR} is missing; this comparison needs the CIFAR-10 JPEG tar there.")
    with tarfile.open(TAR) as tar:
        tar.extractall(workdir / "data", filter="data")
    runs = []
    for name in CONFIGS:
        config = load_config(REPO / "configs" / name)
        config.data.root = str(workdir / "data" / "CIFAR-10-images")
        config.train.seed = seed
        if epochs:
            config.train.epochs = epochs
        config.run.runs_root, config.run.run_id = str(workdir / "runs"), f"{name.removesuffix('.yaml')}-seed{seed}"
        runs.append(train(config))
    return runs


def row(run_dir: Path) -> dict:
    """``regnet compare``'s row plus the best epoch's top-1 and the mean training images/s over epochs."""
    base = compare_runs([run_dir])[0]
    epochs = [r for r in read_metrics(run_dir) if r.get("kind") == "epoch"]
    rates = [r["images_per_s"] for r in epochs if r.get("images_per_s")]
    return {**base, "best_val_top1": max((r["val_top1"] for r in epochs), default=None),
            "images_per_s": sum(rates) / len(rates) if rates else None,
            "paper_top1": PAPER.get(base["model"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs=2, type=Path, metavar=("RESNET_RUN", "REGNET_RUN"),
                        help="tabulate these finished runs instead of training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="override the configs' 20 epochs")
    args = parser.parse_args()
    runs = args.runs or train_both(Path(tempfile.mkdtemp(prefix="regnet-cifar-")), args.seed, args.epochs)
    rows = [row(run) for run in runs]
    by_model = {r["model"]: r for r in rows}
    margin = paper_margin = None
    if {"resnet20", "regnet20"} <= set(by_model):
        margin = by_model["regnet20"]["final_val_top1"] - by_model["resnet20"]["final_val_top1"]
        paper_margin = PAPER["regnet20"] - PAPER["resnet20"]
    columns = [("model", "model", ""), ("options", "options", ""), ("epochs", "epochs", ""),
               ("final_val_top1", "val top-1", ".4f"), ("best_val_top1", "best top-1", ".4f"),
               ("final_val_macro_f1", "macro-F1", ".4f"), ("final_val_loss", "val loss", ".4f"),
               ("train_time_s", "train s", ".0f"), ("images_per_s", "img/s", ".0f"), ("params", "params", ","),
               ("paper_top1", "paper (180 ep)", ".4f")]
    print(format_table(rows, columns))
    if margin is not None:
        print(f"regnet20 - resnet20: {100 * margin:+.2f} points of validation top-1 "
              f"(paper, 180 epochs: {100 * paper_margin:+.2f}); 1 seed")
    write_json(result_path(NAME, False), {
        "name": NAME, "environment": environment(), "rows": rows, "runs": [str(r) for r in runs],
        "margin_top1": margin, "paper_margin_top1": paper_margin, "seeds": 1,
    })


if __name__ == "__main__":
    main()
