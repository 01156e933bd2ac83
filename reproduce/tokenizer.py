"""Vocabulary size at a fixed parameter budget (PAPER.md §1): tokenizers of 8k…100k pieces cut from one big
tokenizer, 48k best [?]; embedding + head take 38.19% of the 1B model at 100k vs 18.07% at 48k [?].

One big tokenizer (mistral-common's 32,000 pieces, trained elsewhere — the paper's inherited tokenizer) is
counted on the corpus and cut to several sizes with ``tinylm.compact``. For each size a model is trained at the
same TOTAL parameter budget (the depth is fixed; the width is chosen with the FFN size solved for the budget, so every size has the same parameter
count to within a fraction of a percent), trained for the same number of tokens, and scored by held-out bits per byte — per-token loss is not comparable across vocabularies. The table
also gives the embedding + head share and how much longer the token sequences get (inflation vs the uncut
tokenizer, on sample text of the same corpus).

    python -m reproduce tokenizer --scale smoke|small|paper [--seeds N] [--out results]

Seeds vary init and data order. Arms: the paper's 47.6% cut of the largest size tried ("paper cut"), the largest
and the smallest size tried.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reproduce.coverage import counted, mistral_tokenizer
from reproduce.experiment import Experiment, Measured, Options, data, fmt, save_figure, scratch, tokens_line, train
from reproduce.verdict import Finding
from tinylm.compact import compact_tokenizer, sample_documents
from tinylm.datamodule import TextDataModule, default_cache_dir
from tinylm.model import ModelConfig
from tinylm.tokenizer import Tokenizer

PAPER_SHARE = {100_883: 0.3819, 48_000: 0.1807}  # embedding + head share of the 1B model [?]
PAPER_SIZES = (8000, 16000, 32000, 48000, 72000, 100000)  # compared in the paper [?]; 48k best [?]


@dataclass(frozen=True)
class Scale:
    sources: str
    sizes: tuple[int, ...]  # vocabularies cut from the 32k tokenizer
    budget: int  # total parameters, embeddings and head included
    depth: int
    head_dim: int
    seq_len: int
    batch_size: int
    steps: int
    lr: float


SCALES = {
    "smoke": Scale("builtin:lee", (1000, 2000, 4000), 300_000, 2, 16, 64, 8, 30, 3e-3),
    # ~10 min on 2 CPU cores with 2 seeds: 300 steps × 8 × 128 tokens per size
    "small": Scale("builtin", (2000, 4000, 8000, 16000), 2_000_000, 4, 32, 128, 8, 300, 2e-3),
    # the paper's 1B budget and depth; its 100,883-piece PanGu tokenizer and 1.6T-token corpus are not available,
    # so this configures the 32k cuts only (not run here)
    "paper": Scale("builtin", (8000, 16000, 32000), 1_000_000_000, 20, 128, 2048, 32, 5000, 1e-4),
}


FINDINGS = (
    Finding("paper_vs_largest", "the paper's 47.6% cut beats the largest size tried (fixed parameter budget)", "?",
            "held-out bpb", ("paper cut", "largest")),
    Finding("paper_vs_smallest", "the paper's 47.6% cut beats the smallest size tried (fixed parameter budget)", "?",
            "held-out bpb", ("paper cut", "smallest")),
)


def shape_for(vocab: int, scale: Scale) -> ModelConfig:
    """The untied model of ``scale.depth`` layers with exactly the budget's parameters (to the FFN's rounding): for
    each width the FFN size is solved for the budget; the width whose expansion rate is closest to LLaMA's 8/3 wins."""
    best = None
    for width in range(scale.head_dim, 64 * scale.head_dim + 1, scale.head_dim):
        def shaped(ffn: int) -> ModelConfig:
            return ModelConfig(vocab_size=vocab, hidden_size=width, num_layers=scale.depth,
                               num_heads=width // scale.head_dim, intermediate_size=ffn,
                               max_seq_len=max(scale.seq_len, 128))
        fixed = shaped(8).num_params() - 3 * scale.depth * width * 8
        ffn = round((scale.budget - fixed) / (3 * scale.depth * width) / 8) * 8
        if ffn < width:  # an FFN narrower than the model is not a LLaMA shape
            continue
        config = shaped(ffn)
        if best is None or abs(ffn / width - 8 / 3) < abs(best.intermediate_size / best.hidden_size - 8 / 3):
            best = config
    return best


def cut(big: Tokenizer, sources: str, size: int) -> tuple[Path, dict[str, Any]]:
    """``big`` compacted to ``size`` pieces on the counts of ``sources`` (cached in the tinylm cache)."""
    frequencies = counted(big, sources)
    key = hashlib.sha256(f"{big.sha256}:{sources}:{size}:v1".encode()).hexdigest()[:16]
    folder = Path(default_cache_dir()) / "compact" / key
    if not (folder / "compact.json").is_file():
        compact_tokenizer(big, frequencies, size, folder, sample_documents([sources], 1_000_000))
    return folder, json.loads((folder / "compact.json").read_text())


def plot(rows: list[dict[str, Any]], folder: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, left = plt.subplots(figsize=(5.5, 3.8))
    sizes = [r["vocab"] for r in rows]
    left.plot(sizes, [r["bpb"] for r in rows], "o-", color="tab:blue", label="held-out bits/byte")
    left.set_xscale("log")
    left.set_xlabel("vocabulary (pieces, cut from mistral-32k)")
    left.set_ylabel("held-out bits per byte", color="tab:blue")
    right = left.twinx()
    right.plot(sizes, [100 * r["share"] for r in rows], "s--", color="tab:red", label="embedding + head share")
    right.set_ylabel("embedding + head share (%)", color="tab:red")
    fig.tight_layout()
    return save_figure(fig, folder, "vocab_size.png")


def measure(config: Scale, options: Options, folder: Path) -> Measured:
    big = mistral_tokenizer()
    rows = []
    with scratch("vocab") as runs:
        for size in config.sizes:
            tokenizer, record = cut(big, config.sources, size)
            shape = shape_for(size, config)
            trained = [train(shape, data(config.sources, config.seq_len, config.batch_size, seed,
                                         tokenizer=tokenizer / "tokenizer.model"),
                             runs / f"{size}-{seed}", config.steps, seed, config.lr, warmup=0.1)
                       for seed in range(options.seeds)]
            bpbs = [t.bpb for t in trained]
            rows.append({"vocab": size, "width": shape.hidden_size, "ffn": shape.intermediate_size,
                         "depth": shape.num_layers, "params": shape.num_params(), "share": shape.embedding_share(),
                         "inflation": record["verify"]["inflation"], "coverage_of_counted": record["counted_coverage"],
                         "tokens": trained[0].tokens, "bpb": statistics.fmean(bpbs), "bpb_seeds": bpbs,
                         "bpb_sd": statistics.stdev(bpbs) if len(bpbs) > 1 else None})
    sizes = [r["vocab"] for r in rows]
    middle = min(sizes, key=lambda k: abs(k - 48000 / 100883 * max(sizes)))
    by = {r["vocab"]: r["bpb_seeds"] for r in rows}
    arms = {"paper cut": by[middle], "largest": by[max(sizes)], "smallest": by[min(sizes)]}
    lines = [
        f"Corpus {config.sources}; budget {config.budget:,} parameters (depth {config.depth}, width and FFN solved), "
        f"{config.steps} steps of {config.batch_size}×{config.seq_len} tokens, {options.seeds} seed(s). Arms: paper "
        f"cut = {middle:,}, largest = {max(sizes):,}, smallest = {min(sizes):,} pieces. Inflation: tokens of the cut "
        "tokenizer / tokens of the uncut 32k on ~1M characters of the corpus (equal tokens cover less text at "
        "smaller vocabularies).",
        "",
        "| vocab | width | FFN | params | emb+head share | inflation | training tokens | held-out bits/byte | seed sd "
        "| paper |", "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['vocab']:,} | {r['width']} | {r['ffn']} | {r['params']:,} | {100 * r['share']:.2f}% | "
                     f"{r['inflation']:.4f} | {r['tokens']:,} | {r['bpb']:.4f} | {fmt(r['bpb_sd'], 4)} | n/a |")
    paper_shapes = {"pangu-pi-1b": 100_883, "pangu-pi-1b-pro-released": 48_000}
    lines += ["", "The paper's 1B shapes (shares computed from the configs in tinylm.model):", "",
              "| model | vocab | emb+head share (config) | paper |", "|---|---|---|---|"]
    shares = {}
    for preset, vocab in paper_shapes.items():
        shares[preset] = ModelConfig.from_preset(preset).embedding_share()
        lines.append(f"| {preset} | {vocab:,} | {100 * shares[preset]:.2f}% | {100 * PAPER_SHARE[vocab]:.2f}% [?] |")
    lines += ["", tokens_line({f"{r['vocab']:,}": r["tokens"] for r in rows}),
              f"The 1B Pro config gives {100 * shares['pangu-pi-1b-pro-released']:.2f}% (paper 18.07% [?]); "
              f"pangu-pi-1b's {100 * shares['pangu-pi-1b']:.2f}% (paper 38.19% [?]; its FFN size was not recovered)."]
    return Measured("\n".join(lines), {"paper_vs_largest": arms, "paper_vs_smallest": arms}, rows=rows,
                    tokens={f"{r['vocab']}": r["tokens"] for r in rows}, figures=[plot(rows, folder)],
                    extra={"paper_shapes": shares})


EXPERIMENT = Experiment(
    "tokenizer", "Vocabulary size at a fixed parameter budget (§1, compact tokenizer)", SCALES, FINDINGS, measure,
    paper={"shares": {str(k): {"value": v, "tag": "?"} for k, v in PAPER_SHARE.items()}, "sizes": list(PAPER_SIZES),
           "best": {"value": 48000, "tag": "?"}})
