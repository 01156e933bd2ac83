"""``results/REPORT.md``: every experiment's table (ours beside the paper's), figures, seeds, wall time, hardware,
provenance (commit, plan hash, earlier results kept under another plan) and the verdict of each declared finding:
``reproduce.verdict.across`` judges all of them together from their measurements, with Holm-adjusted p beside the
raw p over the whole report."""

from __future__ import annotations

import importlib
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

from reproduce.cache import UNITS, units_summary
from reproduce.plan import history, plan_file, plan_hash
from reproduce.verdict import RULE, across
from tinylm.artifacts.io import atomic_file

# docs/paper.md §6, in dependency order
EXPERIMENTS = ("coverage", "tokenizer", "architecture", "speed", "layer_skip", "layer_selection", "inheritance",
               "batch_lr", "forgetting", "multi_round", "ladder", "final")
OLD_RULE = "judged by the old rule (before issue 15); rerun for a verdict"


def load(name: str):
    """The declared ``Experiment`` of ``reproduce/<name>.py``."""
    return importlib.import_module(f"reproduce.{name}").EXPERIMENT


def read_records(out: Path) -> dict[str, dict]:
    """Every experiment's ``results.json`` under ``out``, in the report's order."""
    records = {}
    for name in EXPERIMENTS:
        path = Path(out) / name / "results.json"
        if path.is_file():
            records[name] = json.loads(path.read_text())
    return records


def verdicts(findings: list[dict]) -> str:
    """The verdicts of one experiment's findings, as ``across`` decided them."""
    if findings and all("verdict" not in f for f in findings):  # a result from before the one judge
        return f"{len(findings)} finding(s) {OLD_RULE}"
    return ", ".join(f.get("verdict", OLD_RULE) for f in findings) or "no finding to judge"


def _num(value: Any, digits: str = ".3g", signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return format(value, ("+" if signed else "") + digits)


def _columns(f: dict) -> tuple[str, str, str, str]:
    """A finding's effect with its interval, raw p, Holm p and detectable effect, one entry per test."""
    tests = f.get("pairs") or []
    if f.get("kind") == "threshold" and isinstance(f.get("data"), dict):
        data = f["data"]
        interval = f" [{_num(data['low'], '.4g')}, {_num(data['high'], '.4g')}]" if "low" in data else ""
        return f"{_num(data.get('value'), '.4g')}{interval} (≥ {_num(f.get('at_least'), '.4g')})", "–", "–", "–"
    effects, raws, holms, detectable = [], [], [], []
    for t in tests:
        pair = f"{t['better']} vs {t['worse']}: " if len(tests) > 1 else ""
        if "rho" in t:
            effects.append(f"ρ = {_num(t['rho'], '.3f', True)}")
        elif f.get("kind") == "equivalence":
            effects.append(f"Δ {_num(t['mean'], '.4g', True)}, 90% [{_num(t.get('low90'), '.4g', True)}, "
                           f"{_num(t.get('high90'), '.4g', True)}] vs ± {_num(f.get('margin'), '.4g')}")
        else:
            effects.append(f"{pair}Δ {_num(t['mean'], '.4g', True)} [{_num(t['low'], '.4g', True)}, "
                           f"{_num(t['high'], '.4g', True)}]")
        raws.append(_num(t.get("p")))
        holms.append(_num(t.get("holm")))
        detectable.append(_num(t.get("mde")) if "mde" in t else "–")
    return tuple("; ".join(column) or "–" for column in (effects, raws, holms, detectable))


def _provenance(record: dict) -> str:
    if "plan_hash" not in record:
        later = record.get("recorded_later") or {}
        code = f"code commit `{later['code_commit'][:10]}` (as its commit message states)" if later.get("code_commit") \
            else "code commit not recorded"
        where = f"committed in `{later['committed_in'][:10]}`, {code}" if later.get("committed_in") else \
            "no commit recorded"
        return f"Run before plans and provenance were recorded: {where}; no plan hash, dirty flag or versions."
    versions = ", ".join(f"{k} {v}" for k, v in record.get("versions", {}).items())
    dirty = {True: " (dirty tree)", False: "", None: " (dirty: unknown)"}[record.get("dirty")]
    return (f"Plan `{record['plan_hash']}`, commit `{(record.get('commit') or 'unknown')[:10]}`{dirty}, "
            f"{record.get('torch_threads', '?')} torch thread(s), {versions}.")


def current_plan(name: str, record: dict) -> str | None:
    """The hash of the experiment's committed plan at the record's scale when the record ran under another one
    (or none): its numbers are kept, and the plan it should be judged under has not been run yet. None when the
    record is under the current plan."""
    scale = record.get("scale", "small")
    if not plan_file(name, scale).is_file():
        return None
    current = plan_hash(load(name), scale)
    return None if record.get("plan_hash") == current else current


def core_seconds(record: dict) -> float:
    """What a result cost: the summed core-seconds of its units where it has them (a section with its own units,
    as inheritance's gentle cut, adds its own), else wall × threads."""
    sections = [record, *(value for value in record.values() if isinstance(value, dict))]
    if summed := [section["units"]["core_seconds"] for section in sections if isinstance(section.get("units"), dict)]:
        return sum(summed)
    return record["wall_seconds"] * int(record.get("torch_threads") or 1)


def pending_plans(records: dict[str, dict]) -> dict[str, str | None]:
    """Per experiment with a result: ``current_plan``, read once so the compute table and the sections agree."""
    return {name: current_plan(name, record) for name, record in records.items()}


def compute_rows(records: dict[str, dict], pending: dict[str, str | None]) -> list[str]:
    """The compute table: per experiment, the plan's estimate and what the committed result took, in core-hours:
    a study's summed units (several processes and sittings may have run them), else wall time × torch threads (the
    runs shared their cores, so these are upper bounds); ``pending`` is ``pending_plans(records)``."""
    rows = ["| experiment | plan estimate (core-h) | committed run (core-h) | under the current plan |", "|---|---|---|---|"]
    for name in EXPERIMENTS:
        estimate = load(name).core_hours.get("small")
        record = records.get(name)
        took = "not run" if record is None else f"{core_seconds(record) / 3600:.2f}"
        current = "–" if record is None else ("yes" if pending[name] is None else "no: rerun pending")
        rows.append(f"| {name} | {'–' if estimate is None else f'{estimate:g}'} | {took} | {current} |")
    return rows


def units_rows(out: Path) -> list[str]:
    """The long studies' finished units under ``<out>/units/`` (``reproduce.cache.study_units``): per study and
    code key, how many, their compute and the commits they ran at; a rerun resumes from them."""
    folders = sorted(p for p in (Path(out) / UNITS).glob("*") if p.is_dir())
    if not folders:
        return []
    rows = ["", f"**Study units** kept in `{UNITS}/` (each an arm or shape at a seed; a rerun of the experiment "
            "with the same code resumes from them):", "",
            "| study | units | core-h | ran at |", "|---|---|---|---|"]
    for folder in folders:
        done = units_summary({p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))})
        commits = ", ".join(f"`{c[:10]}`" for c in done["commits"])
        rows.append(f"| {folder.name} | {done['count']} | {done['core_seconds'] / 3600:.2f} | {commits} |")
    return rows


def _seeds(record: dict) -> str:
    return record["seeds"] if isinstance(record["seeds"], str) else f"{record['seeds']} seed(s)"


def tally(findings: list[dict]) -> str:
    """Verdicts counted, most common first: ``2 reproduced, 1 underpowered``."""
    if findings and all("verdict" not in f for f in findings):
        return f"{len(findings)} finding(s) {OLD_RULE}"
    counts = Counter(f.get("verdict", OLD_RULE) for f in findings)
    return ", ".join(f"{n} {verdict}" for verdict, n in counts.most_common()) or "no finding to judge"


def summary(out: Path, committed: Path | None = None) -> str:
    """What the terminal shows after a run: one line per experiment (scale, seeds, wall time, verdicts, Holm over
    the report). A smoke run's verdicts are inconclusive by design, so its lines say what ran and, beside them,
    the committed small-scale verdicts from ``committed``, marked where they ran under an earlier plan."""
    records, width = read_records(out), max(map(len, EXPERIMENTS))
    found = across(records)
    smoke = bool(records) and all(r["scale"] == "smoke" for r in records.values())
    if not smoke:
        return "\n".join(f"{name:<{width}}  not run" if (r := records.get(name)) is None else
                         f"{name:<{width}}  {r['scale']:<5}  {_seeds(r)}  {r['wall_seconds']:>6.0f} s  "
                         f"{verdicts(found[name])}" for name in EXPERIMENTS)
    small = read_records(committed) if committed is not None and Path(committed).is_dir() else {}
    small_found, small_pending = (across(small), pending_plans(small)) if small else ({}, {})
    lines = ["Smoke scale ran each experiment's whole pipeline (data, training, scoring, tables, figures, judge) on "
             "tiny models: it proves the code, not the findings, so its own verdicts are inconclusive by design.",
             f"Beside each: the committed small-scale verdicts ({committed}/REPORT.md)." if small else "", ""]
    for name in EXPERIMENTS:
        r = records.get(name)
        ran = "not run" if r is None else f"ran in {r['wall_seconds']:.0f} s ({len(found[name])} findings)"
        earlier = " (an earlier plan's; its rerun is pending)" if small_pending.get(name) is not None else ""
        kept = f"small: {tally(small_found[name])}{earlier}" if name in small_found else \
            ("small: not run" if small else "")
        lines.append(f"{name:<{width}}  {ran:<26}  {kept}".rstrip())
    return "\n".join(line for line in lines if line is not None)


def write_report(out: Path) -> Path:
    out = Path(out)
    records = read_records(out)
    found = across(records)  # every finding of the report judged together: Holm over all of them
    pending = pending_plans(records)
    lines = ["# tinylm reproduction report", "",
             "Generated by `python -m reproduce all` (or `python -m reproduce report`) from the `results.json` files "
             "beside this report; never edited by hand. Paper numbers carry their reliability tag: [P] printed, "
             "[R] official repository, [D] derived, [?] third-party notes only; [X] a claim of other published work "
             "(named in the claim), tested beside the paper's.", "",
             f"**Verdict rule.** {RULE}", "",
             "| experiment | scale | seeds | wall time | hardware | verdicts |", "|---|---|---|---|---|---|",
             *(f"| [{name}](#{name}) | not run | | | | |" if (r := records.get(name)) is None else
               f"| [{name}](#{name}) | {r['scale']} | {_seeds(r)} | {r['wall_seconds']:.0f} s | {r['hardware']} | "
               f"{verdicts(found[name])} |" for name in EXPERIMENTS),
             "", "**Compute.** Core-hours at small scale: the plan's estimate and the committed run.", "",
             *compute_rows(records, pending), *units_rows(out)]
    for name in EXPERIMENTS:
        record = records.get(name)
        title = record.get("title", name) if record else name
        lines += ["", f"<a id=\"{name}\"></a>", f"## {name}: {title}", ""]
        if record is None:
            lines.append(f"Not run yet: `python -m reproduce {name} --scale small`.")
            continue
        lines.append(f"Scale `{record['scale']}`, {_seeds(record)}, {record['wall_seconds']:.0f} s on "
                     f"{record['hardware']}.")
        lines += ["", _provenance(record)]
        if pending[name] is not None:
            lines.append(f"**Under an earlier plan.** The committed plan (`{pending[name]}`, "
                         f"`reproduce/plans/{name}.{record['scale']}.json`) has not been run yet; these numbers are "
                         "what the earlier plan measured.")
        if record.get("deviation"):
            lines.append(f"Run against its plan: {record['deviation']}.")
        if record.get("tree_changed_during_run"):
            lines.append(f"The git tree changed while it ran: {record['tree_changed_during_run']}.")
        if changed := record.get("plan_changed"):
            lines.append(f"**The plan changed** on {changed.get('on', '?')} (`{changed.get('from') or 'none'}` → "
                         f"`{changed.get('to')}`): the earlier results are kept under `{name}/{changed['moved_to']}/`.")
        for old in history(out / name):
            kind = ("An earlier run of this plan" if old["plan_hash"] == record.get("plan_hash")
                    else "Earlier results under another plan")
            lines.append(f"{kind}: `{name}/{old['path']}/` (plan "
                         f"`{old['plan_hash'] or 'none'}`, commit `{(old['commit'] or 'unknown')[:10]}`, "
                         f"{old['scale']} scale, {_seeds(old)}).")
        lines += ["", record.get("table", "").strip(), ""]
        findings = found[name]
        if findings:
            lines += ["| finding | paper tag | effect [95% interval] | raw p | Holm p | detectable | verdict | why |",
                      "|---|---|---|---|---|---|---|---|"]
            for f in findings:
                note = f" ({f['note']})" if f.get("note") else ""
                effect, raw, holm, detectable = _columns(f)
                lines.append(f"| {f['claim']}{note} | [{f.get('tag', '?')}] | {effect} | {raw} | {holm} | "
                             f"{detectable} | **{f.get('verdict', OLD_RULE)}** | {f.get('why', '')} |")
        for figure in record.get("figures", []):
            lines.append(f"\n![{name}: {Path(figure).stem}]({name}/{Path(figure).name})")
    report = out / "REPORT.md"
    with atomic_file(report) as handle:
        handle.write("\n".join(lines) + "\n")
    return report
