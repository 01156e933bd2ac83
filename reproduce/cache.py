"""An experiment's records kept between runs: JSON written atomically, and the units of a long study (an arm at a
seed, a shape at a seed), each computed once and kept beside the results it adds up to, so a study longer than one
sitting resumes on any clone and several processes can share it. Keys come from
``tinylm.artifacts.cache.cache_key`` (they carry the version of the code that computes the record)."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import torch

from reproduce.plan import tree_state
from reproduce.tables import portable
from tinylm.artifacts.io import MARKER, atomic_file, is_tinylm_dir
from tinylm.artifacts.provenance import hardware
from tinylm.errors import TinyLMError

UNITS = "units"  # <out>/units/<study>-<key>/<unit>.json, committed with the results: a study spans sittings
POLL_SECONDS = 20.0  # how often a process waiting on another's unit looks for it


def read_json(path: Path, missing: Any = None) -> Any:
    """A cached JSON record, or ``missing`` when there is none yet."""
    return json.loads(Path(path).read_text()) if Path(path).is_file() else missing


def write_json(path: Path, record: Any) -> None:
    """Cache ``record`` as JSON at ``path``, atomically (a cut-short run never leaves half a record)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as handle:
        handle.write(json.dumps(record))


def study_units(out: Path, study: str, key: str, jobs: Mapping[str, Callable[[], dict[str, Any]]],
                log: Callable[[str], None] = print) -> dict[str, dict[str, Any]]:
    """Every unit of a long study, by name (in ``jobs``' order), each computed once and kept under
    ``<out>/units/<study>-<key>/<name>.json`` with the commit, threads, hardware and seconds it ran with: commit the
    units and the study resumes on any clone (``key`` from ``cache_key`` carries the code version, so a unit from
    changed code is never reused). Several processes may run one study at once: each claims a unit before
    computing it (``<name>.claim``, ignored by git), passes over units a live process holds, then waits for
    them (and takes over any whose process died)."""
    root = Path(out) / UNITS
    if root.is_dir() and any(root.iterdir()) and not is_tinylm_dir(root):  # claims are deleted here: ours only
        raise TinyLMError(f"{root} exists and was not written by tinylm (no {MARKER}); move it away or give "
                          "another --out")
    folder = root / f"{study}-{key}"
    folder.mkdir(parents=True, exist_ok=True)
    if not is_tinylm_dir(root):
        (root / MARKER).write_text("written by tinylm: the units of long studies (reproduce.cache)\n")
    done: dict[str, dict[str, Any]] = {}
    for name, compute in jobs.items():  # first pass: every free unit
        path = folder / f"{name}.json"
        if (record := read_json(path)) is None and _claim(path):
            record = _compute(path, compute, out)
        if record is not None:
            done[name] = record
    for name in [n for n in jobs if n not in done]:  # then the units other processes held
        path = folder / f"{name}.json"
        log(f"  waiting for unit {name}: {_holder(path)} is computing it")
        while (record := read_json(path)) is None:
            if _claim(path):  # its process stopped without a record
                record = _compute(path, jobs[name], out)
                break
            time.sleep(POLL_SECONDS)
        done[name] = record
    return {name: done[name] for name in jobs}


def units_summary(records: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """What a results.json says about the units it was assembled from: how many, the commits they ran at and
    their summed compute."""
    ran = [r.get("ran", {}) for r in records.values()]
    return {"count": len(ran), "commits": sorted({r.get("commit") or "unknown" for r in ran}),
            "core_seconds": round(sum(r.get("seconds", 0.0) * r.get("torch_threads", 1) for r in ran), 1)}


def _compute(path: Path, compute: Callable[[], dict[str, Any]], out: Path) -> dict[str, Any]:
    """Compute one claimed unit and write its record with what it ran on; the claim goes whatever happens."""
    try:
        if (record := read_json(path)) is not None:  # finished by another process since this one looked
            return record
        start = time.perf_counter()
        record = compute()
        commit, dirty = tree_state((Path(out),))
        ran = {"commit": commit, "dirty": dirty, "torch_threads": torch.get_num_threads(), "hardware": hardware(),
               "seconds": round(time.perf_counter() - start, 1)}
        record = {**portable(record), "ran": ran}  # committed: cache paths as $TINYLM_CACHE/..., not this machine's
        write_json(path, record)
        return record
    finally:
        path.with_suffix(".claim").unlink(missing_ok=True)


def _claim(path: Path) -> bool:
    """Claim the unit at ``path`` for this process; False when a live process holds it. A claim left by a
    process of this machine that has died is taken over (two processes taking over the same dead claim at the
    same instant would both compute the unit: the records are written atomically, so the cost is time only)."""
    claim = path.with_suffix(".claim")
    for _ in range(2):
        try:
            with open(claim, "x") as handle:
                handle.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
            return True
        except FileExistsError:
            if _alive(claim):
                return False
            claim.unlink(missing_ok=True)
    return False


def _alive(claim: Path) -> bool:
    """Whether the process that wrote ``claim`` still runs; one on another machine is assumed to (delete its
    claim file by hand if that machine stopped)."""
    try:
        holder = json.loads(claim.read_text())
    except (OSError, ValueError):
        return True  # being written this instant
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder(path: Path) -> str:
    try:
        holder = json.loads(path.with_suffix(".claim").read_text())
        return f"process {holder['pid']} on {holder['host']}"
    except (OSError, ValueError, KeyError):
        return "another process"
