"""An experiment's records kept between runs: JSON written atomically, and one unit of work (an arm at a seed)
computed once under the tinylm cache, so a long study cut short resumes. The key itself comes from
``tinylm.artifacts.cache.cache_key`` (it carries the version of the code that computes the record)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from tinylm.artifacts.io import atomic_file, default_cache_dir


def read_json(path: Path, missing: Any = None) -> Any:
    """A cached JSON record, or ``missing`` when there is none yet."""
    return json.loads(Path(path).read_text()) if Path(path).is_file() else missing


def write_json(path: Path, record: Any) -> None:
    """Cache ``record`` as JSON at ``path``, atomically (a cut-short run never leaves half a record)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as handle:
        handle.write(json.dumps(record))


def cached_run(kind: str, key: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The record of one unit of an experiment (an arm at a seed), computed once and kept in the tinylm cache
    under ``reproduce/<kind>/<key>.json`` (``key`` from ``cache_key``, so it carries the code version): a long
    study cut short resumes at the next unit, in this run or a later one."""
    path = Path(default_cache_dir()) / "reproduce" / kind / f"{key}.json"
    if (record := read_json(path)) is None:
        record = compute()
        write_json(path, record)
    return record
