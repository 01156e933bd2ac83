"""``tinylm eval``: lm-eval's ``simple_evaluate`` on a model dir, over local and registry tasks."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tinylm.artifacts.io import atomic_file, check_output_file, stamp
from tinylm.errors import TinyLMError
from tinylm.evaluation.tasks import load_tasks, paper_table, task_manager


def run_tasks(lm: Any, tasks: list[str], num_fewshot: int | None = None, limit: float | None = None,
              data_dir: str | None = None, seed: int = 1234, bootstrap_iters: int = 100_000,
              samples: dict[str, list[int]] | None = None) -> dict:
    """Evaluate an lm-eval ``LM`` on task names (local first, then lm-eval's; see ``load_tasks`` for when a local
    task without files runs as lm-eval's hub-backed one); returns lm-eval's result dict.
    ``samples``: the document indices to score per task (instead of ``limit``'s first n)."""
    from lm_eval import simple_evaluate  # heavy (~2 s): imported when a run evaluates, not for `tinylm --help`

    objects = load_tasks(tasks, data_dir)
    return simple_evaluate(model=lm, tasks=objects, num_fewshot=num_fewshot, limit=limit, samples=samples,
                           log_samples=False,
                           task_manager=task_manager(data_dir), bootstrap_iters=bootstrap_iters,
                           random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                           fewshot_random_seed=seed)


def markdown(results: dict) -> str:
    """lm-eval's tables plus the paper's layout of whatever paper benchmarks are present."""
    from lm_eval.utils import make_table  # heavy: see run_tasks

    parts = [make_table(results)]
    if results.get("groups"):
        parts.append(make_table(results, "groups"))
    table = paper_table(results["results"])
    if table:
        parts.append("Paper layout (accuracy x100; XSum ROUGE-1 F1 x100):\n\n" + table)
    return "\n".join(parts)


def evaluate(
    model: str,
    tasks: str | list[str],
    num_fewshot: int | None = None,
    limit: float | None = None,
    batch_size: int = 16,
    output: str | None = None,
    data_dir: str | None = None,
    device: str | None = None,
    add_bos_token: bool | None = None,
    seed: int = 1234,
    overwrite: bool = False,
) -> dict:
    """Evaluate a model dir on benchmarks with EleutherAI lm-evaluation-harness.

    Args:
        model: a model dir (Hugging Face LLaMA layout, as tinylm writes it).
        tasks: comma-separated task or group names. tinylm's local tasks (eval/*.yaml: arc_easy, hellaswag,
            c3, ceval, ..., groups paper_ablation and paper_final) come first, then lm-eval's registry;
            ``lm_eval:<name>`` forces lm-eval's task of that name. A local task without its files that lm-eval
            also ships (arc_easy, hellaswag, piqa, boolq, mmlu, ceval, cmmlu, agieval) runs as lm-eval's task,
            which downloads its data from the Hugging Face hub; a line says so.
        num_fewshot: few-shot examples per prompt (default: each task's own, 0 for the local tasks).
        limit: evaluate only the first N documents of each task (a fraction if below 1).
        batch_size: sequences per forward pass.
        output: write lm-eval's results to this JSON file and the tables to the same name with .md.
        data_dir: folder of the offline benchmark files (default: $TINYLM_EVAL_DATA).
        device: cpu, cuda, cuda:1, ... (default: cuda when available).
        add_bos_token: start every context with BOS; default: the tokenizer's own setting, as lm-eval's hf
            backend does (our SentencePiece tokenizers add BOS, SmolLM2's byte-level BPE does not).
        seed: seed of lm-eval's few-shot sampling.
        overwrite: replace an existing --output (and its .md) that tinylm eval wrote; a user's file never is.
    """
    from lm_eval.utils import handle_non_serializable  # heavy: see run_tasks

    from tinylm.evaluation.adapter import TinyLMEval  # subclasses lm_eval's TemplateLM: heavy, as above

    names = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if t.strip()]
    check_settings(model, names, num_fewshot, limit, batch_size, device)
    if output:  # refused now, not after an hour of evaluation; both files under the same rules
        inputs = [model, data_dir]
        check_output_file(output, overwrite, "--output", inputs, stamped=True)
        check_output_file(Path(output).with_suffix(".md"), overwrite, "--output (its .md table)", inputs, stamped=True)
    start = time.time()
    lm = TinyLMEval(model, batch_size=batch_size, device=device, add_bos_token=add_bos_token)
    try:
        results = run_tasks(lm, names, num_fewshot=num_fewshot, limit=limit, data_dir=data_dir, seed=seed)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TinyLMError(f"benchmark file {_failing_file(err) or 'under --data_dir'} is truncated or not UTF-8 "
                          f"JSON ({err}); re-copy it (the folder's SHA256SUMS lists the good files)") from None
    table = markdown(results)
    print(table)
    if output:
        record = {"note": stamp("eval"), "model": str(Path(model).resolve()), "tasks": names, "num_fewshot": num_fewshot, "limit": limit,
                  "batch_size": batch_size, "add_bos_token": add_bos_token, "seconds": round(time.time() - start, 1),
                  **{key: results[key] for key in ("results", "groups", "group_subtasks", "n-shot", "n-samples",
                                                    "versions", "higher_is_better", "configs") if key in results}}
        with atomic_file(output) as handle:
            handle.write(json.dumps(record, indent=2, default=handle_non_serializable, ensure_ascii=False) + "\n")
        with atomic_file(Path(output).with_suffix(".md")) as handle:
            handle.write(f"<!-- {stamp('eval')} -->\n# {Path(model).name}: {', '.join(names)}\n\n{table}\n")
        print(f"tinylm: wrote {output} and {Path(output).with_suffix('.md')}")
    return results


def check_settings(model: str, tasks: list[str], num_fewshot: int | None, limit: float | None, batch_size: int,
                   device: str | None) -> None:
    """Refuse bad evaluation settings before anything is loaded."""
    if not str(model).startswith("builtin:") and not Path(model).is_dir():  # builtin: resolved on load
        raise TinyLMError(f"model dir {model} does not exist; give the folder tinylm fit or tinylm inherit wrote")
    if not tasks:
        raise TinyLMError("--tasks is empty; give task names such as arc_easy,c3")
    if limit is not None and not limit > 0:
        raise TinyLMError(f"--limit {limit} must be positive: a number of documents, or a fraction below 1")
    if num_fewshot is not None and num_fewshot < 0:
        raise TinyLMError(f"--num_fewshot {num_fewshot} must be 0 or more")
    if batch_size < 1:
        raise TinyLMError(f"--batch_size {batch_size} must be at least 1")
    if device is not None:
        import torch

        try:
            kind = torch.device(device).type
        except RuntimeError:
            raise TinyLMError(f"--device {device!r} is not a device; use cpu, cuda or cuda:N") from None
        if kind == "cuda" and not torch.cuda.is_available():
            raise TinyLMError(f"--device {device}: this machine has no CUDA GPU (or torch was built without CUDA); "
                              "use --device cpu")
        if kind == "cuda" and torch.device(device).index is not None and \
                torch.device(device).index >= torch.cuda.device_count():
            raise TinyLMError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")


def _failing_file(err: BaseException) -> str | None:
    """The benchmark file a JSON error came from: the ``path`` being read in the innermost frame that has one."""
    traceback, found = err.__traceback__, None
    while traceback is not None:
        path = traceback.tb_frame.f_locals.get("path")
        if isinstance(path, (str, Path)):
            found = str(path)
        traceback = traceback.tb_next
    return found
