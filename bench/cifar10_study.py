"""The CIFAR-10 study: 3 seeds each of resnet20, regnet20 (the paper's) and two of the seeds' variants.

``python -m regnet study`` with ``configs/cifar10_study.yaml`` (the paper's SGD and augmentation, one-cycle
schedule) on the CIFAR-10 JPEG copy in ``../shared/data/cifar10``, unpacked to a temporary folder, with
the engine's stratified, seeded 45,000 / 5,000 split (the same for every member). Per model: mean and
standard deviation over seeds of the last epoch's validation top-1, macro-F1 and loss, and training
time; against resnet20: the difference with a 95% Welch t-interval and Welch's t-test p-value. Writes
``bench/results/cifar10_study.json`` and ``.md``.

    python bench/cifar10_study.py [--epochs 2] [--seeds 3] [--parallel 2] [--runs-root DIR]
    python bench/cifar10_study.py --study DIR   # tabulate a study folder as it stands (finished members)
"""
from __future__ import annotations

import argparse
import sys
import tarfile
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import REPO, environment, result_path, write_json
from regnet.train import load_config
from regnet.train.study import (format_difference, format_spread, format_study, parse_models, run_study,
                                study_table)

NAME = "cifar10_study"
TAR = REPO.parent / "shared" / "data" / "cifar10" / "cifar10-train-jpeg.tar.gz"
MODELS = "resnet20,regnet20,regnet20:memory=reset,regnet20:sharing=block"


def skip_reason(quick: bool) -> str | None:
    """For bench/run_all.py: hours of CPU, and the CIFAR-10 JPEG tar beside the project."""
    if quick:
        return "a study of 12 CIFAR-10 runs has no quick form"
    return None if TAR.is_file() else f"{TAR} is missing"


def train_study(runs_root: Path, epochs: int, seeds: int, parallel: int) -> dict:
    """Unpack the JPEG tree beside the runs, then run (or continue) the study."""
    data = runs_root / "data"
    if not (data / "CIFAR-10-images").is_dir():
        if not TAR.is_file():
            raise SystemExit(f"{TAR} is missing; this study needs the CIFAR-10 JPEG tar there.")
        with tarfile.open(TAR) as tar:
            tar.extractall(data, filter="data")
    config = load_config(REPO / "configs" / "cifar10_study.yaml")
    config.data.root = str(data / "CIFAR-10-images")
    config.train.epochs, config.train.device, config.run.runs_root = epochs, "cpu", str(runs_root)
    return run_study(config, parse_models(MODELS), seeds, name="cifar10-study", parallel=parallel)


def markdown(table: dict, epochs: int | None) -> str:
    """The table as Markdown, one row per model and one per difference."""
    lines = [f"# CIFAR-10 study ({epochs or '?'} epochs, one-cycle SGD, 45,000 / 5,000 split)", "",
             "| model | seeds | val top-1 | macro-F1 | val loss | train time (s) |", "|---|---|---|---|---|---|"]
    for m in table["models"]:
        cells = [format_spread(m[k], spec) for k, spec in (("val_top1", ".4f"), ("val_macro_f1", ".4f"),
                                                           ("val_loss", ".4f"), ("train_time_s", ".0f"))]
        lines.append(f"| {m['model']} | {len(m['seeds'])}/{m['planned']} | " + " | ".join(cells) + " |")
    lines += ["", f"Difference from {table['models'][0]['model']}: mean, 95% Welch t-interval, Welch's p.", "",
              "| model | val top-1 | macro-F1 | val loss |", "|---|---|---|---|"]
    for c in table["comparisons"]:
        cells = [format_difference(c[metric]) for metric in ("val_top1", "val_macro_f1", "val_loss")]
        lines.append(f"| {c['model']} | " + " | ".join(cells) + " |")
    lines += ["", f"({table['method']}; ± is the sample standard deviation over seeds.)"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, help="tabulate this study folder instead of training")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--runs-root", type=Path, help="default: a new temporary folder")
    args = parser.parse_args()
    if args.study:
        table = study_table(args.study)
    else:
        table = train_study(args.runs_root or Path(tempfile.mkdtemp(prefix="regnet-study-")), args.epochs,
                            args.seeds, args.parallel)
    print(format_study(table))
    path = result_path(NAME, False)
    write_json(path, {"name": NAME, "environment": environment(threads=1), "epochs": args.epochs, **table})
    path.with_suffix(".md").write_text(markdown(table, args.epochs))
    print(f"written to {path} and {path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
