"""Batch size and learning rate (docs/paper.md §3): lr = (bs / bs0)^r × lr0, several batch sizes × r ∈ {0.5, 1.0}.

Every run trains the same model for the same tokens; only the batch (tokens per optimizer step) changes, and the
peak lr follows the rule (``LanguageModel(lr_scaling_r=r, lr_scaling_bs0=bs0)``). The paper's bs0 = 1M tokens and
lr0 = 1e-4 [P] belong to a 1B model; smaller scales scale both down. Its findings are qualitative: batches under
4M tokens (4 × bs0) are better for tiny models [P], and r = 0.5 is recommended [?]. Seeds vary init and data
order; the first finding's arms are the largest batch under 4 × bs0 and the smallest at or above it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reproduce.experiment import Experiment, Measured, Options
from reproduce.figures import save_figure, subplots
from reproduce.recipe import PAPER_CORPUS, Recipe, scratch
from reproduce.tables import fmt, markdown, matching, seed_summary
from reproduce.verdict import SMALLEST_BPB, Finding
from tinylm.model import ModelConfig
from tinylm.training.lm import LanguageModel
from tinylm.training.optim import scaled_lr

RATES = (0.5, 1.0)
FINDINGS = (
    *(Finding(f"small_batch_r{r}", f"a batch under 4 × bs0 beats one at ≥ 4 × bs0 (r = {r}, equal tokens)", "P",
              "held-out bpb", ("under 4 × bs0", "at ≥ 4 × bs0"), smallest_effect=SMALLEST_BPB) for r in RATES),
    Finding("r_half", "r = 0.5 beats r = 1.0 (mean over batch sizes, per seed)", "?", "held-out bpb",
            ("r = 0.5", "r = 1.0"), smallest_effect=SMALLEST_BPB),
)


@dataclass(frozen=True, kw_only=True)
class Scale(Recipe):
    """``lr`` is lr0; every run trains ``budget`` tokens at each of ``batch_sizes`` (sequences per step)."""

    batch_sizes: tuple[int, ...]
    bs0_tokens: int
    budget: int
    micro_batch: int | None = None  # sequences per forward pass (gradient accumulation makes up the rest)


SCALES = {
    "smoke": Scale(sources=("builtin:lee",), vocab_size=2000, batch_sizes=(4, 8, 16, 32), bs0_tokens=512, lr=2e-3,
                   min_lr=0.0, budget=98_304, val_batches=10),
    # sized for 2 CPU cores: a 128 × 4 model, 131k tokens per run, bs0 = 8 sequences
    "small": Scale(config=ModelConfig(hidden_size=128, num_layers=4, num_heads=4, intermediate_size=352),
                   sources=("builtin:wiki",), vocab_size=4000, seq_len=128, batch_sizes=(4, 8, 16, 32, 64),
                   bs0_tokens=1024, lr=2e-3, min_lr=0.0, budget=131_072, val_batches=40),
    # bs0 = 1M tokens, lr0 = 1e-4 [P]; 2M..16M-token batches, 20B tokens per run
    "paper": Scale(config="pangu-pi-1b-pro", sources=PAPER_CORPUS, vocab_size=48000, seq_len=2048,
                   batch_sizes=(256, 512, 1024, 2048, 4096, 8192), bs0_tokens=1_048_576, lr=1e-4, min_lr=0.0,
                   budget=20_000_000_000, val_batches=200, micro_batch=8, precision="bf16-mixed"),
}


def train(scale: Scale, batch_size: int, r: float, seed: int, root: Path) -> dict[str, Any]:
    micro = min(batch_size, scale.micro_batch or batch_size)
    batch_tokens = batch_size * scale.seq_len
    steps = max(1, scale.budget // batch_tokens)
    module = LanguageModel(scale.config, lr=scale.lr, min_lr=scale.min_lr, warmup=scale.warmup, lr_scaling_r=r,
                           lr_scaling_bs0=scale.bs0_tokens, model_dir=str(root / "model"))
    trained = scale.fit(scale.data(seed, batch_size=micro), root, seed, steps=steps, module=module,
                        accumulate_grad_batches=batch_size // micro)
    return {"batch_size": batch_size, "batch_tokens": batch_tokens, "r": r, "seed": seed, "steps": steps,
            "lr": scaled_lr(batch_tokens, r, scale.lr, scale.bs0_tokens), "tokens": trained.tokens,
            "bpb": trained.bpb, "curve": trained.curve}


def summarise(rows: list[dict[str, Any]], scale: Scale) -> list[dict[str, Any]]:
    return [{"r": r, "batch_size": b, "batch_tokens": (first := matching(rows, r=r, batch_size=b)[0])["batch_tokens"],
             "bs_over_bs0": first["batch_tokens"] / scale.bs0_tokens, "lr": first["lr"], "steps": first["steps"],
             "tokens": first["tokens"], **seed_summary(matching(rows, r=r, batch_size=b))}
            for r in RATES for b in scale.batch_sizes]


def table_text(table: list[dict[str, Any]], scale_name: str, scale: Scale) -> str:
    return "\n".join([*markdown(
        ("r", "batch (tokens)", "bs/bs0", "peak lr", "steps", "held-out bpb ↓ (ours)", "sd", "paper"),
        ((t["r"], f"{t['batch_tokens']:,}", f"{t['bs_over_bs0']:g}", f"{t['lr']:.2e}", t["steps"], fmt(t["bpb"], 4),
          fmt(t["bpb_sd"], 4), "better [P]" if t["bs_over_bs0"] < 4 else "worse [P]") for t in table)), "",
        f"Scale `{scale_name}`: bs0 = {scale.bs0_tokens:,} tokens, lr0 = {scale.lr:g} (the paper: 1M tokens, 1e-4 "
        f"[P]); {scale.budget:,} training tokens per run. The paper column is its qualitative claim (batches under "
        "4 × bs0 work better for tiny models [P]); it prints no numbers."])


def findings(rows: list[dict[str, Any]], scale: Scale) -> dict[str, Any]:
    """Per-seed held-out bpb of each declared finding's arms."""
    below = [b for b in scale.batch_sizes if b * scale.seq_len < 4 * scale.bs0_tokens]
    above = [b for b in scale.batch_sizes if b * scale.seq_len >= 4 * scale.bs0_tokens]
    seeds = sorted({row["seed"] for row in rows})

    def bpb(r: float, b: int) -> list[float]:
        return [row["bpb"] for seed in seeds for row in matching(rows, r=r, batch_size=b, seed=seed)]

    said = {f"small_batch_r{r}": {"under 4 × bs0": bpb(r, below[-1]) if below else [],
                                  "at ≥ 4 × bs0": bpb(r, above[0]) if above else []} for r in RATES}
    said["r_half"] = {f"r = {r}": [seed_summary(matching(rows, r=r, seed=s))["bpb"] for s in seeds] for r in RATES}
    return said


def figure(rows: list[dict[str, Any]], table: list[dict[str, Any]], out: Path) -> list[str]:
    fig, axes = subplots(1, 3, figsize=(16, 4))
    for ax, r in zip(axes[:2], RATES):
        for row in rows:
            if row["r"] == r and row["seed"] == rows[0]["seed"]:
                tokens, losses = zip(*row["curve"])
                ax.plot(tokens, losses, lw=1, label=f"{row['batch_tokens']:,} tok (lr {row['lr']:.1e})")
        ax.set(xlabel="training tokens", ylabel="training loss", title=f"r = {r}")
        ax.legend(fontsize=7)
    ax = axes[2]
    for r in RATES:
        runs = [t for t in table if t["r"] == r]
        ax.errorbar([t["batch_tokens"] for t in runs], [t["bpb"] for t in runs],
                    yerr=[t["bpb_sd"] or 0 for t in runs], marker="o", label=f"r = {r}")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="batch size (tokens per step)", ylabel="held-out bits per byte", title="final bpb at equal tokens")
    ax.legend()
    return [save_figure(fig, out, "batch_lr.png")]


def measure(setting: Scale, options: Options, folder: Path) -> Measured:
    rows = []
    with scratch("batch-lr") as tmp:
        for seed in range(options.seeds):
            for r in RATES:
                for batch_size in setting.batch_sizes:
                    rows.append(train(setting, batch_size, r, seed, tmp / f"s{seed}-r{r}-b{batch_size}"))
    table = summarise(rows, setting)
    return Measured(table_text(table, options.scale, setting), findings(rows, setting), rows=rows,
                    tokens={f"{t['batch_tokens']:,}-token batches": t["tokens"] for t in table},
                    figures=figure(rows, table, folder), extra={"summary": table})


EXPERIMENT = Experiment(
    "batch_lr", "Batch size and the learning-rate rule (§3)", SCALES, FINDINGS, measure,
    paper={"bs0_tokens": 1_048_576, "lr0": 1e-4, "rates": list(RATES), "claim": "bs < 4M tokens better", "tag": "P"},
    core_hours={"small": 0.35})
