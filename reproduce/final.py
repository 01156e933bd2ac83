"""The final comparison (docs/paper.md §5): the paper's table with our rows added — the ladder's first and last models
(every seed), any ``--model DIR``, and a pretrained reference (SmolLM2-135M; the tiny stand-in at smoke scale) —
on the ``paper_final`` suite: the same seeded sample of each benchmark for every model (500 items for the reference
at small scale, 200 for ours, everything at paper scale). The paper used OpenCompass (shots unknown); ours is
zero-shot lm-eval with the prompts cited in the task files.
"""

from __future__ import annotations

import functools
import math
import random
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from reproduce import pretrained
from reproduce.cache import read_json, study_units, units_summary
from reproduce.experiment import Experiment, Measured, Options
from reproduce.tables import fmt, located, markdown, shown
from reproduce.verdict import Finding
from tinylm.artifacts.cache import cache_key
from tinylm.artifacts.model_dir import model_fingerprint
from tinylm.errors import TinyLMError
from tinylm.evaluation.command import run_tasks
from tinylm.evaluation.datasets import has_benchmark
from tinylm.evaluation.tasks import PAPER_FINAL, load_tasks, score_of

# the code that computes a cached benchmark score: a change to it rescores (cache keys carry its version)
SCORING_CODE = ["tinylm.evaluation.adapter", "tinylm.evaluation.datasets", "tinylm.evaluation.command",
                "tinylm.model.transformer", "tinylm.model.generate"]

BENCHMARKS = ("C-Eval", "CMMLU", "MMLU", "AGI-Eval", "BoolQ", "AX-b", "PIQA", "EPRSTMT", "XSum", "C3")
# [P] the ICML version's table, as printed: the benchmark scores in BENCHMARKS order, then the average
PAPER_TABLE = """
MobileLLaMA-1.4B     23.93 25.10 25.05 18.53 58.75 45.20 71.27 46.25 18.19 37.42 36.97
Sheared-LLaMA-1.3B   24.28 25.10 25.77 18.01 62.39 43.57 72.91 46.25 16.44 35.45 37.02
TinyLLaMA-1.1B       27.85 24.64 25.75 18.54 56.06 45.47 70.62 46.25 20.15 36.71 37.20
MobileLLaMA-2.7B     23.53 25.55 26.63 18.43 54.74 55.80 72.85 46.25 16.96 36.11 37.69
Chinese-LLaMA2-1.3B  28.70 24.78 24.55 19.40 56.79 47.46 56.91 72.50  8.90 43.12 38.31
RWKV-5-1.5B          25.92 25.14 25.66 19.01 62.29 54.05 71.22 46.25 20.67 49.15 39.94
Phi-1.3B             27.78 25.85 44.32 23.42 73.52 44.20 76.99 50.00 14.90 38.96 41.99
PanGu-π-1B           36.85 35.90 35.96 30.77 58.44 43.48 61.92 55.62 15.92 49.21 42.41
Open-LLaMA-3B        27.50 25.42 27.09 20.68 60.58 52.72 77.09 82.50 19.75 43.23 43.66
Phi2-2.7B            31.86 32.18 58.49 28.51 77.40 43.57 78.89 46.25 13.66 40.11 45.09
PanGu-π-1B Pro       46.50 46.56 50.38 41.58 63.43 53.99 64.96 74.38 18.40 52.66 51.28
Qwen-1.8B            53.60 52.12 46.43 35.83 64.31 57.79 73.83 88.12 20.03 58.30 55.04
PanGu-π-1.5B Pro     52.39 48.51 62.54 44.89 70.61 67.93 79.55 86.12 24.61 69.24 60.64
"""
# a model's name may hold spaces: its scores are the last len(BENCHMARKS) + 1 fields of its line
PAPER_ROWS = {name: tuple(map(float, scores)) for name, *scores in
              (line.rsplit(maxsplit=len(BENCHMARKS) + 1) for line in PAPER_TABLE.strip().splitlines())}


@dataclass(frozen=True)
class Scale:
    """How many items of each benchmark are scored, and in which dtype: nothing is trained here."""

    items: int | None  # for tinylm's rows (None: the whole benchmark)
    reference_items: int | None  # for the pretrained reference row
    reference_dtype: str
    reference_task_dtypes: Mapping[str, str] = field(default_factory=dict)  # another dtype for some tasks, by name


# Items per benchmark: a fixed seeded sample of each benchmark (the full set where smaller), the same items for every
# model, a smaller sample being a prefix of a larger one's draw. Plan v3 scores the small-scale reference row in
# float32: plan v1 used bfloat16, which CPUs without bf16 instructions (this one, the last one) emulate: a
# 1,600-token forward took 15.2 s against 4.3 s in float32 at one thread; plan v2 kept it and never ran.
SCALES = {"smoke": Scale(items=4, reference_items=2, reference_dtype="float32"),
          "small": Scale(items=200, reference_items=500, reference_dtype="float32"),
          "paper": Scale(items=None, reference_items=None, reference_dtype="bfloat16")}
# a uniform guess; AGI-Eval mixes 4- and 5-way questions with cloze items (about 20); XSum's ROUGE has none
CHANCE = {"C-Eval": 25.0, "CMMLU": 25.0, "MMLU": 25.0, "AGI-Eval": 20.0, "BoolQ": 50.0, "AX-b": 50.0, "PIQA": 50.0,
          "EPRSTMT": 50.0, "C3": 25.0}
LEAVES = {"agieval": ("agieval_mcq", "agieval_cloze")}  # benchmarks lm-eval scores as several tasks
FINDINGS = (
    Finding("recipe_beats_base", "the full recipe (+rounds) beats the baseline on the ten-benchmark average", "P",
            "benchmark average (%)", ("tinylm ladder +rounds", "tinylm ladder base"), lower_is_better=False,
            smallest_effect=1.0),
)


def benchmark_sample(task: str, items: int | None) -> dict[str, list[int]]:
    """The document indices scored per lm-eval task of one benchmark: a seeded draw of ``items`` (None: all),
    split over a benchmark's tasks by their sizes; the draw's order is fixed, so fewer items are a prefix."""
    leaves = LEAVES.get(task, (task,))
    sizes = {leaf: len(obj.eval_docs) for leaf, obj in zip(leaves, load_tasks(list(leaves)))}
    total = sum(sizes.values())
    picked = {}
    for leaf, size in sizes.items():
        order = random.Random(leaf).sample(range(size), size)
        picked[leaf] = sorted(order[:size if items is None else min(size, math.ceil(items * size / total))])
    return picked


def benchmark_score(lm, task: str, metric: str, sample: dict[str, list[int]]) -> float | None:
    """One benchmark's score on its sample (accuracy ×100, XSum ROUGE-1 ×100), tasks weighted by items scored."""
    results = run_tasks(lm, list(sample), samples=sample, bootstrap_iters=0)["results"]
    values = [(score_of(results, leaf, metric), len(indices)) for leaf, indices in sample.items()]
    if any(value is None for value, _ in values):
        return None
    return sum(value * n for value, n in values) / sum(n for _, n in values)


def scores(model_dir: str, items: int | None, out: Path, dtype: str = "float32",
           task_dtypes: Mapping[str, str] | None = None) -> tuple[dict[str, float | None], dict[str, dict]]:
    """The ten benchmarks on ``items`` items each and their plain average, as the paper averages; plus the score
    records. Each benchmark is a study unit kept under ``<out>/units/`` as it finishes (keyed by the model's
    content, items, dtype and the scoring code), so a run cut short resumes at the next benchmark, on any clone
    once committed: the reference row takes hours on a CPU. ``task_dtypes``: a dtype for some benchmarks."""
    from tinylm.evaluation.adapter import TinyLMEval  # imports lm_eval (heavy): only when a model is scored

    if missing := [task for _, task, _ in PAPER_FINAL.values() if not has_benchmark(task)]:
        # the seeded item samples index the local files; lm-eval's hub fallback would score other items
        raise TinyLMError(f"final scores the local benchmark files and {', '.join(missing)} are missing; set "
                          "TINYLM_EVAL_DATA to the folder that holds them (see docs/evaluation.md)")
    fingerprint, models = model_fingerprint(model_dir), {}

    def score(task: str, metric: str, task_dtype: str) -> dict[str, Any]:
        if task_dtype not in models:
            models[task_dtype] = TinyLMEval(model_dir, batch_size=16, device="cpu", dtype=task_dtype)
        sample = benchmark_sample(task, items)
        return {"score": benchmark_score(models[task_dtype], task, metric, sample),
                "items": sum(map(len, sample.values())), "dtype": task_dtype}

    jobs = {}
    for _, task, metric in PAPER_FINAL.values():
        task_dtype = (task_dtypes or {}).get(task, dtype)
        jobs[task] = functools.partial(score, task, metric, task_dtype)
    key = cache_key(fingerprint, items, dtype, dict(task_dtypes or {}), modules=SCORING_CODE)
    done = study_units(out, "final-scores", key, jobs)
    row: dict[str, float | None] = {name: done[task]["score"] for name, (_, task, _) in PAPER_FINAL.items()}
    present = [v for v in row.values() if v is not None]
    row["Avg."] = statistics.fmean(present) if present else None
    return row, done


def near_chance(row: dict[str, float | None], items: int) -> list[str]:
    """The benchmarks where a score is within two binomial standard errors of a uniform guess on ``items`` items."""
    return [name for name, chance in CHANCE.items() if row.get(name) is not None
            and abs(row[name] - chance) <= 2 * math.sqrt(chance * (100 - chance) / items)]


def ladder_models(rows: Mapping[str, dict[str, Any]]) -> tuple[dict[str, list[str]], list[str]]:
    """The ladder's first and last step models on this machine (the rows of its results.json, by step), as
    ``{row name: model dirs}``, and the dirs its results name that are gone."""
    found: dict[str, list[str]] = {}
    gone: list[str] = []
    for step in ("base", "+rounds"):
        dirs = [str(located(d)) for d in rows.get(step, {}).get("model_dirs", [])]
        gone += [d for d in dirs if not (Path(d) / "config.json").is_file()]
        if dirs := [d for d in dirs if (Path(d) / "config.json").is_file()]:
            found[f"tinylm ladder {step}"] = dirs
    return found, gone


def measure(setting: Scale, options: Options, folder: Path) -> Measured:
    limit, reference_limit = setting.items, setting.reference_items
    reference = {"SmolLM2-135M-Instruct (reference)" if options.scale != "smoke" else "tiny random-init (reference)":
                 str(pretrained.source(options.scale))}
    ours: dict[str, list[str]] = {f"tinylm {Path(m).name}": [m] for m in options.models}
    ladder = {row["step"]: row for row in read_json(Path(options.out) / "ladder" / "results.json", {"rows": []})["rows"]}
    found, gone = ladder_models(ladder)
    ours.update(found)
    columns, note = (*BENCHMARKS, "Avg."), ""
    units: dict[str, dict] = {}

    def scored(model_dir: str, items: int | None, *dtypes: Any) -> dict[str, float | None]:
        row, done = scores(model_dir, items, Path(options.out), *dtypes)
        units.update({f"{model_dir}:{task}": record for task, record in done.items()})
        return row

    try:
        measured = {name: [scored(d, reference_limit, setting.reference_dtype, setting.reference_task_dtypes)]
                    for name, d in reference.items()}
        measured.update({name: [scored(d, limit) for d in dirs] for name, dirs in ours.items()})
    except TinyLMError as err:  # the benchmark files live outside the package (see eval/README.md)
        print(f"final: benchmarks unavailable ({err})")
        measured = {name: [dict.fromkeys(columns)] for name in reference}
        measured.update({name: [dict.fromkeys(columns) for _ in dirs] for name, dirs in ours.items()})
        note = f"Benchmark files not found, so tinylm rows are n/a: {err}"
    if gone:
        note += (f" The ladder's model dirs are no longer on this machine ({len(gone)} missing, e.g. "
                 f"{shown(gone[0])}): rerun `python -m reproduce ladder` for their rows.")
    table_rows = [{"model": name, **{c: statistics.fmean(v) if (v := [r[c] for r in runs if r[c] is not None]) else None
                                     for c in columns}, "per_seed_avg": [r["Avg."] for r in runs]}
                  for name, runs in measured.items()]
    sizes = {name: reference_limit if name in reference else limit for name in measured}
    chance_lines = [f"- {r['model']}: " + (", ".join(near) if (near := near_chance(r, sizes[r["model"]] or 500))
                                           else "none") for r in table_rows]
    lines = [f"Paper rows [P] (OpenCompass, ICML version); our rows: zero-shot lm-eval on a fixed seeded sample of "
             f"each benchmark ({'all' if limit is None else limit} items for tinylm rows, mean over the ladder's "
             f"seeds; {'all' if reference_limit is None else reference_limit} for the reference, in "
             f"{setting.reference_dtype}" + "".join(f", {task} in {dtype}" for task, dtype in
                                                      setting.reference_task_dtypes.items())
             + "; the whole set where smaller; tinylm's items are among the reference's). "
             "XSum is ROUGE-1 F1 ×100 (the paper's ROUGE variant is not stated).", "",
             *markdown(("model", *columns), [*((f"{name} [P]", *(f"{v:.2f}" for v in values))
                                              for name, values in PAPER_ROWS.items()),
                                            *((f"**{r['model']}**", *(fmt(r[c]) for c in columns))
                                              for r in table_rows)]), "",
             "Near chance (within two binomial standard errors of a uniform guess: 25 for C-Eval, CMMLU, MMLU and "
             "C3, about 20 for AGI-Eval, 50 for BoolQ, AX-b, PIQA and EPRSTMT):", *chance_lines, "",
             "Why a row sits there: a uniform guess is what a model scores without the language or knowledge a "
             "benchmark asks for. SmolLM2 was pretrained on English text and code, so the Chinese benchmarks "
             "(C-Eval, CMMLU, EPRSTMT, C3, much of AGI-Eval) ask for a language it barely saw; "
             + (f"the tinylm ladder models have about {trained['params'] / 1e6:.2f}M parameters and saw "
                f"{trained['tokens']:,} training tokens. " if (trained := ladder.get("base")) else "")
             + "A two-way benchmark can also sit away from 50 with no skill by answering one way every time "
             "(BoolQ's items are 62% yes).",
             *(["", note] if note else [])]
    arms = {row["model"]: [v for v in row["per_seed_avg"] if v is not None] for row in table_rows}
    return Measured("\n".join(lines), {"recipe_beats_base": {arm: arms.get(arm, []) for arm in FINDINGS[0].arms}},
                    rows=table_rows, extra={"limit": limit, "reference_limit": reference_limit, "reference": reference,
                                            "units": units_summary(units)})


EXPERIMENT = Experiment("final", "Final comparison table (§5)", SCALES, FINDINGS, measure,
                        paper={"rows": PAPER_ROWS, "tag": "P"},
                        core_hours={"small": 5.0})  # nearly all of it the reference row, estimated from a forward's speed
