"""Task names → lm-eval Task/Group objects: tinylm's local tasks first, then lm-eval's registry.

The local tasks are the YAMLs beside this file, shipped as package data so an installed wheel has them
(``eval/README.md`` documents them). They are indexed with ``include_defaults=False``, which takes milliseconds
(lm-eval's full index takes seconds and is built only when a name needs it). A name written ``lm_eval:<name>``
skips the local tasks. The data folder reaches each task's loader through the task metadata (``data_dir``).
A local task whose files are absent but whose benchmark lm-eval also ships (``HUB_TASKS``) becomes lm-eval's
task, which downloads the data from the Hugging Face hub; one line says so.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinylm.errors import TinyLMError
from tinylm.evaluation.datasets import DATA_ENV, has_benchmark
from tinylm.evaluation.datasets import data_dir as resolve_data_dir

if TYPE_CHECKING:
    from lm_eval.tasks import TaskManager

EVAL_DIR = Path(__file__).resolve().parent  # the task YAMLs live beside this module
REGISTRY_PREFIX = "lm_eval:"

# The paper's final table (docs/paper.md §5): benchmark → (group, task, metric reported in the table).
PAPER_FINAL = {
    "C-Eval": ("Examination", "ceval", "acc"),
    "CMMLU": ("Examination", "cmmlu", "acc"),
    "MMLU": ("Examination", "mmlu", "acc"),
    "AGI-Eval": ("Examination", "agieval", "acc"),
    "BoolQ": ("Knowledge", "boolq", "acc"),
    "AX-b": ("Reasoning", "axb", "acc"),
    "PIQA": ("Reasoning", "piqa", "acc"),
    "EPRSTMT": ("Understanding", "eprstmt", "acc"),
    "XSum": ("Understanding", "xsum", "rouge1"),
    "C3": ("Understanding", "c3", "acc"),
}
PAPER_ABLATION = {"ARC-E": ("arc_easy", "acc"), "HellaSwag": ("hellaswag", "acc"), "C3": ("c3", "acc")}
ABLATION_TASKS = [task for task, _ in PAPER_ABLATION.values()]  # the paper's ablation trio, as task names

# Local task → lm-eval's task or group of the same benchmark, which reads it from the Hugging Face hub. ``load_tasks``
# takes it when the benchmark folder (named like the task) is absent. Left out because lm-eval ships no such
# benchmark: axb, c3, c3_test, eprstmt, eprstmt_dev, agieval_mcq and agieval_cloze (the two halves of agieval); and
# xsum, whose lm-eval namesake is a unitxt card (another package, prompt, split and metric).
HUB_TASKS = {"arc_easy": "arc_easy", "hellaswag": "hellaswag", "piqa": "piqa", "boolq": "boolq", "mmlu": "mmlu",
             "ceval": "ceval-valid", "cmmlu": "cmmlu", "agieval": "agieval"}


def task_manager(data_dir: str | os.PathLike | None = None) -> TaskManager:
    """tinylm's local tasks only, with the benchmark folder (when one is set) in every task's metadata."""
    from lm_eval.tasks import TaskManager  # here, not at the top: lm-eval's task package is only needed to load tasks

    # no folder set: tasks that need no files still run; one that does names the setting when it loads
    given = data_dir or os.environ.get(DATA_ENV)
    return TaskManager(include_path=str(EVAL_DIR), include_defaults=False,
                       metadata={"data_dir": str(resolve_data_dir(data_dir))} if given else {})


@functools.cache
def registry() -> TaskManager:
    """lm-eval's own tasks, indexed once per process (seconds). Without tinylm's folder: its YAMLs would shadow
    lm-eval's tasks of the same name, and ``lm_eval:arc_easy`` would load tinylm's."""
    from lm_eval.tasks import TaskManager  # here, not at the top: lm-eval's task package is only needed to load tasks

    return TaskManager(include_defaults=True)


def local_task_names() -> list[str]:
    return sorted(path.stem for path in EVAL_DIR.glob("*.yaml"))


def load_tasks(names: list[str], data_dir: str | os.PathLike | None = None) -> list[Any]:
    """Task/Group objects for ``names``: local names first, the rest from lm-eval's registry. A local task in
    ``HUB_TASKS`` whose folder the benchmark folder lacks (or with no folder set) is lm-eval's hub-backed task."""
    if not names:
        raise TinyLMError("no tasks given; pass --tasks with local names "
                          f"({', '.join(local_task_names())}) or lm-eval task names")
    local = task_manager(data_dir)
    plan: dict[tuple[str, bool], str | None] = {}  # (name, from lm-eval's registry) → the local task it stands in for
    for name in names:
        if name.startswith(REGISTRY_PREFIX) or name not in local.all_tasks:
            plan.setdefault((name.removeprefix(REGISTRY_PREFIX), True), None)
        elif name in HUB_TASKS and not has_benchmark(name, data_dir):
            plan.setdefault((HUB_TASKS[name], True), name)
        else:
            plan.setdefault((name, False), None)
    missing = [name for name, hub in plan if hub and name not in registry().all_tasks]
    if missing:
        raise TinyLMError(f"unknown task(s) {', '.join(missing)}; local tasks are {', '.join(local_task_names())}, "
                          "anything else must be an lm-eval task name (lm-eval ls tasks)")
    objects = []
    for (name, hub), stands_in_for in plan.items():
        if stands_in_for:
            _announce(hub_note(stands_in_for, data_dir))
        loaded = _load_hub(name, stands_in_for) if hub else local.load([name])
        objects.append(loaded["groups"][name] if name in loaded["groups"] else loaded["tasks"][name])
    return objects


def hub_note(name: str, data_dir: str | os.PathLike | None = None) -> str:
    """The line that says a local task ``name`` (a key of ``HUB_TASKS``) runs as lm-eval's hub-backed task."""
    try:
        where = f"no {name} folder in {resolve_data_dir(data_dir)}"
    except TinyLMError:
        where = "no local files"
    return (f"tinylm: {name}: {where} (set {DATA_ENV} or --data_dir); "
            f"using lm-eval's hub-backed task '{HUB_TASKS[name]}'")


@functools.cache
def _announce(line: str) -> None:
    # once per process: a training callback, `tinylm pro` and reproduce load the same tasks again and again
    print(line, flush=True)


def _load_hub(name: str, stands_in_for: str | None) -> dict[str, Any]:
    """lm-eval's task ``name``; its data comes from the Hugging Face hub (or the datasets cache)."""
    try:
        return registry().load([name])
    except OSError as err:  # offline: datasets raises ConnectionError; a missing or gated dataset, other OSErrors
        reason = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"
        fix = (f"set {DATA_ENV} or --data_dir to the folder of the benchmark files, or go online" if stands_in_for
               else "go online once (the Hugging Face datasets cache then serves offline runs)")
        raise TinyLMError(f"{stands_in_for or name}: lm-eval's hub-backed task '{name}' could not load its data "
                          f"({reason}); {fix}") from None


def score_of(results: dict[str, dict], task: str, metric: str) -> float | None:
    row = results.get(task) or results.get(HUB_TASKS.get(task, task), {})  # lm-eval's name where it stood in
    value = row.get(f"{metric},none")
    return None if value is None or value == "N/A" else 100 * float(value) if metric.startswith("acc") else float(value)


def paper_table(results: dict[str, dict]) -> str:
    """The paper's final-table layout (or the ablation average) over whatever benchmarks were evaluated.

    Accuracy is shown x100; XSum is ROUGE-1 F1 (x100). Group and overall averages are plain means of the
    benchmarks present, as the paper averages its columns; "n/a" marks a benchmark not evaluated.
    """
    lines = []
    final = {name: score_of(results, task, metric) for name, (_, task, metric) in PAPER_FINAL.items()}
    if any(v is not None for v in final.values()):
        lines += [_row(["group", "benchmark", "score"]), _row(["---"] * 3)]
        groups: dict[str, list[float]] = {}
        for name, (group, _, _) in PAPER_FINAL.items():
            lines.append(_row([group, name, _fmt(final[name])]))
            if final[name] is not None:
                groups.setdefault(group, []).append(final[name])
        for group, values in groups.items():
            lines.append(_row([group, "average", _fmt(sum(values) / len(values))]))
        present = [v for v in final.values() if v is not None]
        lines.append(_row(["all", f"average of {len(present)}/10", _fmt(sum(present) / len(present))]))
    ablation = {name: score_of(results, task, metric) for name, (task, metric) in PAPER_ABLATION.items()}
    if all(v is not None for v in ablation.values()):
        lines += ["", _row(list(ablation) + ["Avg."]), _row(["---"] * (len(ablation) + 1)),
                  _row([_fmt(v) for v in ablation.values()] + [_fmt(sum(ablation.values()) / len(ablation))])]
    return "\n".join(lines)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


# lm-eval warns once per task that a custom_dataset takes --metadata kwargs; every local task has one
logging.getLogger("lm_eval.api.task").addFilter(lambda record: "Custom kwargs" not in record.getMessage())
