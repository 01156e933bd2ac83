"""Inference speed of the depth/width variants (PAPER.md §1): deeper models are slower to generate from.

The variants share the parameter budget of the architecture study: a fixed list of depths, each with the width
solved for the budget at the LLaMA expansion rate 8/3 (``tinylm.architecture.grid``). Each is trained with the
architecture study's recipe (so the table also carries its held-out score) and then timed generating with the KV
cache under the protocol reported for the paper — batch 20, 2-token prefix, 510 new tokens — on this machine's
CPU in fp32, and also on a GPU in fp16 when one is present. Speed and quality in one table.

    python -m reproduce.speed --scale smoke|small|paper [--seeds N] [--out results]
"""

from __future__ import annotations

import copy
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch

from reproduce.architecture import SCALES, Scale, budget_words, shape_row, train
from reproduce.common import experiment_dir, fmt, main, save_figure
from reproduce.verdict import judge_results
from tinylm.architecture import decode_speeds, grid
from tinylm.model import Transformer

EXPERIMENT = "speed"
PROTOCOL = {"batch_size": 20, "prefix": 2, "new_tokens": 510}  # third-party notes [?]: one V100, fp16


REPEATS = 5  # timed runs per variant; their spread is what the speed ordering is judged against


def timings(net: Transformer, new_tokens: int) -> dict[str, Any]:
    """Tokens/s of each timed run on the CPU in fp32 and, when a GPU is present, on it in fp16, plus the best."""
    protocol = {"batch_size": PROTOCOL["batch_size"], "prefix": PROTOCOL["prefix"], "new_tokens": new_tokens}
    model = copy.deepcopy(net).float().cpu()
    cpu = decode_speeds(model, repeats=REPEATS, **protocol)
    gpu = decode_speeds(model.half().cuda(), repeats=REPEATS, **protocol) if torch.cuda.is_available() else None
    return {"cpu_fp32": max(cpu), "cpu_fp32_runs": cpu, "gpu_fp16": max(gpu) if gpu else None, "gpu_fp16_runs": gpu}


def speed_plot(rows: list[dict[str, Any]], folder: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(4.6, 3.6))
    axis.scatter([r["cpu_fp32"] for r in rows], [r["bpb"] for r in rows], color="tab:orange")
    for row in rows:
        axis.annotate(f"L{row['depth']}", (row["cpu_fp32"], row["bpb"]), textcoords="offset points", xytext=(4, 4))
    axis.set_xlabel("generated tokens/s (CPU fp32)")
    axis.set_ylabel("held-out bits per byte (lower is better)")
    figure.tight_layout()
    return save_figure(figure, folder, "speed_vs_score.png")


def findings(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Deeper is slower: each variant out-generates the next deeper one beyond the spread of the timed runs.

    An ordering over the variants, not a correlation: with four depths even a perfect rank order has an exact
    Spearman p of 1/12, so a correlation could never decide it."""
    by_depth = sorted(rows, key=lambda r: r["depth"])
    return [{"claim": "deeper shapes generate fewer tokens/s (each depth vs the next deeper one, CPU fp32, the "
                      f"{REPEATS} timed runs as samples)", "tag": "P", "kind": "ordering",
             "arms": {r["name"]: r["cpu_fp32_runs"] for r in by_depth}, "expected": [r["name"] for r in by_depth],
             "higher_is_better": True}]


def run_scale(scale: Scale, seeds: int, out: Path, name: str = "custom") -> dict[str, Any]:
    folder = experiment_dir(out, EXPERIMENT)
    variants = grid(scale.space, scale.speed_depths, [scale.speed_expansion])
    rows = []
    with tempfile.TemporaryDirectory(prefix="tinylm-speed-") as runs:
        for index, config in enumerate(variants):
            trained = [train(config, scale, seed, Path(runs) / f"{index}-{seed}") for seed in range(seeds)]
            rows.append({**shape_row(config, scale.space), "total_params": trained[0].config.num_params(),
                         "bpb": statistics.fmean(t.bpb for t in trained),
                         **timings(trained[0].net, scale.speed_new_tokens)})
    shortened = scale.speed_new_tokens != PROTOCOL["new_tokens"]
    lines = [
        f"Variants at {budget_words(scale.space)}, expansion {scale.speed_expansion:.2f}, each trained for "
        f"{scale.tokens:,} tokens. Protocol: batch {PROTOCOL['batch_size']}, {PROTOCOL['prefix']}-token prefix, "
        f"{scale.speed_new_tokens} new tokens"
        + (f" (shortened from the paper's {PROTOCOL['new_tokens']} at this scale)" if shortened else " (as the paper)")
        + f", greedy with the KV cache, best of {REPEATS} timed runs; CPU fp32 on {torch.get_num_threads()} "
        "thread(s). The paper's protocol is fp16 on one V100 [?]; it prints no tokens/s numbers.",
        "",
        "| variant | depth | width | heads | FFN | params (budget) | tokens/s CPU fp32 | tokens/s GPU fp16 | bpb "
        "| paper tokens/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['name']} | {r['depth']} | {r['width']} | {r['heads']} | {r['ffn']} | "
                     f"{r['budget_params']:,} | {r['cpu_fp32']:.0f} | {fmt(r['gpu_fp16'], 0)} | {r['bpb']:.4f} | n/a |")
    judged = {"scale": name, "findings": findings(rows)}
    said = [f"{v.claim}: {v.verdict} — {v.why}" for v in judge_results(judged)]
    if name == "smoke":
        said.insert(0, "smoke scale proves the pipeline; its scores come from a few dozen training steps")
    return {
        "table": "\n".join(lines) + "\n\n" + "\n".join(f"- {line}" for line in said),
        "rows": rows,
        "paper": {"protocol": {**PROTOCOL, "dtype": "float16", "device": "one V100", "tag": "?"},
                  "tokens_per_s": None, "chosen_depth_for_1b": {"value": 20, "tag": "P"}},
        "protocol": {**PROTOCOL, "new_tokens": scale.speed_new_tokens, "threads": torch.get_num_threads(),
                     "timed_runs": REPEATS},
        "verdicts": said,
        "findings": judged["findings"],
        "figures": [speed_plot(rows, folder)],
    }


def run(scale: str, seeds: int, out: Path) -> dict[str, Any]:
    return run_scale(SCALES[scale], seeds, out, name=scale)


if __name__ == "__main__":
    main(EXPERIMENT, run)
