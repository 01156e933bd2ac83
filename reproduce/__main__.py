"""``python -m reproduce <experiment> [--scale smoke|small|paper] [--seeds N] [--out DIR]`` or ``... all``.

``all`` runs every experiment in dependency order (tokenizers and source models are cached, so later experiments
reuse what earlier ones built), then writes ``<out>/REPORT.md``; ``report`` only rewrites ``<out>/REPORT.md`` from
the ``results.json`` files already there (after experiments were run one by one). ``<out>`` is ``results/`` for
small and paper scale (and for ``report``) and ``runs/smoke/`` for smoke scale, so a smoke run never overwrites the
committed results.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path

from reproduce.common import DEFAULT_SEEDS, OUT_HELP, RESULTS, SCALES, default_out, write_results
from reproduce.report import summary, write_report

# PAPER.md §6, in dependency order
EXPERIMENTS = ("coverage", "tokenizer", "architecture", "speed", "layer_skip", "layer_selection", "inheritance",
               "batch_lr", "forgetting", "multi_round", "ladder", "final")


def run_one(name: str, scale: str, seeds: int, out: Path, models: tuple[str, ...] = ()) -> float:
    module = importlib.import_module(f"reproduce.{name}")
    start = time.perf_counter()
    result = module.run(scale, seeds, out, models) if name == "final" else module.run(scale, seeds, out)
    seconds = time.perf_counter() - start
    write_results(out, name, result, scale, seeds, seconds)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=(*EXPERIMENTS, "all", "report"))
    parser.add_argument("--scale", choices=SCALES, default="smoke")
    parser.add_argument("--seeds", type=int, default=None,
                        help="seeds per setting (default: 1 smoke, 2 small, 3 paper)")
    parser.add_argument("--out", type=Path, default=None, help=OUT_HELP)
    parser.add_argument("--skip", default="", help="comma-separated experiments to leave out of `all`")
    parser.add_argument("--model", action="append", default=[], help="extra model dir(s) for `final`")
    parser.add_argument("--source", type=Path, default=None,
                        help="a LLaMA-format model dir to inherit from (layer_skip, layer_selection, inheritance)")
    args = parser.parse_args(argv)
    seeds = args.seeds or DEFAULT_SEEDS[args.scale]
    if args.experiment == "report":  # rewrites the committed report unless --out names another folder
        out = args.out or RESULTS
        if not list(out.glob("*/results.json")):
            print(f"python -m reproduce: error: no results.json under {out}/; run `python -m reproduce <experiment>` "
                  "first or give --out", file=sys.stderr)
            return 2
        print(f"report: {write_report(out)}")
        return 0
    args.out = args.out or default_out(args.scale)
    if args.source is not None:
        importlib.import_module("reproduce.inheritance").SOURCE_DIR = args.source
    names = [e for e in EXPERIMENTS if e not in args.skip.split(",")] if args.experiment == "all" else [args.experiment]
    failed = []
    for index, name in enumerate(names, 1):
        print(f"[{index}/{len(names)}] {name} ({args.scale}, {seeds} seed(s)) ...", flush=True)
        try:
            seconds = run_one(name, args.scale, seeds, args.out, tuple(args.model))
            print(f"[{index}/{len(names)}] {name} done in {seconds:.0f} s", flush=True)
        except Exception as err:  # noqa: BLE001 — one broken experiment must not hide the others' results
            failed.append(name)
            print(f"[{index}/{len(names)}] {name} FAILED: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
            traceback.print_exc()
    report = write_report(args.out)
    print(f"\n{summary(args.out)}\n\nreport: {report}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
