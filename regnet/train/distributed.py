"""Devices, mixed precision and the processes of a distributed run.

The same ``train`` runs alone or under ``torchrun --nproc_per_node=N``: the
environment variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*)
switch DistributedDataParallel on (gloo on CPU, nccl on GPU). Data order
depends only on (seed, epoch), sharded exactly as torch's
``DistributedSampler`` does, so N processes see together the batches one
process sees alone.
"""
from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # we joined the process group, so we leave it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` is CUDA when there is a GPU, else the CPU; an unavailable device is a one-sentence error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"Device {name!r} was asked for but CUDA is not available here; use --device cpu.")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("Device 'mps' was asked for but is not available here; use --device cpu.")
    return device


def init_distributed(device_name: str) -> DistContext:
    """Join the process group if torchrun started us (WORLD_SIZE > 1), else a single-process context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    joins = world_size > 1 and not dist.is_initialized()
    if joins:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    return DistContext(rank, world_size, local_rank, device, owns_group=joins)


def cleanup_distributed(ctx: DistContext) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over processes in place (a no-op alone), so metrics are those of the global batch."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj, ctx: DistContext):
    """Rank 0's ``obj`` on every process (the run folder's path, chosen once)."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def amp_dtype(device: torch.device, name: str = "auto") -> torch.dtype:
    """The autocast dtype of ``train.amp_dtype``: ``auto`` is bfloat16 on the CPU, float16 on CUDA."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cpu" else torch.float16
    return getattr(torch, name)


def autocast(device: torch.device, enabled: bool, dtype: str = "auto") -> contextlib.AbstractContextManager:
    """Autocast in ``amp_dtype(device, dtype)`` (float16 needs the loop's GradScaler); a no-op when off, or on MPS."""
    if not enabled or device.type not in ("cpu", "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype(device, dtype))


class SeededShardSampler(torch.utils.data.Sampler[int]):
    """This process's share of a permutation that depends only on (seed, epoch).

    The order is exactly ``DistributedSampler``'s (``randperm`` from a
    generator seeded with seed + epoch, padded to a multiple of the world size,
    then every world_size-th index from ``rank``), so one process and N
    processes walk the data in the same global order. ``skip`` drops the first
    indices of the epoch, which is how a run stopped mid-epoch resumes where it
    stopped. With ``shuffle=False`` and ``pad=False`` it shards evaluation data
    without duplicating any image.
    """

    def __init__(self, length: int, seed: int = 0, rank: int = 0, world_size: int = 1, *, shuffle: bool = True,
                 pad: bool = True):
        self.length, self.seed, self.rank, self.world_size = length, seed, rank, world_size
        self.shuffle, self.pad = shuffle, pad
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def _indices(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + self.epoch)
            indices = torch.randperm(self.length, generator=generator).tolist()
        else:
            indices = list(range(self.length))
        if self.pad and self.world_size > 1:
            total = math.ceil(self.length / self.world_size) * self.world_size
            padding = total - len(indices)
            indices += (indices * math.ceil(padding / max(len(indices), 1)))[:padding]
        return indices[self.rank::self.world_size]

    def __iter__(self):
        return iter(self._indices()[self.skip:])

    def __len__(self) -> int:
        if self.pad and self.world_size > 1:
            share = math.ceil(self.length / self.world_size)
        else:
            share = len(range(self.rank, self.length, self.world_size))
        return max(share - self.skip, 0)
