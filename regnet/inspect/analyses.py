"""Split-level analyses of a trained model, computed in two passes over the data and cached.

* predictions: confusion matrix, per-class precision/recall/F1/accuracy, a gallery's raw material;
* final-head read-out: the trained final pool + FC applied to every block of the last stage, blocks numbered
  1..N through the network (not the paper's Fig. 1b measure, a new linear layer per block: see probes.py);
* redundancy: cosine similarity of consecutive block outputs (the shortcut makes neighbours alike;
  the paper's claim is that the regulator adds new information);
* regulator ablation: accuracy per class with the regulator's contribution zeroed at the fusion.
"""
from __future__ import annotations

import copy
import hashlib
import threading
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
from torch import nn
from torchmetrics.functional.classification import multiclass_confusion_matrix

from regnet.metrics import macro_f1, per_class_table
from regnet.models import folded_for_inference, regulated_blocks, regulator_ablated
from regnet.models.parallel import map_batches
from regnet.runs import atomic_write


def block_output_modules(model: nn.Module) -> list[tuple[int, int, nn.Module]]:
    """(stage, step, module whose output is the block's output) for every block, in forward order."""
    regulated = set(map(id, regulated_blocks(model)))
    return [(s, t, block.taps.output if id(block) in regulated else block)
            for s, stage in enumerate(model.stages) for t, block in enumerate(stage.blocks)]


class BlockOutputs(threading.local):
    """Every block's output in the calling thread's last forward pass, keyed by (stage, step).

    Per thread, so that batches analysed side by side (``map_batches``) each read their own.
    """

    def __init__(self):
        self.latest: dict[tuple[int, int], torch.Tensor] = {}

    def take(self) -> dict[tuple[int, int], torch.Tensor]:
        """This thread's outputs, cleared for its next pass."""
        latest, self.latest = self.latest, {}
        return latest


@contextmanager
def capture_block_outputs(model: nn.Module) -> Iterator[BlockOutputs]:
    """A :class:`BlockOutputs` filled, at each forward pass, with every block's output."""
    store = BlockOutputs()
    hooks = [module.register_forward_hook(lambda m, i, o, key=(s, t): store.latest.__setitem__(key, o))
             for s, t, module in block_output_modules(model)]
    try:
        yield store
    finally:
        for h in hooks:
            h.remove()


def analyze_split(model: nn.Module, batches: Iterable, class_names: list[str], device: str = "cpu",
                  progress: Callable[[int], None] | None = None) -> dict:
    """Every split-level analysis in one intact pass and (for a RegNet) one ablated pass.

    ``batches`` are (images, labels) pairs, e.g. ``regnet.data.device.evaluation_batches``;
    ``progress`` gets the number of images analysed after each batch, for a progress bar.
    The passes run in inference mode on a channels-last copy of ``model`` with its batch norms folded
    (:func:`folded_for_inference`), so ``model`` itself (its mode, memory format, device) is left as it was;
    the ablated pass on a second copy, so that batches can run side by side (``map_batches``).
    """
    model = folded_for_inference(model).to(device, memory_format=torch.channels_last)
    ablated = copy.deepcopy(model) if regulated_blocks(model) else None
    with torch.inference_mode(), regulator_ablated(ablated) if ablated is not None else nullcontext():
        return _analyze(model, ablated, batches, class_names, device, progress)


def _batch_results(model: nn.Module, ablated: nn.Module | None, store: BlockOutputs, batch, device: str) -> dict:
    """One batch's predictions and its sums for the read-out, the redundancy and the ablation."""
    x, y = batch
    x, y = x.to(device).contiguous(memory_format=torch.channels_last), y.to(device)
    logits = model(x)
    outputs = store.take()
    conf, pred = logits.softmax(1).max(1)
    last = len(model.stages) - 1
    result = {
        "targets": y.cpu(), "preds": pred.cpu(), "confidence": conf.cpu(),
        "readout": {t: int((model.head(out).argmax(1) == y).sum()) for (s, t), out in outputs.items() if s == last},
        "cosine": {(s, t): _cosine_sum(out, outputs[(s, t + 1)]) for (s, t), out in outputs.items()
                   if (s, t + 1) in outputs},
    }
    if ablated is not None:
        zeroed = ablated(x)
        result["ablated"] = zeroed.argmax(1).cpu()
        result["logit_change"] = float((zeroed - logits).abs().mean(1).sum())
    return result


def _cosine_sum(a: torch.Tensor, b: torch.Tensor) -> float:
    """The sum over images of the cosine similarity of two maps, each flattened in its memory order.

    A cosine is the same in any order of the values, as long as both maps
    use the same one; flattening a channels-last map in NCHW order would copy it.
    """
    if a.is_contiguous(memory_format=torch.channels_last) and b.is_contiguous(memory_format=torch.channels_last):
        a, b = a.permute(0, 2, 3, 1), b.permute(0, 2, 3, 1)
    return float(nn.functional.cosine_similarity(a.flatten(1), b.flatten(1), dim=1).sum())


def _analyze(model: nn.Module, ablated: nn.Module | None, batches: Iterable, class_names: list[str], device: str,
             progress: Callable[[int], None] | None) -> dict:
    parts: dict[str, list] = {"targets": [], "preds": [], "confidence": [], "ablated": []}
    readout_hits: dict[int, int] = {}
    cosine_sums: dict[tuple[int, int], float] = {}
    logit_change = 0.0
    seen = 0
    with capture_block_outputs(model) as store:
        for r in map_batches(lambda batch: _batch_results(model, ablated, store, batch, device), batches, device):
            for key, values in parts.items():
                if key in r:
                    values.append(r[key])
            for t, hits in r["readout"].items():
                readout_hits[t] = readout_hits.get(t, 0) + hits
            for key, total in r["cosine"].items():
                cosine_sums[key] = cosine_sums.get(key, 0.0) + total
            logit_change += r.get("logit_change", 0.0)
            seen += len(r["targets"])
            if progress is not None:
                progress(seen)
    if seen == 0:
        raise ValueError("The split is empty; there is nothing to analyse.")
    before_last = sum(len(stage.blocks) for stage in model.stages[:-1])  # blocks numbered through the network
    return _summarize(parts, readout_hits, cosine_sums, logit_change, seen, class_names, len(model.stages),
                      before_last)


def _summarize(parts: dict[str, list], readout_hits: dict[int, int], cosine_sums: dict[tuple[int, int], float],
               logit_change: float, seen: int, class_names: list[str], stages: int, before_last: int) -> dict:
    """The analyses' result from the per-batch sums."""
    num_classes = len(class_names)
    targets_t, preds_t = torch.cat(parts["targets"]), torch.cat(parts["preds"])
    confusion = multiclass_confusion_matrix(preds_t, targets_t, num_classes)
    table = per_class_table(confusion, class_names)
    regulated = bool(parts["ablated"])
    result = {
        "num_images": seen,
        "class_names": list(class_names),
        "targets": targets_t, "preds": preds_t, "confidence": torch.cat(parts["confidence"]),
        "accuracy": float((preds_t == targets_t).double().mean()),
        "macro_f1": macro_f1(confusion),
        "confusion_matrix": confusion,
        "per_class": table,
        "readout": [{"stage": stages, "block": before_last + t + 1, "accuracy": hits / seen}
                    for t, hits in sorted(readout_hits.items())],
        "redundancy": [{"stage": s + 1, "pair": f"{t + 1}->{t + 2}", "cosine": total / seen}
                       for (s, t), total in sorted(cosine_sums.items())],
        "regulated": regulated,
    }
    if regulated:
        ablated_t = torch.cat(parts["ablated"])
        ablated_table = per_class_table(multiclass_confusion_matrix(ablated_t, targets_t, num_classes), class_names)
        result["ablation"] = {
            "accuracy": float((ablated_t == targets_t).double().mean()),
            "per_class": [{"class": a["class"], "intact": a["accuracy"], "ablated": b["accuracy"],
                           "drop": a["accuracy"] - b["accuracy"]} for a, b in zip(table, ablated_table)],
            "mean_abs_logit_change": logit_change / seen,
        }
    return result


def cache_key(*parts: object) -> str:
    """A short stable key from what determines an analysis: checkpoint identity, split, options."""
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:16]


def file_identity(path: str | Path) -> str:
    """Size and modification time: a retrained checkpoint invalidates its cached analyses."""
    stat = Path(path).stat()
    return f"{Path(path).resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def cache_file(folder: str | Path, name: str, key: str) -> Path:
    """Where :func:`cached` keeps the result of analysis ``name`` under ``key``: ``folder/name-key.pt``."""
    return Path(folder) / f"{name}-{key}.pt"


def cached(folder: str | Path, name: str, key: str, compute: Callable[[], dict]) -> dict:
    """Load ``folder/name-key.pt`` if present (``weights_only``), else compute and write it atomically."""
    folder = Path(folder)
    path = cache_file(folder, name, key)
    if path.exists():
        try:
            return torch.load(path, weights_only=True)
        except Exception:  # a corrupt cache is recomputed, never trusted
            path.unlink(missing_ok=True)
    result = compute()
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda handle: torch.save(result, handle))
    return result
