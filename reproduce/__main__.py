"""``python -m reproduce <experiment>|all|report|plan [--scale smoke|small|paper] [--seeds N] [--out DIR]
[--overwrite]``.

``all`` runs every experiment in dependency order (later ones reuse cached tokenizers and models), then writes
``<out>/REPORT.md``; ``report`` only rewrites it from the ``results.json`` files there; ``plan`` writes every
experiment's plan at ``--scale`` to ``reproduce/plans/`` (commit it before a small or paper run: they refuse
declarations that differ from it). ``<out>`` defaults to
``results/`` (small, paper, report) and ``runs/smoke/`` (smoke: never the committed results).
"""

from __future__ import annotations

import sys
import traceback

from reproduce.experiment import seeds_words
from reproduce.plan import write_plan
from reproduce.report import EXPERIMENTS, load, summary, write_report
from reproduce.runner import RESULTS, check_out, options_from, parser, run
from tinylm.errors import TinyLMError


def main(argv: list[str] | None = None) -> int:
    args = parser(EXPERIMENTS, ("all", "report", "plan")).parse_args(argv)
    if args.experiment == "plan":
        for name in EXPERIMENTS:
            print(f"plan: {write_plan(load(name), args.scale)}")
        return 0
    if args.experiment == "report":  # rewrites the committed report unless --out names another folder
        out = args.out or RESULTS
        if not list(out.glob("*/results.json")):
            print(f"python -m reproduce: error: no results.json under {out}/; run `python -m reproduce <experiment>` "
                  "first or give --out", file=sys.stderr)
            return 2
        print(f"report: {write_report(out)}")
        return 0
    names = [e for e in EXPERIMENTS if e not in args.skip.split(",")] if args.experiment == "all" else [args.experiment]
    experiments = [load(name) for name in names]
    try:  # every output is refused or accepted before an hour of work starts
        for experiment in experiments:
            check_out(experiment, options_from(args, experiment))
    except TinyLMError as err:
        print(f"python -m reproduce: error: {err}", file=sys.stderr)
        return 2
    failed = []
    for index, experiment in enumerate(experiments, 1):
        options = options_from(args, experiment)
        print(f"[{index}/{len(names)}] {experiment.name} ({options.scale}, {seeds_words(experiment, options.seeds)})"
              " ...", flush=True)
        try:
            _, record = run(experiment, options)
            print(f"[{index}/{len(names)}] {experiment.name} done in {record['wall_seconds']:.0f} s", flush=True)
        except Exception as err:  # noqa: BLE001 — one broken experiment must not hide the others' results
            failed.append(experiment.name)
            print(f"[{index}/{len(names)}] {experiment.name} FAILED: {type(err).__name__}: {err}", file=sys.stderr,
                  flush=True)
            traceback.print_exc()
    out = options_from(args).out
    if len(names) == 1 and not failed:
        print((out / names[0] / "table.md").read_text())
    report = write_report(out)
    print(f"\n{summary(out, committed=RESULTS if out.resolve() != RESULTS.resolve() else None)}\n\nreport: {report}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
