"""Cache keys that carry the version of the code behind them: the one helper every cached step (``tinylm pro``'s
stages, ``reproduce``'s run caches) builds its key with, so a cache never serves a number from code that no
longer exists."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any


def digest(data: Any, length: int = 16) -> str:
    """A stable fingerprint of JSON data: keys sorted, so the same mapping in any order gives the same hash;
    anything that is not JSON (paths, numpy scalars) is hashed by its text."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _source_files(module: ModuleType) -> dict[str, Path]:
    """The files whose content is ``module``'s code, by name: a module's own file; for a package, every file in
    its folder tree (its modules and package data such as lm-eval task YAMLs), so a module added later counts
    without being named."""
    path = inspect.getsourcefile(module)
    if path is None:
        raise ValueError(f"code_version: {module.__name__} has no source file to fingerprint")
    if not hasattr(module, "__path__"):
        return {module.__name__: Path(path)}
    root = Path(path).parent
    files = {}
    for file in sorted(root.rglob("*")):
        if not file.is_file() or "__pycache__" in file.parts or file.suffix == ".pyc":
            continue
        relative = file.relative_to(root)
        if file.suffix == ".py":
            parts = (*relative.parent.parts, *(() if file.stem == "__init__" else (file.stem,)))
            files[".".join((module.__name__, *parts))] = file
        else:
            files[f"{module.__name__}:{relative.as_posix()}"] = file
    return files


def code_version(*modules: ModuleType | str) -> str:
    """A fingerprint of the source of ``modules`` (module objects or dotted names; a package stands for every
    file under it): include it in a cache key so a cached value is recomputed when the code that computes it
    changes. A plain module hashes only its own file, so name every module whose code decides the value."""
    sources = {}
    for module in modules:
        module = importlib.import_module(module) if isinstance(module, str) else module
        for name, path in _source_files(module).items():
            sources[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest(sources, 12)


def cache_key(*parts: Any, modules: Sequence[ModuleType | str]) -> str:
    """A cache key of ``parts`` (JSON data) and the code version of ``modules`` (every module whose code computes
    the cached value): the same inputs under changed code get a new key. Naming no module is refused: a key
    without a code version is what let stale numbers through."""
    if not modules:
        raise ValueError("cache_key: name the modules whose code computes the cached value")
    return hashlib.sha256(json.dumps([list(parts), code_version(*modules)], default=str).encode()).hexdigest()[:16]
