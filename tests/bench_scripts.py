"""bench/ modules that tests use, loaded by their path: bench/ is not an installed package, and pytest may be
started from any folder (no sys.path insertion needed)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parent.parent / "bench"


def load_bench(name: str) -> ModuleType:
    """``bench/<name>.py`` as a module (registered in sys.modules, where dataclasses look their module up)."""
    key = f"bench_{name.lstrip('_')}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, BENCH / f"{name}.py")
        module = sys.modules[key] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules[key]
