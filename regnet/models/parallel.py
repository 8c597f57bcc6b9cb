"""Inference over many batches on a CPU: several batches at once, one torch thread each.

A small model's forward pass on a CPU is hundreds of short ops (regnet20's:
about 600, most under a millisecond). Split across torch's intra-op threads,
each op pays OpenMP's fork and join and leaves a thread idle at its tail; run
as whole batches side by side, one per thread, the threads never wait on each
other, which makes small-model inference faster on a few cores
(``bench/throughput.py`` measures it).
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

import torch

Batch = TypeVar("Batch")
Result = TypeVar("Result")


def map_batches(fn: Callable[[Batch], Result], batches: Iterable[Batch], device: torch.device | str,
                side_by_side: bool = True) -> Iterator[Result]:
    """``fn(batch)`` for every batch, in order; on a CPU with N > 1 torch threads, N batches at a time.

    Each worker runs with one intra-op thread (torch's thread count is set
    to 1 for the duration and restored after) and in the caller's grad and
    inference mode, which are per-thread in torch. ``fn`` must not depend on
    state another batch changes: the model is shared, so hooks that store
    what they see must store it per thread. At most N batches are in flight,
    so memory stays that of N batches. ``side_by_side=False`` runs them one
    after the other on the calling thread (a ``torch.compile``-d model: its
    compiled code and guards belong to the thread that made them).
    """
    workers = torch.get_num_threads()
    if not side_by_side or torch.device(device).type != "cpu" or workers < 2:
        yield from map(fn, batches)
        return
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    def work(batch: Batch) -> Result:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return fn(batch)

    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers) as pool:
            pending = deque()
            for batch in batches:
                pending.append(pool.submit(work, batch))
                if len(pending) >= workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
    finally:
        torch.set_num_threads(workers)
