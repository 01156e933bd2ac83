"""Evaluation throughput: the ``tinylm`` lm-eval model against lm-eval's ``hf`` backend, same model dir, same task
requests, measured in one run, interleaved (A B B A per round) so that load from other work hits both alike.

    python benchmarks/eval_throughput.py --models tiny,builtin:smollm2-135m --tasks arc_easy:100,c3:40 \\
        --output results/benchmarks/eval_throughput.md

A model is ``tiny`` (a randomly initialised ``tiny`` preset with a tokenizer trained on part of the built-in
corpus; speed does not depend on the weights), ``builtin:<name>`` (a built-in pretrained model, skipped when
this tinylm has none) or a model dir. A task is a local task name with ``:limit`` documents. Each arm scores the
task's requests exactly as ``simple_evaluate`` would hand them over; the script reports requests/s, tokens/s
(the tokens of every request's context + continuation, or of every generated token), the paired ratio per round
(hf time / tinylm time) and checks that the task's scores are identical.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def tiny_model_dir(folder: Path, preset: str = "tiny", vocab_size: int = 8000) -> Path:
    from tinylm.artifacts.model_dir import save_model_dir
    from tinylm.data.corpus import resolve, split_documents
    from tinylm.model import ModelConfig, Transformer
    from tinylm.tokenizer import train_tokenizer

    docs = list(itertools.islice(split_documents(resolve("builtin:wiki,peoples"), 50)[0], 200))
    tokenizer = train_tokenizer(docs, folder / "tok.model", vocab_size=vocab_size, character_coverage=0.99)
    torch.manual_seed(0)
    return save_model_dir(folder / "model", Transformer(ModelConfig.from_preset(preset, vocab_size=vocab_size)),
                          tokenizer)


def model_folder(spec: str, scratch: Path) -> Path | None:
    if spec == "tiny":
        return tiny_model_dir(scratch)
    if spec.startswith("builtin:"):
        try:
            from tinylm.artifacts.builtin import resolve
        except ImportError:
            print(f"skipping {spec}: this tinylm has no built-in pretrained models", file=sys.stderr)
            return None
        return resolve(spec)
    return Path(spec)


def task_requests(name: str, limit: int):
    """The task and its instances (built as simple_evaluate builds them), grouped by document."""
    from tinylm.evaluation.tasks import load_tasks

    (task,) = load_tasks([name])
    task.build_all_requests(limit=limit, rank=0, world_size=1)
    return task, task.instances


def scores(task, instances, results) -> dict[str, float]:
    """The task's aggregated metrics from one arm's results (lm-eval's own process_results and aggregation)."""
    by_doc: dict[int, list] = {}
    for instance, result in zip(instances, results):
        by_doc.setdefault(instance.doc_id, []).append((instance.idx, instance.doc, result))
    per_metric: dict[str, list] = {}
    for rows in by_doc.values():
        rows.sort(key=lambda row: row[0])
        for metric, value in task.process_results(rows[0][1], [row[2] for row in rows]).items():
            per_metric.setdefault(metric, []).append(value)
    return {metric: float(task.aggregation()[metric](values)) for metric, values in per_metric.items()}


def request_tokens(lm, instances, results) -> int:
    kind = instances[0].request_type
    if kind == "loglikelihood":
        return sum(min(len(c) + len(x), lm.max_length + 1) - 1
                   for c, x in (lm._encode_pair(*i.args) for i in instances))
    if kind == "loglikelihood_rolling":
        return sum(len(lm.tok_encode(i.args[0], add_special_tokens=False)) for i in instances)
    return sum(len(lm.tok_encode(text, add_special_tokens=False)) for text in results)  # generated tokens


def bench(models: list[str], tasks: list[tuple[str, int]], batch_size: int, rounds: int) -> list[dict]:
    from lm_eval.models.huggingface import HFLM

    from tinylm.evaluation.adapter import TinyLMEval

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for spec in models:
            folder = model_folder(spec, Path(scratch))
            if folder is None:
                continue
            arms = {"tinylm": TinyLMEval(str(folder), batch_size=batch_size, device="cpu"),
                    "hf": HFLM(pretrained=str(folder), batch_size=batch_size, device="cpu")}
            params = arms["tinylm"].model.config.num_params() / 1e6
            for name, limit in tasks:
                task, instances = task_requests(name, limit)
                kind = instances[0].request_type
                for lm in arms.values():  # warm-up (first-call allocations, lazy imports)
                    getattr(lm, kind)(instances[:4], disable_tqdm=True)
                seconds = {arm: [] for arm in arms}
                results = {}
                load = [os.getloadavg()[0]]
                for _ in range(rounds):
                    for arm in ("tinylm", "hf", "hf", "tinylm"):
                        start = time.perf_counter()
                        results[arm] = getattr(arms[arm], kind)(instances, disable_tqdm=True)
                        seconds[arm].append(time.perf_counter() - start)
                    load.append(os.getloadavg()[0])
                ratios = [(seconds["hf"][2 * r] + seconds["hf"][2 * r + 1])
                          / (seconds["tinylm"][2 * r] + seconds["tinylm"][2 * r + 1]) for r in range(rounds)]
                tokens = request_tokens(arms["tinylm"], instances, results["tinylm"])
                ours, theirs = scores(task, instances, results["tinylm"]), scores(task, instances, results["hf"])
                row = {"model": spec, "params": params, "task": name, "docs": len({i.doc_id for i in instances}),
                       "requests": len(instances), "kind": kind, "tokens": tokens, "ratio": statistics.median(ratios),
                       "ratios": ratios, "scores": ours, "same": ours == theirs, "hf_scores": theirs,
                       "load": (min(load), max(load))}
                for arm in arms:
                    t = statistics.mean(seconds[arm])
                    row[arm] = {"s": t, "req_s": len(instances) / t, "tok_s": tokens / t}
                if kind == "loglikelihood":
                    row["max_delta"] = max(abs(a[0] - b[0]) for a, b in zip(results["tinylm"], results["hf"]))
                elif kind == "generate_until":
                    row["same_texts"] = sum(a == b for a, b in zip(results["tinylm"], results["hf"]))
                rows.append(row)
                print(line(row), flush=True)
    return rows


def line(row: dict) -> str:
    score = ", ".join(f"{k} {v:.4f}" for k, v in row["scores"].items())
    extra = (f"max |Δ loglik| {row['max_delta']:.1e}" if "max_delta" in row else
             f"same text {row['same_texts']}/{row['requests']}" if "same_texts" in row else "")
    return (f"{row['model']} {row['task']}: {row['requests']} requests, tinylm {row['tinylm']['req_s']:.1f} req/s "
            f"{row['tinylm']['tok_s']:.0f} tok/s, hf {row['hf']['req_s']:.1f} req/s {row['hf']['tok_s']:.0f} tok/s, "
            f"paired ratio {row['ratio']:.2f}x {[round(r, 2) for r in row['ratios']]}; scores identical: {row['same']} "
            f"({score}) {extra}")


def markdown(rows: list[dict], batch_size: int, rounds: int) -> str:
    head = (f"CPU, {torch.get_num_threads()} threads, fp32, batch {batch_size}, {rounds} round(s) of A B B A "
            f"(tinylm, hf, hf, tinylm) per row; times are the mean of an arm's runs, the ratio the median over rounds "
            f"of hf time / tinylm time. 1-min load average during each row in the last column "
            f"({os.cpu_count()} cores, shared with other engineers' jobs).\n\n")
    table = ["| model | params | task | docs | requests | tokens | tinylm req/s | hf req/s | tinylm tok/s | hf tok/s "
             "| ratio | scores (tinylm = hf?) | max Δ | load |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for r in rows:
        score = ", ".join(f"{k} {v:.4f}" for k, v in r["scores"].items())
        delta = (f"{r['max_delta']:.1e}" if "max_delta" in r else
                 f"{r['same_texts']}/{r['requests']} same texts" if "same_texts" in r else "")
        table.append(f"| {r['model']} | {r['params']:.1f}M | {r['task']} | {r['docs']} | {r['requests']} "
                     f"| {r['tokens']} | {r['tinylm']['req_s']:.1f} | {r['hf']['req_s']:.1f} "
                     f"| {r['tinylm']['tok_s']:.0f} | {r['hf']['tok_s']:.0f} | **{r['ratio']:.2f}×** "
                     f"| {score} ({'identical' if r['same'] else 'DIFFER'}) | {delta} "
                     f"| {r['load'][0]:.1f}–{r['load'][1]:.1f} |")
    return head + "\n".join(table) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tiny,builtin:smollm2-135m")
    parser.add_argument("--tasks", default="arc_easy:100,c3:40",
                        help="comma-separated task:limit (local task names)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=1, help="A B B A rounds per row")
    parser.add_argument("--output", type=Path, help="write the markdown table here")
    args = parser.parse_args()
    tasks = [(name, int(limit)) for name, _, limit in (t.partition(":") for t in args.tasks.split(","))]
    if args.output:
        from tinylm.artifacts.io import check_output_file

        check_output_file(args.output)
    rows = bench(args.models.split(","), tasks, args.batch_size, args.rounds)
    text = markdown(rows, args.batch_size, args.rounds)
    print(text)
    if args.output:
        from tinylm.artifacts.io import atomic_file

        with atomic_file(args.output) as handle:
            handle.write(f"`python benchmarks/eval_throughput.py {' '.join(sys.argv[1:])}`\n\n" + text)


if __name__ == "__main__":
    main()
