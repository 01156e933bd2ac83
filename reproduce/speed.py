"""Inference speed of the depth/width variants (docs/paper.md §1): deeper models are slower to generate from.

The architecture study's budget and recipe, at a fixed list of depths (width solved at expansion 8/3,
``reproduce.shapes.grid``); each variant is trained (so the table carries its held-out bpb), then timed
generating with the KV cache under the protocol reported for the paper (batch 20, 2-token prefix, 510 new tokens)
on this CPU in fp32, and on a GPU in fp16 when there is one. Said openly: plan v1's first test (a rank correlation
over the depths, which four depths can never bring below p = 1/12) was replaced after its first run by a paired
test over ``REPEATS`` interleaved timed rounds, which counted timing repeats of one model as its n. Since plan v3
speed is what it is, a seed-free measurement: the shallowest variant's speed-up over the deepest, per timed round,
with a 95% bootstrap interval over the rounds, must lie above zero. The variants keep plan v1's scale (800k body
parameters, 200 steps: the bpb column), not the architecture study's resized one.
"""

from __future__ import annotations

import copy
import statistics
from pathlib import Path
from typing import Any

import torch

from reproduce.architecture import SCALES as STUDY, Scale, budget_words, shape_row
from reproduce.experiment import Experiment, Measured, Options
from reproduce.figures import save_figure, subplots
from reproduce.recipe import recipe, scratch
from reproduce.shapes import decode_speeds, grid
from reproduce.tables import fmt, markdown
from reproduce.verdict import Finding, bootstrap
from tinylm.model.shapes import ShapeSpace

PROTOCOL = {"batch_size": 20, "prefix": 2, "new_tokens": 510}  # third-party notes [?]: one V100, fp16
REPEATS = 10  # timed rounds; each times every variant once (plan v1: 5)
# plan v1's small scale (the recipes/architecture/small-L*.yaml variants): speed times shapes, it does not need the
# resized study's training budget
SCALES = {**STUDY, "small": recipe("architecture/small-L4-d128.yaml", scale=Scale, configs=8,
                                   speed_depths=(2, 4, 8, 16),
                                   space=ShapeSpace(budget=800_000, tolerance=0.12, depth=(2, 16), width=(64, 256),
                                                    expansion=(1.0, 4.0), head_dim=16, ffn_multiple=16,
                                                    max_seq_len=512))}
FINDINGS = (
    Finding("deeper_slower", "the deepest variant generates fewer tokens/s than the shallowest (CPU fp32, same "
            "budget)", "P", "speed-up of the shallowest over the deepest (tokens/s ratio − 1)", kind="threshold",
            at_least=0.0, note=f"seed-free: a 95% bootstrap interval over {REPEATS} interleaved timed rounds decides "
                               "(plan v3; plan v1 paired the rounds as if they were seeds)"),
)


def timings(nets: list, new_tokens: int, device: str) -> list[list[float]]:
    """Tokens/s of every variant in each of ``REPEATS`` rounds, the variants interleaved within a round."""
    protocol = {"batch_size": PROTOCOL["batch_size"], "prefix": PROTOCOL["prefix"], "new_tokens": new_tokens}
    models = [copy.deepcopy(net).float().cpu() for net in nets]
    if device == "cuda":
        models = [m.half().cuda() for m in models]
    runs: list[list[float]] = [[] for _ in models]
    for _ in range(REPEATS):
        for index, model in enumerate(models):
            runs[index] += decode_speeds(model, **protocol)
    return runs


def speed_plot(rows: list[dict[str, Any]], folder: Path) -> str:
    figure, axis = subplots(figsize=(4.6, 3.6))
    axis.scatter([r["cpu_fp32"] for r in rows], [r["bpb"] for r in rows], color="tab:orange")
    for row in rows:
        axis.annotate(f"L{row['depth']}", (row["cpu_fp32"], row["bpb"]), textcoords="offset points", xytext=(4, 4))
    axis.set(xlabel="generated tokens/s (CPU fp32, median)", ylabel="held-out bits per byte (lower is better)")
    return save_figure(figure, folder, "speed_vs_score.png")


def trained_variant(config, scale: Scale, seeds: int, root: Path) -> tuple[dict[str, Any], Any]:
    """A variant trained at every seed: its row (seed-mean bpb, for the table) and the first seed's net (timed)."""
    trained = [scale.fit(scale.data(seed), root / f"seed{seed}", seed, config=config) for seed in range(seeds)]
    scores = [t.bpb for t in trained]
    return {**shape_row(config, scale), "total_params": trained[0].module.config.num_params(),
            "tokens": trained[0].tokens, "bpb": statistics.fmean(scores), "bpb_per_seed": scores}, trained[0].module.net


def speedup(shallow: list[float], deep: list[float]) -> dict[str, float]:
    """The shallowest variant's speed-up over the deepest per timed round (ratio − 1): the mean and its 95%
    bootstrap interval over the rounds."""
    ratios = [s / d - 1 for s, d in zip(shallow, deep)]
    return {"value": statistics.fmean(ratios), **bootstrap(ratios)}


def measure(scale: Scale, options: Options, folder: Path) -> Measured:
    variants = grid(scale.space, scale.speed_depths, [scale.speed_expansion])
    with scratch("speed") as runs:
        rows, nets = zip(*(trained_variant(config, scale, options.seeds, runs / str(index))
                           for index, config in enumerate(variants)))
    cpu = timings(nets, scale.speed_new_tokens, "cpu")
    gpu = timings(nets, scale.speed_new_tokens, "cuda") if torch.cuda.is_available() else [None] * len(nets)
    for row, cpu_runs, gpu_runs in zip(rows, cpu, gpu):
        row.update(cpu_fp32=statistics.median(cpu_runs), cpu_fp32_runs=cpu_runs,
                   gpu_fp16=statistics.median(gpu_runs) if gpu_runs else None, gpu_fp16_runs=gpu_runs)
    shortened = scale.speed_new_tokens != PROTOCOL["new_tokens"]
    lines = [
        f"Variants at {budget_words(scale.space)}, expansion {scale.speed_expansion:.2f}, each trained for "
        f"{scale.tokens:,} tokens ({options.seeds} seed(s); bpb is the seed mean). Protocol: batch "
        f"{PROTOCOL['batch_size']}, {PROTOCOL['prefix']}-token prefix, {scale.speed_new_tokens} new tokens"
        + (f" (shortened from the paper's {PROTOCOL['new_tokens']} at this scale)" if shortened else " (as the paper)")
        + f", greedy with the KV cache, median of {REPEATS} interleaved timed rounds; CPU fp32 on "
        f"{torch.get_num_threads()} thread(s). The paper's protocol is fp16 on one V100 [?]; it prints no tokens/s.",
        "", *markdown(("variant", "depth", "width", "heads", "FFN", "params (budget)", "tokens/s CPU fp32",
                       "tokens/s GPU fp16", "bpb", "paper tokens/s"),
                      ((r["name"], r["depth"], r["width"], r["heads"], r["ffn"], f"{r['budget_params']:,}",
                        f"{r['cpu_fp32']:.0f}", fmt(r["gpu_fp16"], 0), f"{r['bpb']:.4f}", "n/a") for r in rows))]
    by_depth = sorted(rows, key=lambda r: r["depth"])
    gain = speedup(by_depth[0]["cpu_fp32_runs"], by_depth[-1]["cpu_fp32_runs"])
    return Measured(
        "\n".join(lines) + f"\n\n{by_depth[0]['name']} generates {100 * gain['value']:+.1f}% tokens/s over "
        f"{by_depth[-1]['name']} (95% bootstrap interval over {REPEATS} timed rounds: {100 * gain['low']:+.1f}% to "
        f"{100 * gain['high']:+.1f}%).",
        {"deeper_slower": gain}, rows=rows, tokens={"each variant": scale.tokens},
        figures=[speed_plot(rows, folder)],
        extra={"protocol": {**PROTOCOL, "new_tokens": scale.speed_new_tokens, "threads": torch.get_num_threads(),
                            "timed_rounds": REPEATS}})


EXPERIMENT = Experiment(
    "speed", "Inference speed of the depth/width variants (§1, architecture tweak)", SCALES, FINDINGS, measure,
    paper={"protocol": {**PROTOCOL, "dtype": "float16", "device": "one V100", "tag": "?"}, "tokens_per_s": None,
           "chosen_depth_for_1b": {"value": 20, "tag": "P"}},
    core_hours={"small": 0.25})
