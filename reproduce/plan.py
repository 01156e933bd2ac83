"""Plans and provenance: what a run promised before it ran, and what it ran on.

An experiment's plan is *derived* from its declarations (``EXPERIMENT`` in ``reproduce/<id>.py``: the findings with
their arms, metric and smallest effect that matters, the scale's settings and sizes, the seeds) — never written a
second time by hand, so it cannot drift from what runs. ``plan_hash`` fingerprints it; a results.json carries the
hash beside the commit, the dirty flag, threads and versions, and an earlier result under another plan is moved to
``history/`` rather than replaced. Cache keys (with the version of the code behind them) come from
``tinylm.artifacts.cache``, which the library's own cached steps share.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tinylm.artifacts.cache import digest
from tinylm.artifacts.provenance import environment, git_state
from tinylm.errors import TinyLMError

REPO = Path(__file__).resolve().parents[1]
HISTORY = "history"
PLANS = Path(__file__).resolve().parent / "plans"  # the committed plans, one JSON file per experiment and scale


def canonical(value: Any) -> Any:
    """``value`` as plain JSON data with a stable form: dataclasses by their fields (plus a recipe's ``tokens``),
    tuples and sets as lists, paths as text with the home folder written ``~``, callables by name."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data = {f.name: canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(getattr(type(value), "tokens", None), property):  # a recipe's size, stated in the plan
            data["tokens"] = value.tokens
        return data
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(canonical(v) for v in value)
    if isinstance(value, Path):
        return str(value).replace(str(Path.home()) + "/", "~/")
    if callable(value):
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', repr(value))}"
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"a plan holds plain data; {type(value).__name__} {value!r} has no stable form")


def plan(experiment: Any, scale: str) -> dict[str, Any]:
    """What ``experiment`` promises at ``scale`` before it runs: its findings (claim, arms, metric, direction,
    smallest effect, margin, exploratory or not), the scale's settings (sizes, token budgets), the seeds, its
    estimated cost (single-core hours) and the paper's numbers it is compared with."""
    return {"experiment": experiment.name, "scale": scale,
            "seeds": "deterministic" if experiment.deterministic else experiment.seeds[scale],
            "settings": canonical(experiment.scales[scale]),
            "findings": [_declared(f) for f in experiment.findings],
            "core_hours": experiment.core_hours.get(scale),
            "paper": canonical(experiment.paper)}


def _declared(finding: Any) -> dict[str, Any]:
    """A finding's fields that differ from their defaults: a field added to ``Finding`` later leaves every plan
    that does not use it, and its hash, unchanged."""
    return {f.name: canonical(getattr(finding, f.name)) for f in dataclasses.fields(finding)
            if f.default is dataclasses.MISSING or getattr(finding, f.name) != f.default}


def plan_hash(experiment: Any, scale: str) -> str:
    """A stable fingerprint of ``plan(experiment, scale)``: the same declarations give the same hash anywhere."""
    return digest(plan(experiment, scale))


def plan_file(name: str, scale: str) -> Path:
    """Where the committed plan of experiment ``name`` at ``scale`` lives: ``reproduce/plans/<name>.<scale>.json``."""
    return PLANS / f"{name}.{scale}.json"


def write_plan(experiment: Any, scale: str) -> Path:
    """Write ``plan(experiment, scale)`` with its hash to its plan file (``python -m reproduce plan``); commit it
    before the run it promises."""
    path = plan_file(experiment.name, scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"plan_hash": plan_hash(experiment, scale), **plan(experiment, scale)}, indent=2,
                               ensure_ascii=False) + "\n")
    return path


def check_plan_written(experiment: Any, scale: str) -> None:
    """Refuse a small or paper run whose declarations differ from the plan file (or that has none): what runs is
    what was written down first. ``checked_tree`` then makes sure that file is committed."""
    path = plan_file(experiment.name, scale)
    try:
        written = json.loads(path.read_text())
    except (OSError, ValueError):
        written = None
    if written != {"plan_hash": plan_hash(experiment, scale), **plan(experiment, scale)}:
        state = "has no plan file" if written is None else "differs from its plan file"
        raise TinyLMError(f"{experiment.name} at {scale} scale {state} ({path}); write the plan with `python -m "
                          f"reproduce plan --scale {scale}`, review and commit it, then run")


def provenance(commit: str | None, dirty: bool | None, hash_: str) -> dict[str, Any]:
    """What a results.json records about the code and machine that produced it."""
    env = environment()
    return {"commit": commit, "dirty": dirty, "plan_hash": hash_, "torch_threads": env["torch_threads"],
            "versions": env["versions"]}


def keep_history(old: Path, new: Path, new_hash: str, new_commit: str | None = None) -> dict[str, Any] | None:
    """Carry ``old/history/`` into the folder ``new`` that replaces ``old``; when ``old`` holds a result under
    another plan (or none recorded), also move that result (results.json, table.md, figures) to
    ``new/history/<its plan hash>/``; a small- or paper-scale result of the same plan from another commit goes to
    ``new/history/<plan hash>-<commit>/`` (what a rerun changed is a result too). Nothing is deleted. Returns the
    plan change, or None; a rerun under the same plan carries the change that plan's first result recorded (two
    processes finishing one study both write it, and the second must not forget what the first moved)."""
    old, new = Path(old), Path(new)
    if (old / HISTORY).is_dir():
        shutil.copytree(old / HISTORY, new / HISTORY, dirs_exist_ok=True)
    if not (old / "results.json").is_file():
        return None
    try:
        record = json.loads((old / "results.json").read_text())
    except ValueError:
        record = {}
    old_hash, old_commit = record.get("plan_hash"), record.get("commit")
    if old_hash == new_hash:
        if record.get("scale") in ("small", "paper") and old_commit and new_commit and old_commit != new_commit:
            _keep(old, new, f"{old_hash}-{old_commit[:10]}")
        return record.get("plan_changed")
    name = old_hash or "unplanned-" + time.strftime("%Y-%m-%d", time.gmtime((old / "results.json").stat().st_mtime))
    target = _keep(old, new, name)
    return {"from": old_hash, "to": new_hash, "moved_to": f"{HISTORY}/{target.name}",
            "from_commit": old_commit, "on": time.strftime("%Y-%m-%d", time.gmtime())}


def _keep(old: Path, new: Path, name: str) -> Path:
    """Copy ``old``'s result (not its history) to a new ``new/history/<name>[-n]/``."""
    target, suffix = new / HISTORY / name, 2
    while target.exists():
        target, suffix = new / HISTORY / f"{name}-{suffix}", suffix + 1
    target.mkdir(parents=True)
    for item in old.iterdir():
        if item.name in (HISTORY, ".tinylm"):
            continue
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, target / item.name)
    return target


def history(folder: Path) -> list[dict[str, Any]]:
    """The earlier results kept under ``folder/history/``: where, their plan hash, commit, scale and seeds."""
    entries = []
    root = Path(folder) / HISTORY
    for path in sorted(root.iterdir()) if root.is_dir() else ():
        try:
            record = json.loads((path / "results.json").read_text())
        except (OSError, ValueError):
            record = {}
        entries.append({"path": f"{HISTORY}/{path.name}", "plan_hash": record.get("plan_hash"),
                        "commit": record.get("commit"), "scale": record.get("scale"), "seeds": record.get("seeds")})
    return entries


def tree_state(outside: tuple[Path, ...] = ()) -> tuple[str | None, bool | None]:
    """``git_state`` of this repository's checkout."""
    return git_state(REPO, outside)


def checked_tree(scale: str, outside: tuple[Path, ...]) -> tuple[str | None, bool | None]:
    """The git state a run records; small and paper scale refuse an unknown or dirty tree (their results are
    committed, and must name the code they came from), smoke records whatever it finds."""
    commit, dirty = tree_state(outside)
    if scale != "smoke":
        if commit is None:
            raise TinyLMError(f"{scale}-scale results record their commit, and {REPO} is not a git checkout; run "
                              "from a clone of the repository (smoke scale needs none)")
        if dirty:
            raise TinyLMError(f"{scale}-scale results must come from committed code and plans, and the git tree at "
                              f"{REPO} has uncommitted changes; commit them (or run --scale smoke) first")
    return commit, dirty
