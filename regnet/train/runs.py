"""Reading runs back: rebuild a run's model, evaluate a checkpoint on a split, compare runs side by side.

Everything here reads the run folder only (config.yaml, status.json,
metrics.jsonl, checkpoints/), so it works the same for a run trained here, a
run still training, and a shipped checkpoint that holds only the model, its
config and its metrics.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from regnet.metrics import per_class_table
from regnet.models import build_model, model_info

from .build import load_data
from .checkpoint import load_checkpoint, load_model_weights
from .config import Config, config_to_dict, load_config, lower_is_better
from .distributed import resolve_device
from .metrics import evaluate
from .runfolder import CONFIG, RunFolder, read_metrics, read_status

SPLITS = ("val", "test", "train")
CHECKPOINTS = ("best", "last")


def load_run_config(run_dir: str | Path) -> Config:
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise ValueError(f"{run_dir} is not a run folder (no {CONFIG}); pass a folder under runs/ or checkpoints/.")
    return load_config(path)


def load_run_model(run_dir: str | Path, which: str = "best", device: str | torch.device = "cpu"
                   ) -> tuple[nn.Module, dict]:
    """The run's model with the weights of ``checkpoints/<which>.pt``, in eval mode, and its config as a dict.

    Classes and input channels come from config.yaml, or, for configs written
    before they were recorded there, from the shapes of the checkpoint's first
    convolution and last linear layer.
    """
    model, config, _ = _load_model(run_dir, which, device)
    return model, config_to_dict(config)


def _load_model(run_dir: str | Path, which: str, device: str | torch.device) -> tuple[nn.Module, Config, dict]:
    if which not in CHECKPOINTS:
        raise ValueError(f"Unknown checkpoint {which!r}; choose best or last.")
    config = load_run_config(run_dir)
    path = RunFolder(run_dir).checkpoint(which)
    checkpoint = load_checkpoint(path)
    state = checkpoint["model"]
    m = config.model
    model_info(m.name)  # an unknown model name is a sentence, not a KeyError
    weights = [v for k, v in state.items() if k.endswith("weight") and v.dim() in (2, 4)]
    num_classes = m.num_classes or (weights[-1].shape[0] if weights and weights[-1].dim() == 2 else None)
    in_channels = m.in_channels or (weights[0].shape[1] if weights and weights[0].dim() == 4 else None)
    model = build_model(m.name, num_classes=num_classes, in_channels=in_channels, **m.options)
    load_model_weights(model, state, path, m.name)
    model.to(device if isinstance(device, torch.device) else resolve_device(device)).eval()
    return model, config, checkpoint


def evaluate_run(run_dir: str | Path, split: str = "val", which: str = "best", *, data_root: str | None = None,
                 device: str | None = None) -> dict:
    """Loss, top-1, top-5, macro-F1, per-class table and confusion matrix of a checkpoint on one split.

    Uses the run's own split seed, batch size, precision and memory format, so
    evaluating ``last`` on ``val`` reproduces the run's last validation numbers.
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; choose val, test or train.")
    config = load_run_config(run_dir)
    if data_root is not None:
        config.data.root = data_root
    target = resolve_device(device or config.train.device)
    model, _, checkpoint = _load_model(run_dir, which, target)
    if config.train.channels_last:
        model.to(memory_format=torch.channels_last)
    splits = load_data(config, augment=False)
    dataset = {"val": splits.val, "test": splits.test, "train": splits.train}[split]
    if dataset is None:
        raise ValueError(f"Data set {splits.info.name} has no official test split; evaluate on val instead.")
    num_classes = splits.info.num_classes
    if config.model.num_classes not in (None, num_classes):
        raise ValueError(f"The run's model predicts {config.model.num_classes} classes but {splits.info.name} "
                         f"has {num_classes}; evaluate it on the data set it was trained on.")
    loader = DataLoader(dataset, batch_size=config.train.batch_size, shuffle=False, num_workers=config.data.workers,
                        pin_memory=target.type == "cuda")
    result = evaluate(model, loader, num_classes, target, amp=config.train.amp,
                      channels_last=config.train.channels_last)
    return {"split": split, "checkpoint": which, "epoch": checkpoint.get("epoch"), **result,
            "class_names": splits.info.class_names,
            "per_class": per_class_table(result["confusion_matrix"], splits.info.class_names)}


def list_runs(runs_root: str | Path) -> list[Path]:
    """Run folders (those with a status.json) under ``runs_root``, oldest first."""
    root = Path(runs_root)
    if not root.is_dir():
        raise ValueError(f"Runs folder {root} does not exist; pass --runs-root or run folders.")
    return sorted(p for p in root.iterdir() if (p / "status.json").is_file())


def compare_runs(run_dirs: list[str | Path]) -> list[dict]:
    """One row per run: model, options, params, MACs, best and final metrics, training time, state."""
    rows = []
    for run_dir in run_dirs:
        status = read_status(run_dir)
        config = load_run_config(run_dir)
        epochs = [r for r in read_metrics(run_dir) if r.get("kind") == "epoch"]
        final = epochs[-1] if epochs else {}
        metric = status.get("best_metric") or config.train.early_stop_metric
        rows.append({
            "run": Path(run_dir).name, "model": config.model.name,
            "options": ",".join(f"{k}={v}" for k, v in config.model.options.items()
                                if k in ("cell", "gates", "se") and v not in (False,)),
            "dataset": config.data.name, "state": status.get("state"),
            "epochs": f"{status.get('epoch', len(epochs))}/{status.get('epochs', config.train.epochs)}",
            "params": status.get("params"), "macs": status.get("macs"),
            "best_metric": metric, "best_value": status.get("best_value"), "best_epoch": status.get("best_epoch"),
            "final_val_top1": final.get("val_top1"), "final_val_loss": final.get("val_loss"),
            "final_val_macro_f1": final.get("val_macro_f1"), "train_time_s": status.get("elapsed_s"),
        })
    return rows


def rank_rows(rows: list[dict]) -> list[dict]:
    """Best first by each row's best metric (lower first for a loss); runs without a value last."""
    def key(row):
        value = row.get("best_value")
        if value is None:
            return (1, 0.0)
        return (0, value if lower_is_better(row.get("best_metric") or "") else -value)

    return sorted(rows, key=key)


def format_compare(rows: list[dict]) -> str:
    def number(value, spec):
        return format(value, spec) if isinstance(value, (int, float)) else "-"

    header = (f"{'run':<40} {'model':<12} {'options':<16} {'state':<9} {'epochs':>7} {'params':>10} "
              f"{'MACs':>8} {'best':>16} {'final top-1':>11} {'final loss':>10} {'time':>8}")
    lines = [header]
    for r in rows:
        best = f"{number(r['best_value'], '.4f')}@{r['best_epoch'] or '-'}" if r["best_value"] is not None else "-"
        macs = f"{r['macs'] / 1e6:.1f}M" if r["macs"] else "-"
        time_s = f"{r['train_time_s']:.0f}s" if r["train_time_s"] is not None else "-"
        lines.append(f"{r['run']:<40} {r['model']:<12} {r['options'] or '-':<16} {r['state'] or '-':<9} "
                     f"{r['epochs']:>7} {number(r['params'], ','):>10} {macs:>8} {best:>16} "
                     f"{number(r['final_val_top1'], '.4f'):>11} {number(r['final_val_loss'], '.4f'):>10} {time_s:>8}")
    if rows:
        lines.append(f"(best = {rows[0]['best_metric']} at epoch; final = the last epoch's validation)")
    return "\n".join(lines)
