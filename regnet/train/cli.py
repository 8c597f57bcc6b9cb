"""The command line: ``python -m regnet <command>``.

    train     train a model (a new run folder, or --resume one); prints the run folder last
    eval      evaluate a run's checkpoint on a split
    sanity    initial loss, one-batch overfit, baselines
    lr-find   the learning-rate range test
    grid      a grid of overrides, one run each, ranked
    study     N seeds of several models or variants, with means, spreads and Welch intervals
    compare   a table of runs
    models    every registered model with parameters and MACs
    dashboard serve the dashboard on this machine (localhost only)
    readout   per-block linear probes (the paper's Fig. 1b) and the final head's read-out
    channels  the images that drive a channel of the regulator

Every command turns a bad input into one sentence on stderr (``error: ...``)
and exit code 2, never a traceback. A run that started and then failed exits
with 1 and names its log; a run stopped cleanly (STOP file, SIGINT, SIGTERM)
exits with 0.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from regnet.shipped import config_file

from .config import Config, build_config, read_config_file
from .explore_cli import add_commands as add_explore_commands

CONFIG_FLAGS = {  # flag -> config key
    "model": "model.name", "dataset": "data.name", "data_root": "data.root", "epochs": "train.epochs",
    "batch_size": "train.batch_size", "lr": "optim.lr", "device": "train.device", "runs_root": "run.runs_root",
    "run_id": "run.run_id",
}


def add_config_arguments(parser: argparse.ArgumentParser, *, run_flags: bool = True) -> None:
    group = parser.add_argument_group("config (a YAML file, then these flags, then --set, in that order)")
    group.add_argument("--config", metavar="FILE|NAME", help="YAML config file, or a ready config by name "
                                                              "(e.g. shapes_regnet20; regnet/shipped.py says where)")
    group.add_argument("--model", help="model name (python -m regnet models lists them)")
    group.add_argument("--dataset", help="data set: shapes, cifar10, cifar100, mnist, fashion_mnist, "
                                         "tiny_imagenet, imagefolder")
    group.add_argument("--data-root", metavar="DIR", help="folder holding the data set (default data)")
    group.add_argument("--epochs", type=int)
    group.add_argument("--batch-size", type=int, help="global batch size")
    group.add_argument("--lr", type=float, help="base learning rate")
    group.add_argument("--device", help="auto (cuda if available), cpu, cuda, cuda:N")
    if run_flags:
        group.add_argument("--runs-root", metavar="DIR", help="where run folders go (default runs)")
        group.add_argument("--run-id", help="run folder name (default <timestamp>-<model>-<dataset>)")
    group.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="any config key, e.g. --set optim.momentum=0.9 --set model.options.cell=gru")


def config_from_args(args: argparse.Namespace) -> Config:
    """Defaults < --config file < the shortcut flags < --set, as layers of ``build_config`` (checked once)."""
    layers = [read_config_file(config_file(args.config))] if args.config else []
    for flag, key in CONFIG_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            section, name = key.split(".")
            layers.append({section: {name: value}})
    return build_config(*layers, *args.overrides)


def _progress() -> bool:
    return sys.stderr.isatty()


# ---- train ------------------------------------------------------------------------------------------------------

def cmd_train(args: argparse.Namespace) -> int:
    from .loop import RunFailed, train

    try:
        if args.resume:
            given = [f"--{flag.replace('_', '-')}" for flag in (*CONFIG_FLAGS, "config", "note")
                     if flag != "device" and getattr(args, flag, None) is not None] + (
                ["--set"] if args.overrides else []) + (["--tag"] if args.tags else [])
            if given:
                raise ValueError(f"--resume continues a run with its own config.yaml; drop {', '.join(given)} "
                                 f"(only --device may change; tags and notes are edited on the dashboard's Runs page).")
            path = train(resume=args.resume, device=args.device, progress=_progress())
        else:
            path = train(config_from_args(args), progress=_progress(), tags=args.tags, note=args.note or "")
    except RunFailed as failure:
        print(f"error: {failure.message} (details in {failure.run_dir / 'train.log'})", file=sys.stderr)
        _print_on_rank_0(failure.run_dir)
        return 1
    _print_on_rank_0(path)
    return 0


def _print_on_rank_0(path: Path) -> None:
    """Under torchrun every process runs this command; one printed path is the contract."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(path)


# ---- eval -------------------------------------------------------------------------------------------------------

def cmd_eval(args: argparse.Namespace) -> int:
    from .metrics import format_confusion, format_per_class
    from .evaluate import evaluate_run

    result = evaluate_run(args.run_dir, args.split, args.which, data_root=args.data_root, device=args.device,
                          batch_size=args.batch_size, channels_last=args.channels_last)
    state = _reported_state(args.run_dir)
    print(f"{args.run_dir}{f' ({state})' if state else ''}: {args.which}.pt (epoch {result['epoch']}) on "
          f"{args.split}, {result['count']} images in {result['seconds']:.1f} s ({result['images_per_s']:.0f} img/s)")
    print(f"loss {result['loss']:.4f}  top-1 {result['top1']:.4f}  top-5 {result['top5']:.4f}  "
          f"macro-F1 {result['macro_f1']:.4f}")
    print()
    print(format_per_class(result["per_class"]))
    print()
    print(format_confusion(result["confusion_matrix"], result["class_names"]))
    if args.json:
        from regnet.runs import atomic_write_json

        atomic_write_json(args.json, result)
        print(f"written to {args.json}")
    return 0


def _reported_state(run_dir: Path) -> str | None:
    """The run's state as every reader reports it (``regnet.runs.read_summary``); None without a readable one."""
    from regnet.runs import UNKNOWN, read_summary

    state = read_summary(run_dir).state
    return None if state == UNKNOWN else state


# ---- sanity -----------------------------------------------------------------------------------------------------

def cmd_sanity(args: argparse.Namespace) -> int:
    from regnet.data import DataError

    from .sanity import run_sanity

    config = config_from_args(args)
    try:
        report = run_sanity(config, synthetic=args.synthetic, overfit_steps=args.steps)
    except DataError as error:
        raise DataError(f"{error} (or pass --synthetic to check the model on random data of its input shape)"
                        ) from None
    print(report.format())
    return 0 if report.passed else 1


# ---- lr-find ----------------------------------------------------------------------------------------------------

def cmd_lr_find(args: argparse.Namespace) -> int:
    from .lr_finder import find_lr

    config = config_from_args(args)
    out = Path(args.out) if args.out else (Path(config.run.runs_root) / "lr-find" /
                                           f"{time.strftime('%Y%m%d-%H%M%S')}-{config.model.name}-{config.data.name}")
    result = find_lr(config, out, min_lr=args.min_lr, max_lr=args.max_lr, steps=args.steps)
    print(f"{result['steps']} steps from {args.min_lr:g} to {result['lrs'][-1]:.3g} in {result['seconds']:.0f}s; "
          f"lowest smoothed loss at LR {result['lowest_loss_lr']:.3g}")
    print(f"suggested LR: {result['suggested_lr']:.3g} (steepest descent of the loss)")
    print(out)
    return 0


# ---- grid -------------------------------------------------------------------------------------------------------

def cmd_grid(args: argparse.Namespace) -> int:
    from .grid import format_grid, run_grid

    if args.run_id is not None:
        raise ValueError("A grid names its runs <grid-id>-NN-<values>; pass --grid-id instead of --run-id.")
    rows, summary = run_grid(config_from_args(args), args.grid, grid_id=args.grid_id, progress=_progress())
    print(format_grid(rows))
    print(summary)
    return 0 if all(r["state"] == "finished" for r in rows) else 1


# ---- study ------------------------------------------------------------------------------------------------------

def cmd_study(args: argparse.Namespace) -> int:
    from .study import format_study, parse_models, run_study

    given = [flag for flag in ("model", "run_id") if getattr(args, flag, None) is not None]
    if given:
        raise ValueError(f"A study names its models with --models and its members itself; drop "
                         f"--{given[0].replace('_', '-')}.")
    models = parse_models(args.models)
    config = config_from_args(args)
    name = args.name or f"study-{Path(args.config).stem if args.config else 'default'}"
    table = run_study(config, models, args.seeds, name=name, parallel=args.parallel, device=args.device)
    print(format_study(table))
    if args.json:
        from regnet.runs import atomic_write_json

        atomic_write_json(args.json, table)
        print(f"written to {args.json}")
    if table["stopped"]:
        print(f"stopped; run the same command again to continue the study in {table['folder']}.")
    return 0


# ---- compare ----------------------------------------------------------------------------------------------------

def cmd_compare(args: argparse.Namespace) -> int:
    from .evaluate import compare_runs, format_compare, list_runs, rank_rows

    run_dirs = args.runs or list_runs(args.runs_root)
    if not run_dirs:
        raise ValueError(f"No runs in {args.runs_root}; train one with python -m regnet train.")
    rows = compare_runs(run_dirs)
    print(format_compare(rank_rows(rows) if args.rank else rows))
    return 0


# ---- models -----------------------------------------------------------------------------------------------------

def cmd_models(args: argparse.Namespace) -> int:
    from regnet.models import format_options, format_table, summarize_registry

    print(format_table(summarize_registry()))
    print()
    print(format_options())
    return 0


# ---- dashboard --------------------------------------------------------------------------------------------------

def cmd_dashboard(args: argparse.Namespace) -> int:
    """``streamlit run`` on the dashboard's app.py (the package ``regnet.dashboard``), from whatever folder.

    Its server settings (localhost, no usage statistics) lie beside app.py (``.streamlit/``), so they hold
    here as for a plain ``streamlit run dashboard/app.py``. The package is found without importing it:
    regnet never imports the dashboard. A relative runs folder is the one of the folder this is started in.
    """
    import importlib.util
    import subprocess

    spec = importlib.util.find_spec("regnet.dashboard")
    app = Path(next(iter(spec.submodule_search_locations or []), "")) / "app.py" if spec else None
    if app is None or not app.is_file():
        raise ValueError("The dashboard is missing from this regnet install; reinstall it with pip install regnet-lab "
                         "(or pip install . in the repository).")
    env = dict(os.environ)
    if args.runs_root:
        env["REGNET_RUNS_ROOT"] = str(Path(args.runs_root).resolve())
    command = [sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(args.port)]
    return subprocess.call(command, env=env)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="regnet", description="Train and inspect RegNet and ResNet models.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model; prints the run folder as the last line",
                           description="Train a model into a new run folder, or continue one with --resume. "
                                       "Stop cleanly with Ctrl-C, SIGTERM or a file named STOP in the run folder.")
    add_config_arguments(train)
    train.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its checkpoints/last.pt")
    train.add_argument("--tag", dest="tags", action="append", default=[], metavar="TAG",
                       help="a tag for the new run (repeat for several); the dashboard filters by them")
    train.add_argument("--note", help="a note for the new run (free text, shown and edited on the Runs page)")
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("eval", help="evaluate a run's checkpoint on a split")
    evaluate.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    evaluate.add_argument("--split", choices=["val", "test", "train"], default="val")
    evaluate.add_argument("--which", choices=["best", "last"], default="best")
    evaluate.add_argument("--data-root", metavar="DIR", help="where the data is, if not where the run found it")
    evaluate.add_argument("--device", help="default: the run's device setting")
    evaluate.add_argument("--batch-size", type=int, metavar="N", help="default: the run's train.batch_size")
    evaluate.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                          help="default: the run's train.channels_last (channels-last is faster on CPUs and GPUs)")
    evaluate.add_argument("--json", metavar="FILE", help="also write the full result as JSON")
    evaluate.set_defaults(func=cmd_eval)

    sanity = sub.add_parser("sanity", help="initial loss vs ln(classes), one-batch overfit, baselines")
    add_config_arguments(sanity, run_flags=False)
    sanity.add_argument("--synthetic", action="store_true",
                        help="random images and labels of the model's natural input shape (regnet20: 3x32x32, "
                             "10 classes, CIFAR-10's shape) instead of the data set; reads no data")
    sanity.add_argument("--steps", type=int, default=300, help="most steps for the one-batch overfit (default 300)")
    sanity.set_defaults(func=cmd_sanity)

    lr_find = sub.add_parser("lr-find", help="learning-rate range test; writes the curve and a suggested LR")
    add_config_arguments(lr_find, run_flags=False)
    lr_find.add_argument("--runs-root", metavar="DIR", help="the curve goes to <runs-root>/lr-find/<id>/")
    lr_find.add_argument("--min-lr", type=float, default=1e-6)
    lr_find.add_argument("--max-lr", type=float, default=10.0)
    lr_find.add_argument("--steps", type=int, default=100)
    lr_find.add_argument("--out", metavar="DIR", help="folder for lr_find.csv and lr_find.json")
    lr_find.set_defaults(func=cmd_lr_find)

    grid = sub.add_parser("grid", help="one run per combination of overrides, then a ranked table")
    add_config_arguments(grid)
    grid.add_argument("--grid", action="append", required=True, metavar="KEY=V1,V2",
                      help="an axis of the grid, e.g. --grid optim.lr=0.1,0.05 --grid model.options.cell=lstm,gru")
    grid.add_argument("--grid-id", help="prefix of the grid's run folders (default grid-<timestamp>)")
    grid.set_defaults(func=cmd_grid)

    study = sub.add_parser(
        "study", help="N seeds of each of several models or variants: mean, std, Welch intervals and p-values",
        description="Train --seeds seeds of each --models entry with one recipe, each an ordinary run folder "
                    "under <runs-root>/<name>/, then print per model the mean and standard deviation over seeds "
                    "of val top-1, macro-F1, val loss and training time (last epoch), and for each model against "
                    "the first the mean difference with a 95% Welch t-interval and Welch's t-test p-value. "
                    "Run the same command again to continue a killed study.")
    add_config_arguments(study)
    study.add_argument("--models", required=True, metavar="LIST",
                       help="comma-separated entries NAME[:OPTION=VALUE...], values as YAML, e.g. "
                            "resnet20,regnet20,regnet20:memory=reset,regnet20:regulated_stages=[1,2]")
    study.add_argument("--seeds", type=int, default=3, help="seeds per model: train.seed, +1, ... (default 3)")
    study.add_argument("--parallel", type=int, default=1, metavar="K",
                       help="members trained at once, each a subprocess with one thread (default 1)")
    study.add_argument("--name", help="the study folder's name under --runs-root (default study-<config name>)")
    study.add_argument("--json", metavar="FILE", help="also write the table as JSON")
    study.set_defaults(func=cmd_study)

    compare = sub.add_parser("compare", help="a table of runs: params, MACs, best and final metrics, time")
    compare.add_argument("runs", nargs="*", type=Path, metavar="RUN_DIR", help="default: every run in --runs-root")
    compare.add_argument("--runs-root", default="runs", metavar="DIR")
    compare.add_argument("--rank", action="store_true", help="best first (by each run's best metric)")
    compare.set_defaults(func=cmd_compare)

    models = sub.add_parser("models", help="table of every registered model with parameters and MACs")
    models.set_defaults(func=cmd_models)

    dashboard = sub.add_parser("dashboard", help="serve the dashboard on this machine only (http://localhost:PORT)")
    dashboard.add_argument("--port", type=int, default=8501)
    dashboard.add_argument("--runs-root", metavar="DIR", help="runs folder to open (default runs or $REGNET_RUNS_ROOT)")
    dashboard.set_defaults(func=cmd_dashboard)
    add_explore_commands(sub)  # readout, channels
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except (ValueError, OSError) as error:  # DataError is a ValueError; our messages are one sentence
        print(f"error: {error}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("error: interrupted.", file=sys.stderr)
        code = 130
    except Exception as error:  # a bug, not bad input: still one line, naming the exception
        text = str(error).strip().splitlines()[0] if str(error).strip() else ""
        print(f"error: unexpected {type(error).__name__}: {text}", file=sys.stderr)
        code = 1
    sys.exit(code)
