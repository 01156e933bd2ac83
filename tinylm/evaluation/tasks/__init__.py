"""Task names → lm-eval Task/Group objects: tinylm's local tasks first, then lm-eval's registry.

The local tasks are the YAMLs beside this file, shipped as package data so an installed wheel has them
(``eval/README.md`` documents them). They are indexed with ``include_defaults=False``, which takes milliseconds
(lm-eval's full index takes ~15 s and is built only when a name is not local). A name written
``lm_eval:<name>`` skips the local tasks. The data folder reaches each task's loader through the task
metadata (``data_dir``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from tinylm.errors import TinyLMError

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


def task_manager(data_dir: str | os.PathLike | None = None, include_defaults: bool = False):
    from lm_eval.tasks import TaskManager

    from tinylm.evaluation.datasets import DATA_ENV
    from tinylm.evaluation.datasets import data_dir as resolve_data_dir

    # no folder set: tasks that need no files still run; one that does names the setting when it loads
    given = data_dir or os.environ.get(DATA_ENV)
    return TaskManager(include_path=str(EVAL_DIR), include_defaults=include_defaults,
                       metadata={"data_dir": str(resolve_data_dir(data_dir))} if given else {})


def local_task_names() -> list[str]:
    return sorted(path.stem for path in EVAL_DIR.glob("*.yaml"))


def load_tasks(names: list[str], data_dir: str | os.PathLike | None = None) -> list[Any]:
    """Task/Group objects for ``names``, local names first, the rest from lm-eval's registry."""
    if not names:
        raise TinyLMError("no tasks given; pass --tasks with local names "
                          f"({', '.join(local_task_names())}) or lm-eval task names")
    local = task_manager(data_dir)
    chosen, remote = {}, []
    for name in names:
        if not name.startswith(REGISTRY_PREFIX) and name in local.all_tasks:
            chosen[name] = local
        else:
            remote.append(name.removeprefix(REGISTRY_PREFIX))
    if remote:
        registry = task_manager(data_dir, include_defaults=True)
        missing = [name for name in remote if name not in registry.all_tasks]
        if missing:
            raise TinyLMError(f"unknown task(s) {', '.join(missing)}; local tasks are {', '.join(local_task_names())}, "
                              "anything else must be an lm-eval task name (lm-eval ls tasks)")
        for name in remote:
            chosen[REGISTRY_PREFIX + name] = registry
    objects = []
    for name, manager in chosen.items():
        spec = name.removeprefix(REGISTRY_PREFIX)
        loaded = manager.load([spec])
        objects.append(loaded["groups"][spec] if spec in loaded["groups"] else loaded["tasks"][spec])
    return objects


def _score(results: dict[str, dict], task: str, metric: str) -> float | None:
    row = results.get(task, {})
    value = row.get(f"{metric},none")
    return None if value is None or value == "N/A" else 100 * float(value) if metric.startswith("acc") else float(value)


def paper_table(results: dict[str, dict]) -> str:
    """The paper's final-table layout (or the ablation average) over whatever benchmarks were evaluated.

    Accuracy is shown x100; XSum is ROUGE-1 F1 (x100). Group and overall averages are plain means of the
    benchmarks present, as the paper averages its columns; "n/a" marks a benchmark not evaluated.
    """
    lines = []
    final = {name: _score(results, task, metric) for name, (_, task, metric) in PAPER_FINAL.items()}
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
    ablation = {name: _score(results, task, metric) for name, (task, metric) in PAPER_ABLATION.items()}
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
