"""The ``regnet readout`` and ``regnet channels`` commands (parsers and handlers; the work is in
:mod:`regnet.train.explore`, imported only when one of them runs)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from regnet.runs import atomic_write_json, checkpoint_file


def cmd_readout(args: argparse.Namespace) -> int:
    from .explore import run_probes, terminal_progress

    report = run_probes(args.run_dir, args.split, args.data_root, args.which, terminal_progress())
    print(format_probes(report))
    if args.json:
        atomic_write_json(args.json, report)
        print(f"written to {args.json}")
    return 0


def format_probes(report: dict) -> str:
    """The probe table as text: per block and feature, the probe's top-1 and (last stage) the final head's."""
    lines = [f"{report['run']} ({report['model']}, {report['checkpoint']}.pt): linear probes fitted on "
             f"{report['num_train']:,} training images, scored on {report['split']} ({report['num_scored']:,} "
             f"images); the model's own top-1 {report['model_top1']:.2%}",
             f"{'block':>5}  {'stage.step':>10}  {'features':>8}  {'channels':>8}  {'probe top-1':>11}  "
             f"{'L2':>6}  {'final-head read-out':>19}"]
    for r in report["rows"]:
        head = "-" if r["final_head_top1"] is None else f"{r['final_head_top1']:.2%}"
        lines.append(f"{r['block']:>5}  {r['stage']:>8}.{r['step']}  {r['features']:>8}  {r['channels']:>8}  "
                     f"{r['probe_top1']:>11.2%}  {r['l2']:>6g}  {head:>19}")
    lines.append(f"Probe: {report['solver']}. Final-head read-out: the model's trained pool + FC applied to a "
                 "block of the head's width (not the paper's measure).")
    return "\n".join(lines)


def cmd_channels(args: argparse.Namespace) -> int:
    from regnet.inspect import channels as ch

    from .explore import channel_index, terminal_progress
    from .evaluate import load_run_model, load_run_split

    if args.top < 1:
        raise ValueError(f"--top must be at least 1, got {args.top}.")
    if args.epochs:
        return channels_across_epochs(args)
    model, _ = load_run_model(args.run_dir, args.which)
    key = ch.state_key(model, args.stage, args.step, args.state)
    dataset, info = load_run_split(args.run_dir, args.split, args.data_root)
    ch.check_channel(model, key, args.channel, dataset[0][0])
    index = channel_index(args.run_dir, checkpoint_file(args.run_dir, args.which), model, dataset, info,
                          args.split, args.reduce, terminal_progress())
    rows = [{**r, "class": info.class_names[r["label"]]}
            for r in ch.top_images(index, key, args.channel, args.top, bottom=args.bottom)]
    print(f"{_choice(args)}, {'lowest' if args.bottom else 'highest'} {len(rows)} of {len(dataset):,} "
          f"{args.split} images")
    print(f"{'rank':>4}  {'index':>6}  {'class':<14} {'value':>9}")
    for rank, r in enumerate(rows, 1):
        print(f"{rank:>4}  {r['index']:>6}  {r['class']:<14} {r['value']:>9.4f}")
    _write_json(args, {"images": rows})
    return 0


def _choice(args: argparse.Namespace) -> str:
    return (f"{args.run_dir}: stage {args.stage}, step {args.step}, {args.state}, channel {args.channel}, spatial "
            f"{args.reduce}")


def _write_json(args: argparse.Namespace, result: dict) -> None:
    if args.json:
        atomic_write_json(args.json, {"run": str(args.run_dir), "split": args.split, "stage": args.stage,
                                      "step": args.step, "state": args.state, "channel": args.channel,
                                      "reduce": args.reduce, **result})
        print(f"written to {args.json}")


def channels_across_epochs(args: argparse.Namespace) -> int:
    """``channels --epochs``: the channel at every epoch snapshot, one line each (the choice is checked on
    the last snapshot's model; a run without snapshots is the one sentence of ``require_snapshots``)."""
    from regnet.inspect import channels as ch

    from .evaluate import load_run_model, load_run_split
    from .explore import require_snapshots, snapshot_indexes, snapshots_to_index, terminal_progress

    snapshots = require_snapshots(args.run_dir)
    model, _ = load_run_model(args.run_dir, snapshots[max(snapshots)].stem)
    key = ch.state_key(model, args.stage, args.step, args.state)
    dataset, info = load_run_split(args.run_dir, args.split, args.data_root)
    ch.check_channel(model, key, args.channel, dataset[0][0])
    missing = snapshots_to_index(args.run_dir, dataset, info, args.split, args.reduce)
    print(f"{len(snapshots)} epoch snapshots; indexing {len(missing)} of them ({len(dataset):,} {args.split} "
          f"images each), {len(snapshots) - len(missing)} already indexed", file=sys.stderr)
    indexes = snapshot_indexes(args.run_dir, dataset, info, args.split, args.reduce, terminal_progress())
    rows = ch.across_epochs(indexes, key, args.channel, info.num_classes, args.top)
    names = info.class_names
    print(f"{_choice(args)}, across {len(rows)} epoch snapshots on {len(dataset):,} {args.split} images")
    print(f"{'epoch':>5}  {'mean':>9}  {'selectivity':>11}  {'top class':<14} {f'top-{args.top} kept':>10}")
    for r in rows:
        kept = "-" if r["overlap"] is None else f"{r['overlap']:.0%}"
        print(f"{r['epoch']:>5}  {r['mean']:>9.4f}  {r['selectivity']:>11.4f}  {names[r['preferred']]:<14} "
              f"{kept:>10}")
    _write_json(args, {"top": args.top, "epochs": [{**r, "preferred_class": names[r["preferred"]]} for r in rows]})
    return 0


def add_commands(sub) -> None:
    """The ``readout`` and ``channels`` subcommands on the CLI's subparsers."""
    readout = sub.add_parser("readout", help="per-block linear probes (the paper's Fig. 1b) and the final head's "
                                             "read-out")
    channels = sub.add_parser("channels", help="the images that drive a channel of the regulator")
    for parser in (readout, channels):
        parser.add_argument("run_dir", type=Path, metavar="RUN")
        parser.add_argument("--data-root", metavar="DIR", help="where the data is, if not where the run found it")
        parser.add_argument("--which", choices=["best", "last"], default="best")
        parser.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    readout.add_argument("--split", choices=["val", "test"], default="val", help="the split the probes are scored on")
    readout.set_defaults(func=cmd_readout)
    channels.add_argument("--split", choices=["val", "test", "train"], default="val")
    channels.add_argument("--stage", type=int, required=True, help="the stage, from 1")
    channels.add_argument("--step", type=int, required=True, help="the step (block) of the stage, from 1")
    channels.add_argument("--state", required=True, metavar="STATE", help="hidden, cell or a gate's name (i f o g)")
    channels.add_argument("--channel", type=int, required=True)
    channels.add_argument("--top", type=int, default=10, metavar="N")
    channels.add_argument("--bottom", action="store_true", help="the lowest values instead of the highest")
    channels.add_argument("--reduce", choices=["mean", "max"], default="mean", help="over the image's positions")
    channels.add_argument("--epochs", action="store_true",
                          help="instead of the top images: the channel at every epoch snapshot (train.keep_every), "
                               "its mean, selectivity, top class and how many of its top N images it kept")
    channels.set_defaults(func=cmd_channels)
