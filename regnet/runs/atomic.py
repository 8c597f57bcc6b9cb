"""The one atomic write of the project: a reader sees the old file or the new one, never a part, even after a crash.

The data goes to a temp file in the same folder (so the rename cannot cross file systems), is fsynced,
renamed over the target, and the folder is fsynced so the rename itself survives a power cut. Temp files
are named ``.<name>.<random>.tmp``; a process killed mid-write leaves one behind, which
:func:`remove_stale_temps` clears when the run's owner starts or resumes. (The crash tests kill a run
just before the rename of each write in turn: ``tests/faults/``.)
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable

TEMP_SUFFIX = ".tmp"


def _file_mode() -> int:
    """What ``open()`` would give a new file under this process's umask (mkstemp makes it private)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o644


def atomic_write(path: str | Path, data: bytes | Callable) -> None:
    """Replace ``path`` by ``data`` (bytes, or a function that writes to the binary file it is given).

    On any failure the temp file is removed and ``path`` is left as it was, then the error is raised.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        os.fchmod(fd, _file_mode())  # readers (dashboard, TensorBoard, other users) must be able to read it
        with os.fdopen(fd, "wb") as handle:
            if callable(data):
                data(handle)
            else:
                handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # a platform without directory handles: the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, text.encode())


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write(path, (json.dumps(obj, indent=2) + "\n").encode())


def remove_stale_temps(*folders: str | Path) -> list[Path]:
    """Delete the temp files killed writers left in ``folders``; only the owner of a run calls this."""
    removed = []
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX) and entry.is_file(follow_symlinks=False):
                Path(entry.path).unlink(missing_ok=True)
                removed.append(Path(entry.path))
    return removed
