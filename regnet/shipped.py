"""What the package ships besides code: the ready configs and the shipped runs, found wherever regnet is.

An install (``pip install .`` or the wheel) carries the repository's ``configs/`` and ``checkpoints/``
inside the package as ``regnet/configs`` and ``regnet/checkpoints`` (pyproject.toml maps them), read
through ``importlib.resources``; a checkout has them beside ``regnet/``. Either way a user started in any
folder gets the same ready configs (``regnet train --config NAME``, the New run page) and shipped runs
(the Runs page).
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def _shipped_folder(name: str) -> Path:
    """``regnet/<name>`` of an installed package, else the checkout's top-level ``<name>/``."""
    packaged = Path(str(files("regnet") / name))
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / name


def ready_configs_dir() -> Path:
    """The folder of the ready configs (``*.yaml``)."""
    return _shipped_folder("configs")


def shipped_runs_dir() -> Path:
    """The folder of the shipped runs (each an ordinary run folder, read-only)."""
    return _shipped_folder("checkpoints")


def ready_configs(folder: str | Path | None = None) -> dict[str, Path]:
    """The ready configs by name (file stem), sorted; ``folder`` defaults to the shipped ones."""
    return {path.stem: path for path in sorted(Path(folder or ready_configs_dir()).glob("*.yaml"))}


def config_file(name_or_path: str | Path) -> Path:
    """A config file given as a path, or a ready config given by name (``shapes_regnet20``).

    An existing file, or anything that looks like a path (a folder part or a YAML suffix), is taken as a
    path; otherwise a ready config of that name, or a one-sentence ValueError listing them.
    """
    path = Path(name_or_path)
    if path.is_file() or len(path.parts) > 1 or path.suffix in (".yaml", ".yml"):
        return path
    ready = ready_configs()
    if str(name_or_path) in ready:
        return ready[str(name_or_path)]
    raise ValueError(f"There is no config file {name_or_path} and no ready config of that name; pass a YAML file "
                     f"or one of: {', '.join(ready) or '(none shipped)'}.")
