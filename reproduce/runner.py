"""The one runner every experiment shares: the command line as one frozen ``Options``, the output refused before
any work, timing, the judging of every finding and ``<out>/<id>/results.json`` and ``table.md``, written
atomically, with the plan they were run under and their provenance (``reproduce.plan``): small and paper scale
refuse a dirty git tree, and an earlier result under another plan moves to ``<out>/<id>/history/``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from reproduce.experiment import DEFAULT_SEEDS, SCALES, Experiment, Options, seeds_words
from reproduce.plan import check_plan_written, checked_tree, keep_history, plan, plan_hash, provenance, tree_state
from reproduce.tables import portable, shown
from reproduce.verdict import judged
from tinylm.artifacts.io import atomic_dir, check_output_dir
from tinylm.artifacts.provenance import hardware

RESULTS = Path("results")  # the committed small-scale results and REPORT.md


def default_out(scale: str) -> Path:
    """Smoke runs prove the pipeline and stay out of the committed ``results/``."""
    return Path("runs") / "smoke" if scale == "smoke" else RESULTS


def check_out(experiment: Experiment, options: Options) -> Path:
    """Refuse ``<out>/<id>`` before any work: an existing result is replaced only with --overwrite, and only when
    tinylm wrote it; small and paper scale also refuse declarations that differ from their plan file
    (``reproduce/plans/``) and a git tree with uncommitted changes outside ``<out>`` (their results must name the
    code and plan they came from)."""
    target = check_output_dir(Path(options.out) / experiment.name, options.overwrite,
                              what=f"--out ({experiment.name})")
    if options.scale != "smoke":  # a committed result promises what its committed plan file says
        check_plan_written(experiment, options.scale)
    checked_tree(options.scale, (Path(options.out),))
    return target


def run(experiment: Experiment, options: Options) -> tuple[Path, dict[str, Any]]:
    """Measure, judge and write ``<out>/<id>/``; returns the folder and the record written."""
    seeds = 1 if experiment.deterministic else options.seeds
    options = Options(**{**asdict(options), "seeds": seeds})
    target = check_out(experiment, options)
    commit, dirty = checked_tree(options.scale, (Path(options.out),))
    planned, hashed = plan(experiment, options.scale), plan_hash(experiment, options.scale)
    start = time.perf_counter()
    with atomic_dir(target, options.overwrite, what=f"--out ({experiment.name})") as folder:
        measured = experiment.measure(experiment.scales[options.scale], options, folder)
        seconds = time.perf_counter() - start
        findings = judged(experiment.findings, measured.findings, options.scale, seeds, experiment.deterministic)
        changed = keep_history(target, folder, hashed, commit)  # an earlier result is kept, not replaced
        deviation = {} if experiment.deterministic or seeds == planned["seeds"] else {
            "deviation": f"ran {seeds} seed(s); the plan says {planned['seeds']}"}
        if (after := tree_state((Path(options.out),))) != (commit, dirty):  # said, not refused: hours of work
            deviation["tree_changed_during_run"] = f"commit {after[0]}, dirty {after[1]} at the end"
        record = portable({
            "experiment": experiment.name, "title": experiment.title, "scale": options.scale,
            "seeds": "deterministic" if experiment.deterministic else seeds, "wall_seconds": round(seconds, 1),
            "hardware": hardware(), **provenance(commit, dirty, hashed), **deviation,
            **({"plan_changed": changed} if changed else {}), "table": measured.table, "tokens": measured.tokens,
            "rows": measured.rows, "findings": findings, "paper": dict(experiment.paper), "figures": measured.figures,
            "plan": planned, **measured.extra})
        (folder / "results.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
        header = (f"# {experiment.name} ({options.scale} scale, {seeds_words(experiment, seeds)}, {seconds:.0f} s "
                  f"on {hardware()}; plan {hashed}, commit {(commit or 'unknown')[:10]}{' (dirty)' if dirty else ''})"
                  "\n\n")
        (folder / "table.md").write_text(header + record["table"] + "\n")
    return target, record


def parser(experiments: tuple[str, ...], extra: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reproduce",
                                     description="Reproduce the paper's experiments; `all` runs every one.")
    parser.add_argument("experiment", choices=(*experiments, *extra))
    parser.add_argument("--scale", choices=SCALES, default="smoke")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per arm (default: 1 smoke, 3 small and paper; "
                        "at least 3 are needed for a verdict)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default: results/ for small and "
                        "paper scale; runs/smoke/ for smoke, which never overwrites the committed results)")
    parser.add_argument("--overwrite", action="store_true", help="replace results tinylm wrote before")
    parser.add_argument("--skip", default="", help="comma-separated experiments to leave out of `all`")
    parser.add_argument("--model", action="append", default=[], help="extra model dir(s) for `final`")
    parser.add_argument("--source", type=Path, default=None,
                        help="a LLaMA-format model dir to inherit from (layer_skip, layer_selection, inheritance)")
    return parser


def options_from(args: argparse.Namespace, experiment: Experiment | None = None) -> Options:
    seeds = args.seeds or (experiment.seeds if experiment else DEFAULT_SEEDS)[args.scale]
    return Options(scale=args.scale, seeds=seeds, out=args.out or default_out(args.scale), source=args.source,
                   models=tuple(args.model), overwrite=args.overwrite)
