"""Resumable stages: each stage of ``tinylm pro`` is a folder under ``--out``, written atomically, whose
``stage.json`` records a key of everything it was built from — its inputs and the version of the code that
computes it (``tinylm.artifacts.cache``); a rerun skips a folder holding the same key."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tinylm.artifacts.cache import cache_key, code_version, digest
from tinylm.artifacts.io import MARKER, atomic_dir, check_output_dir, is_tinylm_dir
from tinylm.errors import TinyLMError

RUN_FILE = "pro.json"  # marks a folder as a tinylm pro run (resumable)
STAGE_FILE = "stage.json"


def stage_record(folder: Path) -> dict[str, Any] | None:
    """The ``stage.json`` of a finished stage folder, or None."""
    path = folder / STAGE_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except json.JSONDecodeError:
        return None


def run_stage(folder: Path, inputs: dict[str, Any], build: Callable[..., dict[str, Any]], code: Sequence[str],
              force: bool = False, resumable: bool = False) -> dict[str, Any]:
    """Build ``folder`` (atomically) unless it already holds a stage built from the same ``inputs`` by the same
    ``code`` (the modules, or packages, whose source computes the stage: a changed line in them redoes it).

    ``build(tmp)`` writes into a temp folder and returns a JSON-able result (paths relative to the folder);
    the returned record carries ``result``, ``hash`` and ``folder``. A ``resumable`` stage is called as
    ``build(tmp, work)``: ``work`` (``.<folder>.work-<hash>``, beside the folder) survives a killed run, so the
    stage continues from what it saved there; it is removed once the stage is done, and with ``force``.
    """
    # inputs hashed with sorted keys first: the key must not depend on the order a dict was built in (a stage's
    # output format is its code's, so a format change is a code change and redoes the stage too)
    key, version = cache_key(digest(inputs), modules=code), code_version(*code)
    record = stage_record(folder)
    if record is not None and record.get("hash") == key and not force:
        print(f"tinylm pro: {folder.name}: skipped (done; inputs and code unchanged, hash {key})", flush=True)
        return {**record, "folder": folder}
    print(f"tinylm pro: {folder.name}: running", flush=True)
    start = time.perf_counter()
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = folder.parent / f".{folder.name}.work-{key}"
    for stale in folder.parent.glob(f".{folder.name}.work-*"):  # other settings' leftovers, or a forced redo
        if (stale != work or force) and is_tinylm_dir(stale):  # only what run_stage made (marked) is removed
            shutil.rmtree(stale)
    if resumable:
        work.mkdir(exist_ok=True)
        (work / MARKER).touch()
    with atomic_dir(folder, overwrite=True, what=f"stage folder {folder.name}") as tmp:
        result = build(tmp, work) if resumable else build(tmp)
        record = {"stage": folder.name, "hash": key, "inputs": inputs,
                  "code": {"modules": list(code), "version": version}, "result": result,
                  "seconds": round(time.perf_counter() - start, 1)}
        (tmp / STAGE_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")
    if is_tinylm_dir(work):  # the stage is done: what it saved to resume is not needed
        shutil.rmtree(work)
    print(f"tinylm pro: {folder.name}: done in {record['seconds']:.0f} s", flush=True)
    return {**record, "folder": folder}


def fingerprint_dir(folder: Path) -> str:
    """A cheap identity of a model dir's content: names, sizes and modification times of its files."""
    entries = sorted(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in folder.iterdir() if p.is_file())
    return digest([str(folder.resolve()), entries])


def check_run_out(out: str, overwrite: bool, inputs: list[Any] = ()) -> Path:
    """Where a run goes, checked without writing: a new or empty folder, or a previous ``tinylm pro`` run (which
    is resumed); anything else is refused, and so is a folder that is, contains or lies inside an input."""
    path = Path(out).expanduser()
    if (path / RUN_FILE).is_file() and is_tinylm_dir(path):
        # still refuses ., .., home, parents of the working dir and the command's inputs
        return check_output_dir(path, overwrite=True, inputs=inputs)
    if path.is_dir() and any(path.iterdir()):
        what = "was not written by tinylm" if not is_tinylm_dir(path) else "holds tinylm output that is not a " \
                                                                            "`tinylm pro` run"
        raise TinyLMError(f"--out {path} exists, is not empty and {what}; name a new folder (a previous "
                          "`tinylm pro` --out is resumed)")
    return check_output_dir(path, inputs=inputs)


def start_run(path: Path) -> None:
    """Make ``path`` a run folder (marked as tinylm's); called only once every input has been checked."""
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).write_text("written by tinylm; `--overwrite` may replace this folder\n")
