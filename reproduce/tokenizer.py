"""Vocabulary size at a fixed parameter budget (docs/paper.md §1): tokenizers of 8k…100k pieces cut from one big
tokenizer, 48k best [?]; embedding + head take 38.19% of the 1B model at 100k vs 18.07% at 48k [?].

mistral-common's 32,000-piece tokenizer (trained elsewhere: the paper's inherited tokenizer) is counted on the
corpus and cut to several sizes (``tinylm.vocab.compact``). Each size trains a model of the same total parameters (depth
fixed, width chosen and FFN solved for the budget) for equal tokens, scored by held-out bpb (per-token loss is not
comparable across vocabularies); the table adds the embedding + head share and the sequence inflation against the
uncut tokenizer. Seeds vary init and data order. Arms: the paper's 47.6% cut of the largest size ("paper cut"),
the largest and the smallest size.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reproduce.coverage import counted, mistral_tokenizer
from reproduce.experiment import Experiment, Measured, Options
from reproduce.figures import save_figure, subplots
from reproduce.recipe import Recipe, scratch
from reproduce.tables import fmt, markdown, mean_sd, tokens_line
from reproduce.verdict import SMALLEST_BPB, Finding
from tinylm.artifacts.io import default_cache_dir
from tinylm.model import ModelConfig
from tinylm.tokenizer import Tokenizer
from tinylm.vocab.compact import compact_tokenizer, sample_documents

PAPER_SHARE = {100_883: 0.3819, 48_000: 0.1807}  # embedding + head share of the 1B model [?]
PAPER_SIZES = (8000, 16000, 32000, 48000, 72000, 100000)  # compared in the paper [?]; 48k best [?]


@dataclass(frozen=True, kw_only=True)
class Scale(Recipe):
    sizes: tuple[int, ...]  # vocabularies cut from the 32k tokenizer
    budget: int  # total parameters, embeddings and head included
    depth: int
    head_dim: int
    warmup: float = 0.1


SCALES = {
    "smoke": Scale(sources=("builtin:lee",), sizes=(1000, 2000, 4000), budget=300_000, depth=2, head_dim=16,
                   steps=30),
    # ~10 min on 2 CPU cores with 2 seeds: 300 steps × 8 × 128 tokens per size
    "small": Scale(sizes=(2000, 4000, 8000, 16000), budget=2_000_000, depth=4, head_dim=32, seq_len=128, steps=300,
                   lr=2e-3),
    # the paper's 1B budget and depth; its 100,883-piece PanGu tokenizer and 1.6T-token corpus are not available,
    # so this configures the 32k cuts only (not run here)
    "paper": Scale(sizes=(8000, 16000, 32000), budget=1_000_000_000, depth=20, head_dim=128, seq_len=2048,
                   batch_size=32, steps=5000, lr=1e-4),
}


FINDINGS = (
    Finding("paper_vs_largest", "the paper's 47.6% cut beats the largest size tried (fixed parameter budget)", "?",
            "held-out bpb", ("paper cut", "largest"), smallest_effect=SMALLEST_BPB),
    Finding("paper_vs_smallest", "the paper's 47.6% cut beats the smallest size tried (fixed parameter budget)", "?",
            "held-out bpb", ("paper cut", "smallest"), smallest_effect=SMALLEST_BPB),
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
    fig, left = subplots(figsize=(5.5, 3.8))
    sizes = [r["vocab"] for r in rows]
    left.plot(sizes, [r["bpb"] for r in rows], "o-", color="tab:blue", label="held-out bits/byte")
    left.set(xscale="log", xlabel="vocabulary (pieces, cut from mistral-32k)")
    left.set_ylabel("held-out bits per byte", color="tab:blue")
    right = left.twinx()
    right.plot(sizes, [100 * r["share"] for r in rows], "s--", color="tab:red", label="embedding + head share")
    right.set_ylabel("embedding + head share (%)", color="tab:red")
    return save_figure(fig, folder, "vocab_size.png")


def measure(config: Scale, options: Options, folder: Path) -> Measured:
    big = mistral_tokenizer()
    rows = []
    with scratch("vocab") as runs:
        for size in config.sizes:
            tokenizer, record = cut(big, config.corpus, size)
            shape = shape_for(size, config)
            trained = [config.fit(config.data(seed, tokenizer / "tokenizer.model"), runs / f"{size}-{seed}", seed,
                                  config=shape) for seed in range(options.seeds)]
            rows.append({"vocab": size, "width": shape.hidden_size, "ffn": shape.intermediate_size,
                         "depth": shape.num_layers, "params": shape.num_params(), "share": shape.embedding_share(),
                         "inflation": record["verify"]["inflation"], "coverage_of_counted": record["counted_coverage"],
                         "tokens": trained[0].tokens, "bpb_seeds": (bpbs := [t.bpb for t in trained]),
                         **dict(zip(("bpb", "bpb_sd"), mean_sd(bpbs)))})
    sizes = [r["vocab"] for r in rows]
    middle = min(sizes, key=lambda k: abs(k - 48000 / 100883 * max(sizes)))
    by = {r["vocab"]: r["bpb_seeds"] for r in rows}
    arms = {"paper cut": by[middle], "largest": by[max(sizes)], "smallest": by[min(sizes)]}
    paper_shapes = {"pangu-pi-1b": 100_883, "pangu-pi-1b-pro-released": 48_000}
    shares = {preset: ModelConfig.from_preset(preset).embedding_share() for preset in paper_shapes}
    lines = [
        f"Corpus {config.corpus}; budget {config.budget:,} parameters (depth {config.depth}, width and FFN solved), "
        f"{config.steps} steps of {config.batch_size}×{config.seq_len} tokens, {options.seeds} seed(s). Arms: paper "
        f"cut = {middle:,}, largest = {max(sizes):,}, smallest = {min(sizes):,} pieces. Inflation: tokens of the cut "
        "tokenizer / tokens of the uncut 32k on ~1M characters of the corpus (equal tokens cover less text at "
        "smaller vocabularies).",
        "", *markdown(("vocab", "width", "FFN", "params", "emb+head share", "inflation", "training tokens",
                       "held-out bits/byte", "seed sd", "paper"),
                      ((f"{r['vocab']:,}", r["width"], r["ffn"], f"{r['params']:,}", f"{100 * r['share']:.2f}%",
                        f"{r['inflation']:.4f}", f"{r['tokens']:,}", f"{r['bpb']:.4f}", fmt(r["bpb_sd"], 4), "n/a")
                       for r in rows)),
        "", "The paper's 1B shapes (shares computed from the configs in tinylm.model):", "",
        *markdown(("model", "vocab", "emb+head share (config)", "paper"),
                  ((preset, f"{vocab:,}", f"{100 * shares[preset]:.2f}%", f"{100 * PAPER_SHARE[vocab]:.2f}% [?]")
                   for preset, vocab in paper_shapes.items())),
        "", tokens_line({f"{r['vocab']:,}": r["tokens"] for r in rows}),
        f"The 1B Pro config gives {100 * shares['pangu-pi-1b-pro-released']:.2f}% (paper 18.07% [?]); "
        f"pangu-pi-1b's {100 * shares['pangu-pi-1b']:.2f}% (paper 38.19% [?]; its FFN size was not recovered)."]
    return Measured("\n".join(lines), {"paper_vs_largest": arms, "paper_vs_smallest": arms}, rows=rows,
                    tokens={f"{r['vocab']}": r["tokens"] for r in rows}, figures=[plot(rows, folder)],
                    extra={"paper_shapes": shares})


EXPERIMENT = Experiment(
    "tokenizer", "Vocabulary size at a fixed parameter budget (§1, compact tokenizer)", SCALES, FINDINGS, measure,
    paper={"shares": {str(k): {"value": v, "tag": "?"} for k, v in PAPER_SHARE.items()}, "sizes": list(PAPER_SIZES),
           "best": {"value": 48000, "tag": "?"}},
    core_hours={"small": 0.5})
