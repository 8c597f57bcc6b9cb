"""Turn a trained model into a shipped checkpoint folder under ``checkpoints/<name>/``.

A shipped checkpoint is a small run folder (config.yaml, status.json,
metrics.jsonl, checkpoints/best.pt with only the model, its config and its
final metrics; a run trained with ``train.keep_every`` also ships its
checkpoints/epoch-NNN.pt snapshots and artifacts/regulator.jsonl) so the dashboard lists it beside the runs and ``load_run_model``
reads it like any run. Two sources:

    python bench/ship_checkpoint.py --run runs/<id> --name shapes-regnet20
    python bench/ship_checkpoint.py --run runs/<id> --name cifar10-regnet20 --data-root data/CIFAR-10-images
    python bench/ship_checkpoint.py --cifar-result bench/results/cifar_paper_regnet20.json \
        --weights regnet20.pt --name cifar10-regnet20
    python bench/ship_checkpoint.py --name shapes-regnet20 --regulator-from-snapshots

Shipping replaces the whole folder, ``samples/`` included: give a CIFAR-10 checkpoint its
validation images back with bench/ship_samples.py (see checkpoints/README.md).
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from regnet.models import model_info
from regnet.runs import ARTIFACTS, REGULATOR, atomic_write_text, snapshot_epochs, snapshot_file
from regnet.train.checkpoint import load_checkpoint, save_checkpoint
from regnet.train.config import Config, config_from_dict, config_to_dict, save_config
from regnet.train.runfolder import atomic_write_json, read_metrics, read_status
from regnet.train.evaluate import load_run_model

REPO = Path(__file__).resolve().parents[1]


def write_shipped(out: Path, config: dict, state_dict: dict, metrics: dict, history: list[dict], status: dict) -> None:
    """Write the folder; weights as float32 on the CPU, nothing else from training."""
    if out.exists():
        shutil.rmtree(out)
    (out / "checkpoints").mkdir(parents=True)
    save_config(config_from_dict(config), out / "config.yaml")
    atomic_write_json(out / "status.json", status)
    (out / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in history))
    weights = {k: v.detach().float().cpu() if v.is_floating_point() else v.cpu() for k, v in state_dict.items()}
    save_checkpoint({"model": weights, "config": config, "metrics": metrics}, out / "checkpoints" / "best.pt")


def from_run(run_dir: Path, out: Path, data_root: str | None = None) -> None:
    """The weights a run's final evaluation scored, with those scores; ``data_root`` replaces a
    machine-specific data path in its config."""
    final = json.loads((run_dir / "artifacts" / "final_eval.json").read_text())
    model, config = load_run_model(run_dir, which=final.get("checkpoint", "best"))
    if data_root:
        config["data"]["root"] = data_root
    config["run"].update(runs_root="runs", run_id=None)  # where it ran is of no use to whoever loads it
    status = read_status(run_dir)
    history = read_metrics(run_dir)
    metrics = {k: final[k] for k in ("loss", "top1", "top5", "macro_f1")}
    status = {k: v for k, v in status.items() if k not in ("pid_start", "host")}  # which process ran it: not shipped
    status = {**status, "state": "finished", "pid": None, "run_id": out.name}
    write_shipped(out, config, model.state_dict(), metrics, history, status)
    ship_regulator_history(run_dir, out, config)


def ship_regulator_history(run_dir: Path, out: Path, config: dict) -> None:
    """The run's epoch snapshots (with the shipped config) and its per-epoch regulator statistics, if any:
    what lets a newcomer watch the shipped model's regulator form, on Live and in Inspect."""
    for epoch, path in snapshot_epochs(run_dir).items():
        snapshot = load_checkpoint(path)
        save_checkpoint({"model": snapshot["model"], "config": config, "epoch": epoch,
                         "metrics": snapshot.get("metrics", {})}, snapshot_file(out, epoch))
    regulator = run_dir / ARTIFACTS / REGULATOR
    if regulator.is_file():
        (out / ARTIFACTS).mkdir(exist_ok=True)
        atomic_write_text(out / ARTIFACTS / REGULATOR, regulator.read_text())


def regulator_from_snapshots(out: Path) -> None:
    """Rewrite a shipped folder's artifacts/regulator.jsonl from its epoch snapshots, as training wrote it.

    Each snapshot is probed on the run's own probe images (same seed, same evaluation transform) in eval
    mode, which reads only the weights and BatchNorm statistics the snapshot holds, so the lines carry the
    figures the run logged; step and time are the epoch's own, from metrics.jsonl.
    """
    from regnet.runs import read_regulator
    from regnet.train.build import load_data
    from regnet.train.regulator_stats import RegulatorLog
    from regnet.train.evaluate import load_run_config

    config = load_run_config(out)
    val = load_data(config, augment=False).val
    epochs = {row["epoch"]: row for row in read_metrics(out) if row.get("kind") == "epoch"}
    (out / ARTIFACTS / REGULATOR).unlink(missing_ok=True)
    for epoch in snapshot_epochs(out):
        model, _ = load_run_model(out, which=snapshot_file(out, epoch).stem)
        log = RegulatorLog.open(model, val, config.train.seed, out, torch.device("cpu"), after_epoch=epoch - 1)
        log.epoch_end(epoch, epochs[epoch]["step"])
    rows = [{**row, "time": epochs[row["epoch"]]["time"]} for row in read_regulator(out)]
    atomic_write_text(out / ARTIFACTS / REGULATOR, "".join(json.dumps(row) + "\n" for row in rows))


def from_cifar_result(result_path: Path, weights: Path, out: Path) -> None:
    """A bench/cifar_paper.py result: the paper's recipe with the epochs it ran, on the CIFAR-10 JPEG copy."""
    result = json.loads(result_path.read_text())
    config = config_to_dict(Config())  # defaults, then the recipe
    info = model_info(result["model"])
    config["model"] = {"name": result["model"], "options": {**info.options, **result["options"]},
                       "num_classes": 10, "in_channels": 3}
    config["data"].update(name="imagefolder", root="data/CIFAR-10-images", val_ratio=0.1,
                          split_seed=0, augment=True)
    config["optim"].update(name="sgd", lr=0.1, momentum=0.9, nesterov=False, weight_decay=1e-4)
    config["schedule"].update(name="multistep", milestones=[0.5, 0.75], gamma=0.1)
    config["train"].update(epochs=result["epochs"], batch_size=128, seed=result["seed"], amp=True,
                           channels_last=True)
    final = result["final"]
    history = [{"kind": "epoch", "step": row["epoch"] * (result["train_images"] // 128), **row}
               for row in result["history"]]
    metrics = {"loss": final["val_loss"], "top1": final["val_top1"], "macro_f1": final["val_macro_f1"]}
    status = {"state": "finished", "pid": None, "run_id": out.name, "model": result["model"],
              "dataset": "cifar10", "epoch": result["epochs"], "epochs": result["epochs"],
              "step": history[-1]["step"], "steps_per_epoch": result["train_images"] // 128,
              "elapsed_s": result["train_time_s"], "best_metric": "val_top1", "best_value": final["val_top1"],
              "best_epoch": result["epochs"], "images_per_s": result["images_per_s"], "params": result["params"],
              "macs": None, "error": None, "device": result.get("gpu")}
    write_shipped(out, config, torch.load(weights, weights_only=True), metrics, history, status)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True)
    p.add_argument("--run", type=Path)
    p.add_argument("--cifar-result", type=Path)
    p.add_argument("--weights", type=Path)
    p.add_argument("--data-root", help="with --run: the data path to record in the shipped config")
    p.add_argument("--regulator-from-snapshots", action="store_true",
                   help="rewrite the shipped folder's regulator history from its epoch snapshots")
    args = p.parse_args()
    out = REPO / "checkpoints" / args.name
    if args.regulator_from_snapshots:
        regulator_from_snapshots(out)
    elif args.run:
        from_run(args.run, out, args.data_root)
    else:
        from_cifar_result(args.cifar_result, args.weights, out)
    model, _ = load_run_model(out)  # the folder must load like any run
    print(f"{out}: {sum(p.numel() for p in model.parameters()):,} parameters")


if __name__ == "__main__":
    main()
