"""Whether the process that owns a run is still alive, in a way that survives pid reuse.

A status.json records the trainer's pid, its start time (``pid_start``, clock ticks since boot from
/proc/<pid>/stat) and its host. A pid can be reused by an unrelated program after the trainer dies; the
start time of that program differs, so it is not mistaken for the run. Without /proc (not Linux) or
without a recorded start time (old run folders) the check falls back to ``kill(pid, 0)`` and, on Linux,
to the command line mentioning ``regnet``.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses


def process_start(pid: int) -> int | None:
    """The start time of ``pid`` (clock ticks since boot), or None where /proc cannot tell."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def process_identity() -> dict:
    """What this process writes to status.json so that readers can tell whether it still runs."""
    return {"pid": os.getpid(), "pid_start": process_start(os.getpid()), "host": socket.gethostname()}


def process_alive(pid, pid_start=None) -> bool:
    """Whether ``pid`` runs and (when ``pid_start`` is known) is the very process that recorded it."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by another user
    except OverflowError:
        return False
    if not Path("/proc/self/stat").exists():
        return True  # not Linux: kill(pid, 0) is all we can know
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False  # gone, or a zombie waiting for its parent
    if isinstance(pid_start, int) and not isinstance(pid_start, bool):
        return len(fields) > 19 and int(fields[19]) == pid_start
    try:
        return b"regnet" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def owner_alive(status: dict) -> bool:
    """Whether the process a status.json names is alive; a run recorded on another host is taken at its word."""
    host = status.get("host")
    if isinstance(host, str) and host != socket.gethostname():
        return True
    return process_alive(status.get("pid"), status.get("pid_start"))
