"""Layer redundancy (docs/paper.md §2): skip x adjacent layers of a pretrained LLM at every start position.

The paper finds skipping costs little in the middle and a lot near the first and last layers. Small scale:
SmolLM2-135M (30 layers × 576; ``reproduce.pretrained``), x ∈ {1, 2, 4} at every start, scored by held-out bits per
byte on a fixed documented text sample and, for x = 1, by ARC-Easy accuracy on the first ``arc_items`` items of
the test split (zero-shot, lm-eval's ``Question: …\\nAnswer:`` prompt, summed log-likelihood of each choice).
Beside the paper's rule, two one-pass criteria newer work uses for the same question are computed from the full
model's hidden states h_l (the residual stream entering layer l) on the same text: ShortGPT's Block Influence of
a span (1 − mean cosine of h_s and h_{s+x}; for x = 1 exactly a layer's BI) and Gromov et al.'s angular distance
(mean over tokens of arccos(cos(h_s, h_{s+x}))/π; they use the last token only, we average every token), each
judged by Spearman's rho against the measured skip cost. Deterministic: one model, one fixed sample, no seed.

Every (x, start) reuses the hidden states of the layers before ``start`` (one full pass per block, then only the
layers after the span), and the accumulated scores are cached after every block and item, so a rerun resumes.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reproduce import pretrained
from reproduce.cache import read_json, write_json
from reproduce.experiment import Experiment, Measured, Options
from reproduce.figures import save_figure, subplots
from reproduce.tables import fmt, markdown
from reproduce.verdict import Finding, bootstrap_statistic
from tinylm.artifacts.cache import cache_key
from tinylm.artifacts.io import default_cache_dir
from tinylm.artifacts.model_dir import load_model_dir
from tinylm.evaluation.datasets import DATA_ENV, data_dir, has_benchmark
from tinylm.model import Transformer
from tinylm.model.scoring import block_nll


@dataclass(frozen=True)
class Scale:
    """How much is measured: nothing is trained, one pretrained model is scored with spans of layers skipped."""

    text_bytes: int  # the held-out text sample's size
    seq_len: int  # tokens per held-out block
    spans: tuple[int, ...]  # x: how many adjacent layers are skipped at once
    arc_items: int | None  # ARC-Easy test items for x = 1 (None: the whole split)


SCALES = {
    "smoke": Scale(text_bytes=3_000, seq_len=64, spans=(1, 2, 4), arc_items=4),
    # the size: ≥ 50 KB of held-out text and 200 ARC-Easy items; SmolLM2-135M runs ~740 tokens/s in fp32 on
    # 2 idle cores, and reusing the stream before each span makes the 87-configuration sweep ~30 min in all
    "small": Scale(text_bytes=50_000, seq_len=256, spans=(1, 2, 4), arc_items=200),
    # what a GPU would run: a 1 MB sample and the whole ARC-Easy test split
    "paper": Scale(text_bytes=1_000_000, seq_len=1024, spans=(1, 2, 3, 4), arc_items=None),
}
ARC = "arc_easy/ARC-Easy-Test.jsonl"
FINDINGS = (
    *(Finding(f"{end}_costs_most", f"skipping the {end} layers costs more bpb than the cheapest middle span "
              "(every x)", "P", "held-out bpb minus the cheapest middle span's, smallest over x", kind="threshold",
              at_least=0.0, note="decided by a 95% bootstrap interval over the held-out blocks (plan v3)")
      for end in ("first", "last")),
    Finding("block_influence_predicts_skip", "ShortGPT (Men et al. 2024): a layer's Block Influence ranks the "
            "measured cost of skipping it (x = 1)", "X", "Spearman ρ(BI, Δbpb)", ("block influence", "Δbpb"),
            kind="correlation"),
    *(Finding(f"angular_predicts_skip{x}", f"Gromov et al. 2024: the angular distance between h_s and h_(s+{x}) "
              f"ranks the measured cost of skipping those {x} layers", "X", "Spearman ρ(angular distance, Δbpb)",
              ("angular distance", "Δbpb"), kind="correlation") for x in (1, 2, 4)),
)


@torch.no_grad()
def layer_inputs(model: Transformer, ids: torch.Tensor) -> list[torch.Tensor]:
    """The residual stream entering every layer, then leaving the last: ``num_layers + 1`` hidden states."""
    streams: list[torch.Tensor] = []
    model(ids, streams=streams, return_hidden=True)
    return streams


def configs(n: int, spans) -> list[tuple[int, int]]:
    """(x, start) for the full model (0, 0) and every span at every start."""
    return [(0, 0)] + [(x, s) for x in spans for s in range(n - x + 1)]


def sweep_bpb(model: Transformer, blocks: list[torch.Tensor], token_bytes: torch.Tensor, spans, cache: Path) -> dict:
    """Summed nll per (x, start), bytes, and the cosine / angle sums between h_s and h_(s+x) over ``blocks``.
    Each block's sums are cached as they finish; any prefix of the same stream reuses them."""
    n = model.config.num_layers
    done = read_json(cache, {"blocks": []})
    for index in range(len(done["blocks"]), len(blocks)):
        start = time.perf_counter()
        block = blocks[index]
        inputs = layer_inputs(model, block[:, :-1])
        state = {"nll": {}, "cos": {}, "angle": {}}
        for x, s in configs(n, spans):
            # layers s .. s + x - 1 skipped: the model runs on from the stream that entered s
            scored = block_nll(model, block, token_bytes, forward={"start": (s + x, inputs[s])})
            key = f"{x},{s}"
            state["nll"][key], state["bytes"], state["tokens"] = scored.nll, scored.bytes, scored.tokens
            if x:
                cos = torch.nn.functional.cosine_similarity(inputs[s], inputs[s + x], dim=-1).clamp(-1, 1)
                state["cos"][key] = cos.sum().item()
                state["angle"][key] = (torch.arccos(cos) / math.pi).sum().item()
        done["blocks"].append({**state, "seconds": time.perf_counter() - start})
        write_json(cache, done)
    return _summed(done["blocks"][: len(blocks)])


def _summed(parts: list[dict]) -> dict:
    """Sums over cached blocks or items; ``seconds`` sums the compute recorded, ``untimed`` counts entries cached
    before their time was recorded."""
    total: dict = {"seconds": 0.0, "untimed": sum("seconds" not in part for part in parts)}
    for part in parts:
        for name, value in part.items():
            into = total.setdefault(name, {}) if isinstance(value, dict) else total
            for key, v in (value.items() if isinstance(value, dict) else [(name, value)]):
                into[key] = into.get(key, 0) + v
    return total


def arc_items(limit: int | None) -> list[dict]:
    """The first ``limit`` ARC-Easy test items in file order: prompt, choices, answer index; none (with a line
    saying so) when the benchmark files are not there — the held-out part of the study runs without them."""
    if not has_benchmark(ARC):
        print(f"layer_skip: ARC-Easy part skipped: no {ARC} (set ${DATA_ENV} to the paper's benchmark files to "
              "score it)", flush=True)
        return []
    path = Path(data_dir()) / ARC
    items = []
    for line in path.read_text().splitlines()[:limit]:
        row = json.loads(line)
        labels = [c["label"] for c in row["question"]["choices"]]
        items.append({"prompt": f"Question: {row['question']['stem']}\nAnswer:",
                      "choices": [" " + c["text"] for c in row["question"]["choices"]],
                      "answer": labels.index(row["answerKey"])})
    return items


@torch.no_grad()
def sweep_arc(model, tokenizer, items, cache: Path) -> dict:
    """Correct answers per start for x = 1 (and the full model) over ``items``, cached item by item."""
    n = model.config.num_layers
    done = read_json(cache, {"items": []})
    for index in range(len(done["items"]), len(items)):
        start = time.perf_counter()
        item = items[index]
        context = tokenizer.encode_one(item["prompt"])
        seqs = [context + tokenizer.encode_one(item["prompt"] + choice)[len(context):] for choice in item["choices"]]
        width = max(len(s) for s in seqs)
        ids = torch.tensor([s + [0] * (width - len(s)) for s in seqs])
        inputs = layer_inputs(model, ids)
        correct = {}
        for x, s in configs(n, (1,)):
            logprobs = model(ids, start=(s + x, inputs[s])).float().log_softmax(-1)
            scores = [sum(logprobs[row, t - 1, seq[t]].item() for t in range(len(context), len(seq)))
                      for row, seq in enumerate(seqs)]
            correct[f"{x},{s}"] = int(max(range(len(scores)), key=scores.__getitem__) == item["answer"])
        done["items"].append({"correct": correct, "seconds": time.perf_counter() - start})
        write_json(cache, done)
    return _summed(done["items"][: len(items)])


def measure(setting: Scale, options: Options, folder: Path) -> Measured:
    torch.manual_seed(0)
    source = pretrained.source(options.scale, options.source)
    model, tokenizer = load_model_dir(source)
    model.eval()
    n, spans = model.config.num_layers, [x for x in setting.spans if x < model.config.num_layers]
    blocks = pretrained.heldout_blocks(tokenizer, setting.text_bytes, setting.seq_len)
    token_bytes = torch.from_numpy(tokenizer.token_bytes)
    key = cache_key(tokenizer.sha256, str(source), (source / "model.safetensors").stat().st_size, setting.seq_len,
                    spans, modules=["reproduce.layer_skip", "tinylm.model.transformer", "tinylm.model.scoring"])
    cache = Path(default_cache_dir()) / "reproduce" / f"layer-skip-v2-{key}"  # blocks and items of any prefix
    text = sweep_bpb(model, blocks, token_bytes, spans, cache.with_suffix(".bpb.json"))
    items = arc_items(setting.arc_items)
    arc = sweep_arc(model, tokenizer, items, cache.with_suffix(".arc.json")) if items else None
    bpb = {k: v / (math.log(2) * text["bytes"]) for k, v in text["nll"].items()}
    full = bpb["0,0"]
    scores = {x: [bpb[f"{x},{s}"] for s in range(n - x + 1)] for x in spans}
    cost = {x: [v - full for v in scores[x]] for x in spans}
    tokens = text["tokens"]
    influence = {x: [1 - text["cos"][f"{x},{s}"] / tokens for s in range(n - x + 1)] for x in spans}
    angular = {x: [text["angle"][f"{x},{s}"] / tokens for s in range(n - x + 1)] for x in spans}
    accuracy = {s: arc["correct"][f"1,{s}"] / len(items) if arc else float("nan") for s in range(n)}
    full_acc = arc["correct"]["0,0"] / len(items) if arc else float("nan")
    measured: dict[str, Any] = {
        **{f"{end}_costs_most": end_cost(read_json(cache.with_suffix(".bpb.json"))["blocks"][: len(blocks)], n,
                                         spans, position) for end, position in (("first", 0), ("last", -1))},
        "block_influence_predicts_skip": {"x": influence[1], "y": cost[1]},
        **{f"angular_predicts_skip{x}": {"x": angular.get(x, []), "y": cost.get(x, [])} for x in (1, 2, 4)}}
    lines = markdown(("start s", *(f"Δbpb x={x}" for x in spans), "BI (x=1)", "angular (x=1)", "ARC-E acc x=1"),
                     ((s, *(fmt(cost[x][s], 3) if s < len(cost[x]) else "" for x in spans), fmt(influence[1][s], 3),
                       fmt(angular[1][s], 3), fmt(100 * accuracy[s], 1) if arc else "n/a") for s in range(n)))
    size = int(text["bytes"])
    table = (f"Source: {pretrained.BUILTIN if options.scale != 'smoke' and options.source is None else source} "
             f"({n} layers). Full model: {full:.4f} bpb on {tokens:,} held-out tokens ({len(blocks)} blocks of "
             f"{setting.seq_len} tokens scoring {size:,} bytes: the start of the held-out `{pretrained.SAMPLE_CORPUS}` "
             f"documents, every {pretrained.SAMPLE_EVERY}th, joined by EOS), "
             + (f"ARC-Easy {100 * full_acc:.1f}% on the first {len(items)} test items (chance 25%, standard error ≈ "
                f"{100 * math.sqrt(0.25 / len(items)):.0f} points)" if arc else "ARC-Easy n/a (no benchmark files)")
             + ". Paper: qualitative only [P] — the first and last layers matter most. Sweep compute (cached, "
             f"summed over resumed runs): held-out {_timed(text, len(blocks), 'blocks')}"
             + (f", ARC-Easy {_timed(arc, len(items), 'items')}" if arc else "") + ".\n\n" + "\n".join(lines) + "\n")
    return Measured(table, measured, rows=[{"x": x, "bpb": scores[x], "block_influence": influence[x],
                                            "angular": angular[x]} for x in spans],
                    figures=[heatmap(cost, spans, n, folder)],
                    extra={"full_bpb": full, "source": str(source), "heldout_tokens": tokens, "heldout_bytes": size,
                           "arc_items": len(items), "arc_full": full_acc, "arc_x1": accuracy,
                           "seconds": {"heldout": text["seconds"], "arc": arc["seconds"] if arc else None,
                                       "untimed": {"heldout": text["untimed"],
                                                   "arc": arc["untimed"] if arc else None}}})


def end_cost(blocks: list[dict], n: int, spans, position: int) -> dict[str, float]:
    """How much more skipping the layers at ``position`` (0: first, -1: last) costs than the cheapest middle span,
    in bpb, smallest over the spans x that have a middle: the value over all held-out blocks and its 95% bootstrap
    interval over blocks (each resample re-picks the cheapest middle span)."""
    spans = [x for x in spans if n - x + 1 > 2]  # spans with a middle position to compare with
    if not spans:
        return {"value": float("nan")}
    nll = np.array([[b["nll"][f"{x},{s}"] for x in spans for s in range(n - x + 1)] for b in blocks])
    size = np.array([b["bytes"] for b in blocks])
    starts = np.cumsum([0] + [n - x + 1 for x in spans])

    def statistic(rows: np.ndarray) -> float:
        bpb = nll[rows].sum(0) / (math.log(2) * size[rows].sum())
        return min(float(bpb[a:b][position] - bpb[a:b][1:-1].min()) for a, b in zip(starts, starts[1:]))

    return {"value": statistic(np.arange(len(blocks))), **bootstrap_statistic(len(blocks), statistic)}


def _timed(sums: dict, count: int, what: str) -> str:
    timed = f"{sums['seconds']:.0f} s"
    if sums["untimed"]:
        timed += f" for {count - sums['untimed']} of {count} {what} ({sums['untimed']} cached before times were kept)"
    return timed


def heatmap(cost: dict[int, list[float]], spans: list[int], n: int, folder: Path) -> str:
    grid = np.full((len(spans), n), np.nan)
    for row, x in enumerate(spans):
        grid[row, : len(cost[x])] = np.array(cost[x])
    fig, ax = subplots(figsize=(2 + 0.3 * n, 1.2 + 0.5 * len(spans)))
    image = ax.imshow(np.log10(np.clip(grid, 1e-3, None)), cmap="Reds", aspect="auto")
    ax.set_xticks(range(n))
    ax.set_yticks(range(len(spans)), [str(x) for x in spans])
    ax.set(xlabel="first skipped layer", ylabel="adjacent layers skipped")
    fig.colorbar(image, label="log10 Δ bpb vs full model")
    return save_figure(fig, folder, "layer_skip.png")


EXPERIMENT = Experiment("layer_skip", "Skipping adjacent layers of a pretrained LLM (§2, layer redundancy)",
                        SCALES, FINDINGS, measure, deterministic=True,
                        paper={"finding": "skipping layers near the first and last costs most [P]",
                               "criteria": "ShortGPT Block Influence; Gromov et al. angular distance"},
                        core_hours={"small": 1.2})
