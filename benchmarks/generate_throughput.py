"""Batched greedy generation of prompts of different lengths: ``generate_ragged`` at batch 1 against a larger
batch (left-padded), same model, same prompts, measured in one run, interleaved (A B B A per round) so that load
from other work hits both alike. The two arms must return the same tokens; the script checks it.

    python benchmarks/generate_throughput.py --model builtin:smollm2-135m --prompts 16 --lengths 200:600 \\
        --new_tokens 32 --batch_size 16 [--rounds 1] [--output results/benchmarks/generate_throughput.md]

Prompts are slices of real text (the built-in wiki corpus) tokenized with the model's tokenizer, their lengths
drawn uniformly (seeded) from ``--lengths``. Decoding stops a row at the tokenizer's EOS, as lm-eval's
``generate_until`` does. A wide ``--lengths`` is the worst case for padding (a batch pads every prompt to the
longest); lm-eval hands over many requests, sorted by length, so a batch of them is closer to a narrow range.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

import torch


def ragged_prompts(tokenizer, count: int, shortest: int, longest: int, seed: int = 0) -> list[list[int]]:
    from tinylm.data.corpus import resolve

    rng = random.Random(seed)
    stream: list[int] = []
    for doc in resolve("builtin:wiki")[0].documents():
        stream += tokenizer.encode_one(doc, bos=False)
        if len(stream) >= count * longest:
            break
    prompts = []
    for index in range(count):
        start = index * longest
        prompts.append(stream[start:start + rng.randint(shortest, longest)])
    return prompts


def bench(model, tokenizer, prompts: list[list[int]], new_tokens: int, batch_size: int, rounds: int) -> dict:
    from tinylm.model.generate import generate_ragged

    eos = tokenizer.eos_id
    arms = {"batch 1": 1, f"batch {batch_size}": batch_size}
    for size in arms.values():  # warm-up (first-call allocations)
        generate_ragged(model, prompts[:2], 2, eos_id=eos, batch_size=size)
    seconds: dict[str, list[float]] = {arm: [] for arm in arms}
    outputs = {}
    load = [os.getloadavg()[0]]
    one, many = arms
    for _ in range(rounds):
        for arm in (one, many, many, one):
            start = time.perf_counter()
            outputs[arm] = generate_ragged(model, prompts, new_tokens, eos_id=eos, batch_size=arms[arm])
            seconds[arm].append(time.perf_counter() - start)
        load.append(os.getloadavg()[0])
    ratios = [(seconds[one][2 * r] + seconds[one][2 * r + 1]) / (seconds[many][2 * r] + seconds[many][2 * r + 1])
              for r in range(rounds)]
    generated = sum(map(len, outputs[one]))
    return {"arms": {arm: statistics.mean(s) for arm, s in seconds.items()}, "ratio": statistics.median(ratios),
            "ratios": ratios, "generated": generated, "same": outputs[one] == outputs[many],
            "load": (min(load), max(load))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="builtin:smollm2-135m", help="a model dir or builtin:<name>")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--lengths", default="200:600", help="shortest:longest prompt, in tokens")
    parser.add_argument("--new_tokens", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=1, help="A B B A rounds")
    parser.add_argument("--output", type=Path, help="write the markdown table here")
    args = parser.parse_args()
    if args.output:
        from tinylm.artifacts.io import check_output_file

        check_output_file(args.output)
    from tinylm.artifacts.builtin import resolve
    from tinylm.artifacts.model_dir import load_model_dir

    model, tokenizer = load_model_dir(resolve(args.model))
    model.eval()
    shortest, longest = map(int, args.lengths.split(":"))
    prompts = ragged_prompts(tokenizer, args.prompts, shortest, longest)
    row = bench(model, tokenizer, prompts, args.new_tokens, args.batch_size, args.rounds)
    params = model.config.num_params() / 1e6
    text = (f"CPU, {torch.get_num_threads()} threads, fp32, {args.rounds} round(s) of A B B A; times are an arm's "
            f"mean, the speed-up the median over rounds of (batch 1 time) / (batch {args.batch_size} time). 1-min "
            f"load average {row['load'][0]:.1f}–{row['load'][1]:.1f} on {os.cpu_count()} cores shared with other "
            f"work.\n\n| model | params | prompts (tokens) | new tokens | generated | "
            + " | ".join(f"{arm} s" for arm in row["arms"]) + " | speed-up | same tokens |\n"
            "|---|---:|---|---:|---:|" + "---:|" * len(row["arms"]) + "---:|---|\n"
            f"| {args.model} | {params:.1f}M | {len(prompts)} ({min(map(len, prompts))}–{max(map(len, prompts))}) "
            f"| {args.new_tokens} | {row['generated']} | "
            + " | ".join(f"{s:.2f}" for s in row["arms"].values())
            + f" | **{row['ratio']:.2f}×** {[round(r, 2) for r in row['ratios']]} | {row['same']} |\n")
    print(text)
    if not row["same"]:
        sys.exit("batched tokens differ from batch 1")
    if args.output:
        from tinylm.artifacts.io import atomic_file

        with atomic_file(args.output) as handle:
            handle.write(f"`python benchmarks/generate_throughput.py {' '.join(sys.argv[1:])}`\n\n" + text)


if __name__ == "__main__":
    main()
