"""The regulator's statistics at the end of every epoch, so its learning can be watched (artifacts/regulator.jsonl).

A fixed probe batch (``PROBE_SIZE`` validation images chosen once from the run's seed, so every epoch and
every resume sees the same images) goes through the model in eval mode with recording on, and once more
with H zeroed where it enters the fusion. One JSON line per epoch holds, for every (stage, step), each
gate's mean, standard deviation and shares below ``LOW`` and above ``HIGH``, the mean absolute value and
the standard deviation of H and C, and the probe's top-1 intact and with H zeroed (the block's reliance on
its regulator). The same numbers go to TensorBoard as scalars, the gates also as histograms.

The file is small (one line per epoch), so each epoch rewrites it whole with the contract's atomic write,
keeping only the lines of earlier epochs: a kill at any moment leaves either the old or the new file, and
an epoch repeated after a resume replaces its line instead of adding a second one. Statistics are
accumulated over chunks of the probe so the recorded tensors of 256 images never sit in memory at once.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from regnet.models import record, regulated_blocks, regulator_ablated
from regnet.runs import ARTIFACTS, REGULATOR, atomic_write_text, read_regulator

PROBE_SIZE = 256
CHUNK = 32  # images per forward pass of the probe: bounds the memory of the recorded tensors
LOW, HIGH = 0.05, 0.95  # a gate value below LOW or above HIGH counts as saturated
HISTOGRAM_VALUES = 4096  # values per gate and block sent to a TensorBoard histogram


def probe_indices(num_images: int, seed: int, size: int = PROBE_SIZE) -> list[int]:
    """The probe's images: ``size`` indices of the validation split drawn from ``seed`` alone, in order."""
    generator = torch.Generator().manual_seed(int(seed))
    return sorted(torch.randperm(num_images, generator=generator)[:size].tolist())


def probe_digest(indices: list[int]) -> str:
    """A short name of the probe's images, written in every line so a reader can check they never changed."""
    return hashlib.sha1(",".join(map(str, indices)).encode()).hexdigest()[:12]


@dataclass
class _Moments:
    """Running sums of one tensor's values: enough for mean, std, mean |x| and the saturated shares."""

    n: int = 0
    total: float = 0.0
    squares: float = 0.0
    absolute: float = 0.0
    low: int = 0
    high: int = 0

    def add(self, values: torch.Tensor) -> None:
        values = values.detach().double()
        self.n += values.numel()
        self.total += float(values.sum())
        self.squares += float((values * values).sum())
        self.absolute += float(values.abs().sum())
        self.low += int((values < LOW).sum())
        self.high += int((values > HIGH).sum())

    @property
    def mean(self) -> float:
        return self.total / max(self.n, 1)

    @property
    def std(self) -> float:
        return max(self.squares / max(self.n, 1) - self.mean ** 2, 0.0) ** 0.5

    def gate(self) -> dict:
        n = max(self.n, 1)
        return {"mean": self.mean, "std": self.std, "below_05": self.low / n, "above_95": self.high / n}

    def state(self) -> dict:
        return {"mean_abs": self.absolute / max(self.n, 1), "std": self.std}


@dataclass
class _BlockSums:
    gates: dict[str, _Moments] = field(default_factory=dict)
    hidden: _Moments = field(default_factory=_Moments)
    cell: _Moments | None = None
    samples: dict[str, torch.Tensor] = field(default_factory=dict)  # a few gate values for the histograms


def _accumulate(sums: dict[tuple[int, int], _BlockSums], trace: list) -> None:
    for rec in trace:
        block = sums.setdefault((rec.stage, rec.step), _BlockSums())
        block.hidden.add(rec.hidden)
        if rec.cell is not None:
            block.cell = block.cell or _Moments()
            block.cell.add(rec.cell)
        for name, values in rec.gates.items():
            block.gates.setdefault(name, _Moments()).add(values)
            if name not in block.samples:
                flat = values.flatten()
                block.samples[name] = flat[:: max(1, flat.numel() // HISTOGRAM_VALUES)].float().cpu()


@torch.no_grad()
def regulator_statistics(model: nn.Module, images: torch.Tensor, targets: torch.Tensor
                         ) -> tuple[dict, dict[tuple[int, int, str], torch.Tensor]]:
    """(the statistics of one probe, {(stage, step, gate): sampled gate values}); stages and steps 1-based.

    The model runs in eval mode (BatchNorm's running statistics, as validation sees it) and is put back
    in the mode it was in.
    """
    was_training = model.training
    model.eval()
    sums: dict[tuple[int, int], _BlockSums] = {}
    hits = zeroed_hits = 0
    try:
        for x, y in zip(images.split(CHUNK), targets.split(CHUNK)):
            with record(model) as trace:
                hits += int((model(x).argmax(1) == y).sum())
            _accumulate(sums, trace)
            del trace
            with regulator_ablated(model):
                zeroed_hits += int((model(x).argmax(1) == y).sum())
    finally:
        model.train(was_training)
    n = max(len(targets), 1)
    blocks = []
    for (stage, step), block in sorted(sums.items()):
        row = {"stage": stage + 1, "step": step + 1, "gates": {k: m.gate() for k, m in block.gates.items()},
               "h": block.hidden.state()}
        if block.cell is not None:
            row["c"] = block.cell.state()
        blocks.append(row)
    samples = {(s + 1, t + 1, name): values for (s, t), block in sums.items() for name, values in block.samples.items()}
    return {"top1": hits / n, "top1_h_zeroed": zeroed_hits / n, "reliance": (hits - zeroed_hits) / n,
            "blocks": blocks}, samples


class RegulatorLog:
    """Writes a RegNet run's artifacts/regulator.jsonl and its TensorBoard twin, one epoch at a time."""

    def __init__(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor, digest: str, run_dir: Path,
                 writer: Any = None, channels_last: bool = False):
        self.model, self.images, self.targets, self.digest = model, images, targets, digest
        self.path = Path(run_dir) / ARTIFACTS / REGULATOR
        self.run_dir, self.writer = Path(run_dir), writer
        if channels_last:
            self.images = self.images.contiguous(memory_format=torch.channels_last)

    @classmethod
    def open(cls, model: nn.Module, val_dataset, seed: int, run_dir: Path, device: torch.device,
             after_epoch: int = 0, writer: Any = None, channels_last: bool = False) -> "RegulatorLog | None":
        """The log of a run (None for a model without a regulator), its lines after ``after_epoch`` dropped.

        ``after_epoch`` is the epoch a resumed run continues from: lines of later epochs belong to work
        the kill lost and are written again.
        """
        if not regulated_blocks(model) or len(val_dataset) == 0:
            return None
        indices = probe_indices(len(val_dataset), seed)
        pairs = [val_dataset[i] for i in indices]
        images = torch.stack([x for x, _ in pairs]).to(device)
        targets = torch.tensor([int(y) for _, y in pairs], device=device)
        log = cls(model, images, targets, probe_digest(indices), run_dir, writer, channels_last)
        rows = read_regulator(run_dir)
        kept = [row for row in rows if row["epoch"] <= after_epoch]
        if len(kept) < len(rows):
            log._rewrite(kept)
        return log

    def epoch_end(self, epoch: int, step: int) -> dict:
        """Probe the model after epoch ``epoch`` (1-based), replace that epoch's line, and log it to TensorBoard."""
        wall, cpu = time.perf_counter(), time.process_time()
        stats, samples = regulator_statistics(self.model, self.images, self.targets)
        line = {"epoch": epoch, "step": step, "time": time.time(),
                "probe": {"images": len(self.targets), "digest": self.digest}, **stats,
                "seconds": time.perf_counter() - wall, "cpu_seconds": time.process_time() - cpu}
        self._rewrite([row for row in read_regulator(self.run_dir) if row["epoch"] < epoch] + [line])
        if self.writer is not None:
            self._to_tensorboard(line, samples, step)
        return line

    def _rewrite(self, rows: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, "".join(json.dumps(row) + "\n" for row in rows))

    def _to_tensorboard(self, line: dict, samples: dict, step: int) -> None:
        for key in ("top1", "top1_h_zeroed", "reliance"):
            self.writer.add_scalar(f"regulator/{key}", line[key], step)
        for block in line["blocks"]:
            where = f"regulator/s{block['stage']}b{block['step']}"
            for gate, numbers in block["gates"].items():
                for name, value in numbers.items():
                    self.writer.add_scalar(f"{where}/{gate}_{name}", value, step)
            for state in ("h", "c"):
                for name, value in block.get(state, {}).items():
                    self.writer.add_scalar(f"{where}/{state}_{name}", value, step)
        for (stage, block_step, gate), values in samples.items():
            self.writer.add_histogram(f"regulator/s{stage}b{block_step}/{gate}", values, step)
