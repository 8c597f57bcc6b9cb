"""Tolerant readers of a run folder: every damaged file is one sentence (or a skipped, counted line), never a hang.

A reader opens only regular files (a FIFO, a device such as a link to /dev/zero, or a folder in a file's
place is refused before a byte is read), reads at most a capped size, and decodes strictly: invalid UTF-8,
a JSON value that is not an object, or YAML that is not a mapping are all "damaged". ``metrics.jsonl`` is
read as a byte-offset tail: only complete lines are consumed, and a damaged complete line is skipped and
counted, so one bad line never hides the others.
"""
from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .layout import ARTIFACTS, CONFIG, METRICS, REGULATOR, STATUS

SMALL_FILE_CAP = 4 * 2**20  # status.json and config.yaml are a few kB; anything this big is not ours
METRICS_CHUNK_CAP = 64 * 2**20  # read per call; the rest is read on the next call
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class DamagedFile(ValueError):
    """A run file that exists but cannot be used; the message is one sentence naming the file and why."""


def read_regular(path: str | Path, offset: int = 0, cap: int = SMALL_FILE_CAP) -> bytes:
    """Up to ``cap`` bytes of the regular file ``path`` from ``offset``.

    FileNotFoundError if it is missing; :class:`DamagedFile` if it is not a regular file (opened without
    blocking, so a FIFO cannot hang the reader).
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise DamagedFile(f"{path} is a folder, not a file; remove it.") from None
    except OSError as error:
        raise DamagedFile(f"{path} cannot be opened ({error.strerror or error}).") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise DamagedFile(f"{path} is a folder, not a file; remove it.")
        if not stat.S_ISREG(mode):
            raise DamagedFile(f"{path} is not a regular file (a pipe or a device); remove it.")
        os.lseek(fd, offset, os.SEEK_SET)
        chunks, left = [], cap
        while left > 0:
            chunk = os.read(fd, min(left, 2**20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _small_text(path: Path) -> str:
    data = read_regular(path)
    if len(data) >= SMALL_FILE_CAP:
        raise DamagedFile(f"{path} is larger than {SMALL_FILE_CAP // 2**20} MiB; it is not a run file.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise DamagedFile(f"{path} is not valid UTF-8 text; the file is damaged.") from None


def read_status(run_dir: str | Path) -> dict:
    """The run's status.json as a dict; a one-sentence ValueError if it is missing or damaged."""
    try:
        return read_json_object(Path(run_dir) / STATUS, "run folder")
    except FileNotFoundError:
        raise ValueError(f"{run_dir} is not a run folder (no {STATUS}); pass a folder under runs/.") from None


def read_json_object(path: str | Path, owner: str) -> dict:
    """A small JSON file that must hold an object; FileNotFoundError if missing, DamagedFile (naming the
    ``owner``, e.g. "run folder") if it is not valid JSON or not an object."""
    path = Path(path)
    text = _small_text(path)
    try:
        data = json.loads(text)
    except ValueError:
        raise DamagedFile(f"{path} is not valid JSON; the {owner} is damaged.") from None
    if not isinstance(data, dict):
        raise DamagedFile(f"{path} holds a JSON {type(data).__name__}, not an object; the {owner} is damaged.")
    return data


def read_config_dict(run_dir: str | Path) -> dict:
    """The run's config.yaml as plain dicts; a one-sentence ValueError if it is missing or damaged."""
    path = Path(run_dir) / CONFIG
    return read_yaml_mapping(path, missing=f"{run_dir} is not a run folder (no {CONFIG}); "
                                            f"pass a folder under runs/ or checkpoints/.")


def read_yaml_mapping(path: str | Path, missing: str | None = None) -> dict:
    """A YAML file that must hold a mapping (a config); one sentence for a missing, damaged or foreign file."""
    path = Path(path)
    try:
        text = _small_text(path)
    except FileNotFoundError:
        raise ValueError(missing or f"Config file {path} does not exist; pass an existing YAML file.") from None
    try:
        data = yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise DamagedFile(f"{path} is not valid YAML{line}; fix the syntax.") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DamagedFile(f"{path} holds a YAML {type(data).__name__}, not a mapping of sections.")
    return data


@dataclass
class MetricsChunk:
    """What a read of metrics.jsonl from some byte offset found."""

    rows: list[dict] = field(default_factory=list)
    offset: int = 0  # where the next read starts: just after the last complete line read
    damaged: int = 0  # complete lines skipped: not UTF-8, not JSON, or not a JSON object
    problem: str | None = None  # the file itself cannot be read (not a regular file, say)


def read_metrics_since(path: str | Path, offset: int = 0, cap: int = METRICS_CHUNK_CAP) -> MetricsChunk:
    """The complete lines of a metrics file after byte ``offset`` (a missing file reads as nothing new)."""
    try:
        data = read_regular(path, offset, cap)
    except FileNotFoundError:
        return MetricsChunk(offset=offset)
    except DamagedFile as error:
        return MetricsChunk(offset=offset, problem=str(error))
    end = data.rfind(b"\n")
    chunk = MetricsChunk(offset=offset + end + 1)
    for raw in data[: end + 1].split(b"\n"):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except ValueError:  # UnicodeDecodeError and JSONDecodeError both are
            row = None
        if isinstance(row, dict):
            chunk.rows.append(row)
        else:
            chunk.damaged += 1
    return chunk


def read_all_metrics(run_dir: str | Path) -> MetricsChunk:
    """Every complete line of a run's metrics.jsonl, however long the file (read in capped chunks)."""
    path = Path(run_dir) / METRICS
    total = read_metrics_since(path, 0)
    while total.problem is None:
        more = read_metrics_since(path, total.offset)
        if more.offset == total.offset:
            break
        total.rows += more.rows
        total.damaged += more.damaged
        total.offset = more.offset
        total.problem = more.problem
    return total


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The rows of a run's metrics.jsonl; damaged lines and an unreadable file read as no rows."""
    return read_all_metrics(run_dir).rows


def tail_text(path: str | Path, max_lines: int = 40, max_bytes: int = 32_000) -> str:
    """The last lines of a text file (a log), or '' when there is none or it is not a regular file."""
    try:
        size = os.stat(path).st_size
        data = read_regular(path, max(0, size - max_bytes), max_bytes)
    except (OSError, ValueError):
        return ""
    return "\n".join(data.decode("utf-8", errors="replace").splitlines()[-max_lines:])


def read_regulator(run_dir: str | Path) -> list[dict]:
    """The per-epoch regulator statistics of a run (artifacts/regulator.jsonl), one dict per epoch, by epoch.

    Read like metrics.jsonl: a missing file is no rows, a damaged line is skipped, and a line without an
    integer epoch is left out; should an epoch appear twice, the later line wins.
    """
    path = Path(run_dir) / ARTIFACTS / REGULATOR
    chunk = read_metrics_since(path, 0)
    rows = {row["epoch"]: row for row in chunk.rows if isinstance(row.get("epoch"), int)}
    return [rows[epoch] for epoch in sorted(rows)]
