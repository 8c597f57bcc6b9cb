"""A run's tags and note: what a user adds to a run folder, written atomically, read tolerantly.

``tags.json`` holds a JSON list of short labels and ``note.md`` free text. Both belong to the user, not to
the engine: training never writes them (a launch with ``--tag``/``--note`` only hands them to the new folder
before it appears), so a note added while a run trains is never overwritten, and a resumed run keeps them. A damaged or foreign file reads as no tags (or no note) with nothing raised, as a
listing of thousands of runs must not stop at one bad file; writing refuses bad input with one sentence.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable

from .atomic import atomic_write_json, atomic_write_text
from .layout import NOTE, TAGS
from .read import DamagedFile, read_regular

TAG_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.+:/-]{0,39}")
TAG_RULE = "1 to 40 letters, digits, spaces or '_ . + : / -', starting with a letter or digit"
MAX_TAGS = 32
NOTE_CAP = 64 * 1024  # characters: a note, not a report


def parse_tags(text: str) -> list[str]:
    """Comma-separated tags as typed in a text box, stripped, duplicates dropped (first spelling kept)."""
    return clean_tags(part for part in text.split(","))


def clean_tags(tags: Iterable[str]) -> list[str]:
    """Tags stripped and de-duplicated (case-insensitively); ValueError naming the first bad one."""
    cleaned, seen = [], set()
    for tag in tags:
        tag = str(tag).strip()
        if not tag or tag.lower() in seen:
            continue
        if not TAG_PATTERN.fullmatch(tag):
            raise ValueError(f"Tag {tag!r} is not allowed; use {TAG_RULE}.")
        seen.add(tag.lower())
        cleaned.append(tag)
    if len(cleaned) > MAX_TAGS:
        raise ValueError(f"{len(cleaned)} tags are too many; keep at most {MAX_TAGS}.")
    return cleaned


def read_tags(run_dir: str | Path) -> list[str]:
    """The run's tags; [] when there are none or the file is damaged (entries that break the rule are dropped)."""
    try:
        data = json.loads(read_regular(Path(run_dir) / TAGS).decode("utf-8"))
    except (OSError, DamagedFile, ValueError):  # missing, not a regular file, not UTF-8, not JSON
        return []
    if not isinstance(data, list):
        return []
    return [tag for tag in data if isinstance(tag, str) and TAG_PATTERN.fullmatch(tag)][:MAX_TAGS]


def write_tags(run_dir: str | Path, tags: Iterable[str]) -> list[str]:
    """Replace the run's tags (atomically) and return them as stored."""
    cleaned = clean_tags(tags)
    atomic_write_json(Path(run_dir) / TAGS, cleaned)
    return cleaned


def read_note(run_dir: str | Path) -> str:
    """The run's note; '' when there is none or the file is damaged."""
    try:
        return read_regular(Path(run_dir) / NOTE, cap=4 * NOTE_CAP).decode("utf-8")[:NOTE_CAP]
    except (OSError, DamagedFile, UnicodeDecodeError):
        return ""


def check_note(note: str) -> str:
    """``note`` itself if it is short enough to be a note; ValueError with one sentence otherwise."""
    if len(note) > NOTE_CAP:
        raise ValueError(f"The note has {len(note):,} characters; keep it under {NOTE_CAP:,}.")
    return note


def write_note(run_dir: str | Path, note: str) -> str:
    """Replace the run's note (atomically; an empty note is stored as an empty file) and return it."""
    atomic_write_text(Path(run_dir) / NOTE, check_note(note))
    return note


def write_annotations(run_dir: str | Path, tags: Iterable[str] = (), note: str = "") -> None:
    """Give a new run the tags and note its user chose at launch (nothing is written for none of either)."""
    tags = clean_tags(tags)
    if tags:
        write_tags(run_dir, tags)
    if note:
        write_note(run_dir, note)
