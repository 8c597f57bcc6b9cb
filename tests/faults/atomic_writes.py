"""Count, or die at, the run-folder contract's atomic writes: each ends in one ``os.replace`` of its temp file."""
from __future__ import annotations

import multiprocessing
import os
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

FAULTS = Path(__file__).resolve().parent
KILL_AT_WRITE_ENV = "REGNET_KILL_AT_WRITE"


def _is_atomic_write(source) -> bool:
    from regnet.runs.atomic import TEMP_SUFFIX  # here, not at start-up: sitecustomize must not import torch

    name = os.path.basename(os.fspath(source))
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def _wrap_replace(before_write: Callable[[int], None]) -> Callable[[], None]:
    """Make ``os.replace`` call ``before_write(n)`` before the n-th atomic write's rename; returns the undo."""
    real, count = os.replace, [0]

    def replace(source, target, *args, **kwargs):
        if _is_atomic_write(source):
            count[0] += 1
            before_write(count[0])
        return real(source, target, *args, **kwargs)

    os.replace = replace
    return lambda: setattr(os, "replace", real)


def kill_at_write(n: int) -> None:
    """From now on this process SIGKILLs itself just before the rename of its ``n``-th atomic write."""
    _wrap_replace(lambda i: os.kill(os.getpid(), signal.SIGKILL) if i == n else None)


@contextmanager
def counted_writes() -> Iterator[list[int]]:
    """Count this process's atomic writes inside the block: ``[count]``, updated as they happen."""
    seen = [0]
    undo = _wrap_replace(lambda i: seen.__setitem__(0, i))
    try:
        yield seen
    finally:
        undo()


def _run_dying_at(n: int, target: Callable[..., object], args: tuple) -> None:
    import torch  # the child of a process that may have used threads: one thread, as DataLoader workers do

    torch.set_num_threads(1)
    kill_at_write(n)
    target(*args)


def killed_child(n: int, target: Callable[..., object], *args, timeout: float = 300) -> int | None:
    """Run ``target(*args)`` in a forked child that SIGKILLs itself at its ``n``-th atomic write; its exit code.

    A fork, not a new interpreter: the child starts with this process's imports (torch and the engine), so a
    kill costs the steps up to the write instead of seconds of start-up. ``-SIGKILL`` when the write was
    reached; ``None`` if the child was still running after ``timeout`` seconds (it is then killed).
    """
    child = multiprocessing.get_context("fork").Process(target=_run_dying_at, args=(n, target, args))
    child.start()
    child.join(timeout)
    if child.exitcode is None:
        child.kill()
        child.join()
        return None
    return child.exitcode


def killing_env(n: int) -> dict[str, str]:
    """The environment of a child process (and its children) that dies at its ``n``-th atomic write."""
    path = os.pathsep.join(p for p in (str(FAULTS), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, KILL_AT_WRITE_ENV: str(n)}
