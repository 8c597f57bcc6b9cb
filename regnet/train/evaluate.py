"""Reading runs back: rebuild a run's model, evaluate a checkpoint on a split, compare runs side by side
(the table itself is the run-folder contract's, ``regnet.runs.summary``; here it is ranked and printed).

Everything here reads the run folder only (config.yaml, status.json,
metrics.jsonl, checkpoints/), so it works the same for a run trained here, a
run still training, and a shipped checkpoint that holds only the model, its
config and its metrics.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from torch import nn
from regnet.data.device import evaluation_batches
from regnet.metrics import per_class_table
from regnet.models import build_model, folded_for_inference, model_info

from .build import load_data
from .checkpoint import load_checkpoint, load_model_weights
from regnet.runs import checkpoint_file, comparison_row, read_config_dict, read_summary, scan_runs

from .config import Config, config_from_dict, config_to_dict, lower_is_better
from .distributed import resolve_device
from .metrics import evaluate

SPLITS = ("val", "test", "train")


def load_run_config(run_dir: str | Path) -> Config:
    """The run's config.yaml, type-checked; a missing or damaged file is one sentence."""
    return config_from_dict(read_config_dict(run_dir))


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
    path = checkpoint_file(run_dir, which)
    config = load_run_config(run_dir)
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
                 device: str | None = None, batch_size: int | None = None, channels_last: bool | None = None) -> dict:
    """Loss, top-1, top-5, macro-F1, per-class table and confusion matrix of a checkpoint on one split.

    Uses the run's own split seed, precision and (unless ``channels_last`` is
    given) memory format, so evaluating ``last`` on ``val`` reproduces the
    run's last validation numbers. The split is decoded once and batched
    (``regnet.data.device.evaluation_batches``): no per-image transforms. The model's batch norms are
    folded into its convolutions (:func:`folded_for_inference`): the same logits to about 1e-5, faster.
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; choose val, test or train.")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"The batch size must be at least 1, got {batch_size}.")
    config = load_run_config(run_dir)
    if data_root is not None:
        config.data.root = data_root
    target = resolve_device(device or config.train.device)
    model, _, checkpoint = _load_model(run_dir, which, target)
    model = folded_for_inference(model)
    channels_last = config.train.channels_last if channels_last is None else channels_last
    if channels_last:
        model.to(memory_format=torch.channels_last)
    dataset, splits = _split_of(run_dir, config, split)
    num_classes = splits.info.num_classes
    if config.model.num_classes not in (None, num_classes):
        raise ValueError(f"The run's model predicts {config.model.num_classes} classes but {splits.info.name} "
                         f"has {num_classes}; evaluate it on the data set it was trained on.")
    batches = evaluation_batches(dataset, splits.info, batch_size or config.train.batch_size, target,
                                 workers=config.data.workers)
    start = time.perf_counter()
    result = evaluate(model, batches, num_classes, target, amp=config.train.amp, amp_dtype=config.train.amp_dtype,
                      channels_last=channels_last)
    seconds = time.perf_counter() - start
    return {"split": split, "checkpoint": which, "epoch": checkpoint.get("epoch"), **result,
            "seconds": seconds, "images_per_s": result["count"] / max(seconds, 1e-9),
            "class_names": splits.info.class_names,
            "per_class": per_class_table(result["confusion_matrix"], splits.info.class_names)}


def load_run_split(run_dir: str | Path, split: str = "val", data_root: str | None = None):
    """(dataset, DatasetInfo) of one of the run's splits, unaugmented, with the run's own split seed.

    ``test`` also reads a copy holding only ``test/<class>/``; a split the data set does not have is
    one sentence.
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; choose val, test or train.")
    config = load_run_config(run_dir)
    if data_root is not None:
        config.data.root = data_root
    dataset, splits = _split_of(run_dir, config, split)
    return dataset, splits.info


def _split_of(run_dir: str | Path, config: Config, split: str):
    splits = (split == "test" and _test_only_splits(Path(run_dir), config)) or load_data(config, augment=False)
    dataset = {"val": splits.val, "test": splits.test, "train": splits.train}[split]
    if dataset is None:
        raise ValueError(f"Data set {splits.info.name} has no official test split; choose val or train instead.")
    return dataset, splits


def _test_only_splits(run_dir: Path, config: Config):
    """A folder copy holding only ``test/<class>/`` (or flat ``<class>/``), read with the run's own class list.

    None where the root has a training tree (or the data set is not read from folders).
    """
    from regnet.data import load_test_only, test_only_tree

    if test_only_tree(config.data.name, config.data.root) is None:
        return None
    if not config.model.class_names:
        raise ValueError(f"Run {run_dir} predates the recorded class list, so a folder without train/ cannot be "
                         f"labelled for it; evaluate it on a copy with the train/ tree beside test/.")
    return load_test_only(config.data.name, config.data.root, config.model.class_names, config.model.input_side)


def list_runs(runs_root: str | Path) -> list[Path]:
    """The run folders under ``runs_root`` by name, as the dashboard lists them (same rule, same refusals)."""
    runs, refused = scan_runs(runs_root)
    for path in refused:
        print(f"note: {path.name} resolves outside {runs_root} and is refused.", file=sys.stderr)
    return runs


def compare_runs(run_dirs: list[str | Path]) -> list[dict]:
    """The comparison table (``regnet.runs.comparison_row``), one row a run, with the model's options as a label.

    A damaged run is a row with its problem in ``note`` (and blanks), never a failure of the whole table;
    a run whose process is gone is ``died`` (``stopped`` if a stop was asked for); "best" is the
    checkpointed best, and ``best_<metric>`` every other metric at its epoch.
    """
    rows = []
    for run_dir in run_dirs:
        row = comparison_row(read_summary(run_dir))
        row["options"] = _options_label(row["model"], row["options"]) if row["model"] else ""
        rows.append(row)
    return rows


def _options_label(model: str, options: dict) -> str:
    """The cell and gates of a RegNet, and every other option that is not the model's default (a variant)."""
    try:
        defaults = model_info(model).options
    except ValueError:
        defaults = {}

    def default(key):
        value = defaults.get(key)
        return list(value) if isinstance(value, tuple) else value

    shown = {k: v for k, v in options.items() if k in ("cell", "gates") or (k in defaults and v != default(k))}
    return ",".join(f"{k}={v}" for k, v in shown.items())


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
        macs = f"{r['macs'] / 1e6:.1f}M" if number(r["macs"], "") != "-" and r["macs"] else "-"
        time_s = f"{number(r['train_time_s'], '.0f')}s" if number(r["train_time_s"], "") != "-" else "-"
        text = {key: str(r[key] or "-") for key in ("model", "options", "state")}  # status values may be damaged
        lines.append(f"{r['run']:<40} {text['model']:<12} {text['options']:<16} {text['state']:<9} "
                     f"{r['epochs']:>7} {number(r['params'], ','):>10} {macs:>8} {best:>16} "
                     f"{number(r['final_val_top1'], '.4f'):>11} {number(r['final_val_loss'], '.4f'):>10} {time_s:>8}")
    if rows:
        lines.append(f"(best = {rows[0]['best_metric']} at epoch, as checkpointed in best.pt; final = the last "
                     f"epoch's validation)")
    lines += [f"note: {r['run']}: {r['note']}" for r in rows if r.get("note")]
    return "\n".join(lines)
