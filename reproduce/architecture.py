"""Architecture tweak (docs/paper.md §1): at a fixed parameter budget, which of depth, width and FFN expansion rate
goes with a better model? Shapes sampled inside the budget (``reproduce.shapes.sample``) train with one recipe
for equal tokens and are scored by held-out bpb; the table gives Spearman's ρ(factor, −bpb) (the paper's
orientation: it correlates with accuracy) beside ρ(factor, bpb), and three scatter plots. The small and paper
scales take their optimiser settings from the ``recipes/architecture/`` recipes (those files are the variants of
the speed table). Each (shape, seed) is a study unit kept under ``<out>/units/`` as it finishes
(``reproduce.cache.study_units``): committed, the study spans several sittings and clones.
"""

from __future__ import annotations

import functools
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from reproduce.cache import study_units, units_summary
from reproduce.experiment import Experiment, Measured, Options
from reproduce.figures import save_figure, subplots
from reproduce.recipe import PAPER_CORPUS, Recipe, recipe, scratch
from reproduce.shapes import sample, spearman
from reproduce.tables import fmt, markdown, mean_sd
from reproduce.verdict import Finding
from tinylm.artifacts.cache import cache_key
from tinylm.model import ModelConfig
from tinylm.model.shapes import ShapeSpace, expansion_rate

FACTORS = {"depth": "num_layers", "width": "hidden_size", "expansion": "expansion"}
PAPER_RHO = {"depth": (0.528, "?"), "width": (None, ""), "expansion": (None, "")}


@dataclass(frozen=True, kw_only=True)
class Scale(Recipe):
    """The shape space, the shared training recipe, and the speed table's depth/width variants."""

    space: ShapeSpace
    configs: int  # sampled configurations
    speed_depths: tuple[int, ...] = ()  # widths solved for the budget at speed_expansion
    speed_expansion: float = 8 / 3
    speed_new_tokens: int = 510  # the paper's protocol; shortened only where said


SCALES: dict[str, Scale] = {
    "smoke": Scale(
        space=ShapeSpace(budget=150_000, tolerance=0.1, depth=(1, 8), width=(32, 128), expansion=(1.0, 4.0),
                         head_dim=8, ffn_multiple=8, max_seq_len=512),
        configs=6, steps=40, batch_size=8, seq_len=64, lr=2e-3, min_lr=2e-4, warmup=0.1, val_batches=8,
        speed_depths=(1, 2, 4, 8), speed_new_tokens=126,
    ),
    # plan v3: 20 shapes at 420k body parameters ±12%, each trained on ≥ 2 tokens per parameter (920 steps × 8 ×
    # 128 = 942k tokens, twice the largest shape), 3 seeds (~4 min a run on one core); the recipe's optimiser
    # settings (plan v1: 8 shapes at 800k, 0.26 tokens per parameter, in history/)
    "small": recipe("architecture/small-L4-d128.yaml", scale=Scale, configs=20, steps=920, speed_depths=(2, 4, 8, 16),
                    config=ModelConfig(hidden_size=96, num_layers=4, num_heads=6, intermediate_size=256,
                                       max_seq_len=512),
                    space=ShapeSpace(budget=420_000, tolerance=0.12, depth=(2, 16), width=(48, 192),
                                     expansion=(1.0, 4.0), head_dim=16, ffn_multiple=16, max_seq_len=512)),
    # 4768 steps × (8 × 64) sequences × 2048 tokens ≈ 5.0B tokens (1M tokens a step, the paper's bs0) on
    # TINYLM_CORPUS; lr, warmup and floor of the released PanGu-π config
    "paper": recipe("architecture/paper-L20-d1792.yaml", scale=Scale, sources=PAPER_CORPUS, configs=20,
                    speed_depths=(8, 12, 16, 20, 24, 28, 32, 36),
                    space=ShapeSpace(budget=1_000_000_000, tolerance=0.1, embeddings=True, vocab_size=48000,
                                     depth=(6, 40), width=(1024, 3072), expansion=(1.5, 4.0), head_dim=128,
                                     ffn_multiple=256)),
}


FINDINGS = (
    Finding("depth", "at a fixed budget, deeper shapes score better (Spearman of depth and held-out bpb over the "
            "sampled shapes, each scored by its seed mean; the paper: depth vs accuracy, ρ = +0.528)", "?",
            "held-out bpb", ("depth", "bpb"), kind="correlation", sign=-1),
)


# the code behind a cached (shape, seed) run: a change to it retrains (cache keys carry its version)
RUN_CODE = ["reproduce.recipe", "tinylm.training.lm", "tinylm.training.fit", "tinylm.training.optim",
            "tinylm.model.transformer", "tinylm.model.scoring", "tinylm.data.datamodule", "tinylm.data.packing",
            "tinylm.tokenizer"]


def shape_row(config: ModelConfig, scale: Scale) -> dict[str, Any]:
    """A shape's table row before training: its name, depth, width, heads, FFN, expansion and budget count."""
    return {"name": f"L{config.num_layers}-d{config.hidden_size}-f{config.intermediate_size}",
            "depth": config.num_layers, "width": config.hidden_size, "heads": config.num_heads,
            "ffn": config.intermediate_size, "expansion": round(expansion_rate(config), 4),
            "budget_params": scale.space.params(config)}


def trained_seed(config: ModelConfig, scale: Scale, seed: int, root: Path) -> dict[str, Any]:
    """One shape at one seed with the scale's recipe: held-out bpb, tokens and total parameters."""
    trained = scale.fit(scale.data(seed), root / f"seed{seed}", seed, config=config)
    return {"bpb": trained.bpb, "tokens": trained.tokens, "total_params": trained.module.config.num_params()}


def trained_shapes(configs: Sequence[ModelConfig], scale: Scale, options: Options,
                   root: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every shape at every seed (seed-major, each a study unit kept under ``<out>/units/``), as rows with the
    seed-mean bpb; plus the units' summary."""
    names = [shape_row(config, scale)["name"] for config in configs]
    if len(set(names)) != len(names):  # a unit is named by its shape: two equal names would share one record
        raise ValueError(f"architecture: the sampled shapes repeat a name: {names}")
    jobs = {f"{name}-seed{seed}": functools.partial(trained_seed, config, scale, seed, root / name)
            for seed in range(options.seeds) for name, config in zip(names, configs)}
    done = study_units(options.out, "architecture-runs", cache_key(scale, options.scale, modules=RUN_CODE), jobs)
    rows = []
    for name, config in zip(names, configs):
        runs = [done[f"{name}-seed{seed}"] for seed in range(options.seeds)]
        scores = [r["bpb"] for r in runs]
        rows.append({**shape_row(config, scale), "total_params": runs[0]["total_params"],
                     "tokens": runs[0]["tokens"], "bpb": statistics.fmean(scores), "bpb_per_seed": scores})
    return rows, units_summary(done)


def budget_words(space: ShapeSpace) -> str:
    counted = "including embedding + head" if space.embeddings else "body only, embedding + head excluded"
    return f"{space.budget:,} parameters ({counted}) ±{space.tolerance:.0%}"


def correlations(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """ρ and p between each factor and bpb, plus ρ against quality (−bpb, the paper's sign)."""
    rhos = {factor: spearman([row[factor] for row in rows], [row["bpb"] for row in rows]) for factor in FACTORS}
    return {factor: {"rho_bpb": rho, "rho_quality": -rho, "p": p} for factor, (rho, p) in rhos.items()}


def scatter_plots(rows: Sequence[dict[str, Any]], stats: dict[str, dict[str, float]], folder: Path) -> list[str]:
    """The paper's three plots: score against depth, width and expansion rate, one file each."""
    names = []
    labels = {"depth": "depth (layers)", "width": "width (hidden size)", "expansion": "FFN expansion rate"}
    for factor, label in labels.items():
        figure, axis = subplots(figsize=(4.2, 3.4))
        axis.scatter([row[factor] for row in rows], [row["bpb"] for row in rows], color="tab:blue")
        axis.set(xlabel=label, ylabel="held-out bits per byte (lower is better)")
        s = stats[factor]
        axis.set_title(f"ρ(quality) = {fmt(s['rho_quality'], 3)}, p = {fmt(s['p'], 3)}", fontsize=10)
        names.append(save_figure(figure, folder, f"score_vs_{factor}.png"))
    return names


def table(rows: Sequence[dict[str, Any]], stats: dict[str, dict[str, float]], scale: Scale, seeds: int) -> str:
    paper = {f: f"{v} [{tag}]" if v is not None else "n/a" for f, (v, tag) in PAPER_RHO.items()}
    return "\n".join([
        f"Budget: {budget_words(scale.space)}; {len(rows)} sampled shapes, each trained for {scale.tokens:,} tokens "
        f"(same recipe), {seeds} seed(s). Score: held-out bits per byte (lower is better). ρ(quality) = "
        "ρ(factor, −bpb), the paper's orientation (it correlates with accuracy).", "",
        *markdown(("factor", "ρ(quality) ours", "p-value", "ρ(factor, bpb)", "paper ρ"),
                  ((f, fmt(s["rho_quality"], 3), fmt(s["p"], 3), fmt(s["rho_bpb"], 3), paper[f])
                   for f, s in stats.items())), "",
        *markdown(("shape", "depth", "width", "heads", "FFN", "expansion", "params (budget)", "bpb", "seed sd"),
                  ((r["name"], r["depth"], r["width"], r["heads"], r["ffn"], f"{r['expansion']:.2f}",
                    f"{r['budget_params']:,}", f"{r['bpb']:.4f}", fmt(mean_sd(r["bpb_per_seed"])[1], 4))
                   for r in sorted(rows, key=lambda r: (r["depth"], r["width"]))))])


def measure(scale: Scale, options: Options, folder: Path) -> Measured:
    with scratch("architecture") as runs:  # the design points; seeds vary init and data order
        rows, units = trained_shapes(sample(scale.space, scale.configs, seed=0), scale, options, runs)
    stats = correlations(rows)
    return Measured(
        table(rows, stats, scale, options.seeds), {"depth": {"x": [r["depth"] for r in rows],
                                                            "y": [r["bpb"] for r in rows]}},
        rows=rows, tokens={"each shape": scale.tokens}, figures=scatter_plots(rows, stats, folder),
        extra={"spearman": stats, "units": units, "settings": {
            "budget": scale.space.budget, "budget_counts_embeddings": scale.space.embeddings,
            "tolerance": scale.space.tolerance, "tokens_per_config": scale.tokens, "steps": scale.steps,
            "score": "held-out bpb (lower is better); rho_quality = rho(factor, -bpb)",
            "accelerator": "cuda" if torch.cuda.is_available() else "cpu"}})


EXPERIMENT = Experiment(
    "architecture", "Depth / width / expansion sweep at a fixed budget (§1, architecture tweak)", SCALES, FINDINGS,
    measure, paper={f"spearman_{factor}": {"value": value, "tag": tag} for factor, (value, tag) in PAPER_RHO.items()},
    seeds={"smoke": 1, "small": 3, "paper": 3}, core_hours={"small": 4.0})
