"""Parameter inheritance (PAPER.md §2): Base (random init) vs L1, L2, Taylor and Learned width selection.

Every variant has the same small shape and keeps the same layers of the same larger source (both-ends, the
paper's advice), then trains; every arm sees the same number of training tokens: the Learned arm's mask-learning
steps (which train the weights too) come out of its training steps, and Taylor's calibration tokens are counted
and shown. Seeds vary init, data order and the calibration sample. The paper scores ARC-E / HellaSwag / C3
accuracy; here held-out bits per byte (lower is better) and the training-loss curves. The source is a larger
tinylm model trained here once and cached (the given pretrained model, shared by all seeds, like the paper's
PanGu-π-7B); ``--source DIR`` takes any LLaMA-format dir (its tokenizer is then used for the data).

    python -m reproduce inheritance --scale smoke
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from reproduce import experiment
from reproduce.experiment import Experiment, Measured, Options, fmt, pyplot, save_figure, scratch, tokens_line
from reproduce.verdict import Finding

SCALES: dict[str, dict[str, Any]] = {
    "smoke": {"source": {"hidden_size": 128, "num_layers": 6, "num_heads": 4, "intermediate_size": 344},
              "source_steps": 150, "lr": 3e-3,
              "target": {"hidden_size": 64, "num_layers": 3, "num_heads": 2, "intermediate_size": 172},
              "steps": 40, "mask_steps": 20, "seq_len": 64, "batch_size": 8, "calibration": 8, "val_batches": 4},
    # sized for 2 CPU cores: a 192 × 8 source (600 steps), 128 × 4 targets (300 steps of 8 × 128 tokens)
    "small": {"source": {"hidden_size": 192, "num_layers": 8, "num_heads": 3, "intermediate_size": 512},
              "source_steps": 600, "lr": 2e-3,
              "target": {"hidden_size": 128, "num_layers": 4, "num_heads": 2, "intermediate_size": 344},
              "steps": 300, "mask_steps": 100, "seq_len": 128, "batch_size": 8, "calibration": 16,
              "val_batches": 25},
    # the paper: PanGu-π-7B → PanGu-π-1B Pro shape (GPU cluster; configured, not run here)
    "paper": {"source": "pangu-pi-7b", "source_steps": 0, "lr": 1e-4, "target": "pangu-pi-1b-pro",
              "steps": 50_000, "mask_steps": 3200, "seq_len": 2048, "batch_size": 32, "calibration": 10,
              "val_batches": 200},
}

PAPER = {  # ARC-E, HellaSwag, C3, Avg. [P]
    "base": (36.68, 40.34, 49.15, 42.06), "l1": (39.51, 47.70, 50.96, 46.06), "l2": (41.98, 48.33, 50.68, 47.00),
    "taylor": (43.21, 48.43, 52.05, 47.90), "learned": (40.74, 51.77, 51.73, 48.08),
}
VARIANTS = ("base", "l1", "l2", "taylor", "learned")
FINDINGS = (
    Finding("inherit_beats_init", "inheriting beats random init, even with the weakest criterion (L1 46.06 vs Base "
            "42.06 avg.)", "P", "held-out bpb", ("l1", "base")),
    Finding("criteria_order", "criteria rank Learned > Taylor > L2 > L1 > Base (48.08, 47.90, 47.00, 46.06, 42.06 "
            "avg.)", "P", "held-out bpb", ("learned", "taylor", "l2", "l1", "base")),
)


def data_module(cfg: dict, tokenizer: str | None = None, seed: int = 1234):
    """The built-in corpus; ``seed`` sets the shuffle order, so seeds differ in data order, not only in init."""
    return experiment.data("builtin", cfg["seq_len"], cfg["batch_size"], seed, tokenizer=tokenizer)


def source_model(scale: str, given: Path | None = None, seed: int = 1234) -> Path:
    """The larger source model: ``given`` (``--source``) if any, else trained once per scale and cached."""
    if given is not None:
        return given
    from tinylm.datamodule import default_cache_dir
    from tinylm.model import ModelConfig

    cfg = SCALES[scale]
    key = hashlib.sha256(json.dumps([cfg["source"], cfg["source_steps"], cfg["seq_len"], cfg["lr"], seed],
                                    sort_keys=True).encode()).hexdigest()[:12]
    folder = Path(default_cache_dir()) / "reproduce" / f"inheritance-source-{scale}-{key}"
    if not (folder / "model" / "config.json").is_file():
        shape = ModelConfig.from_preset(cfg["source"]) if isinstance(cfg["source"], str) else \
            ModelConfig(**cfg["source"])
        experiment.train(shape, data_module(cfg, None, seed), folder / "run", cfg["source_steps"], seed, cfg["lr"],
                         val_batches=cfg["val_batches"])
        shutil.move(folder / "run" / "model", folder / "model")
        shutil.rmtree(folder / "run", ignore_errors=True)
    return folder / "model"


def train(cfg: dict, root: Path, tokenizer: str, seed: int, init_from: str | None = None, shape=None,
          steps: int | None = None) -> experiment.Trained:
    """Train a model (from a dir or from scratch) for the scale's budget (or ``steps``)."""
    return experiment.train(shape or "tiny", data_module(cfg, tokenizer, seed), root, steps or cfg["steps"], seed,
                            cfg["lr"], val_batches=cfg["val_batches"], init_from=init_from)


def keep_layers(source: Path, shape, root: Path) -> Path:
    """The source with only the both-ends layers kept, at full width: where Learned learns its width masks, so its
    layers are the same as every other arm's."""
    from tinylm.inherit import importance, resolve_target, save_inherited, select_layers
    from tinylm.model_dir import load_model_dir

    model, tokenizer = load_model_dir(source)
    layers = select_layers("both-ends", model.config.num_layers, shape.num_layers)
    full_width = resolve_target({"num_layers": shape.num_layers}, model.config)
    plan = importance(model, "l1").plan(full_width, layers)  # every head, neuron and channel kept
    return save_inherited(root, model.state_dict(), model.config, plan, tokenizer,
                          {"parent": str(source), "layer_strategy": "both-ends"})


def inherit_variant(variant: str, source: Path, shape, cfg: dict, root: Path, seed: int) -> tuple[Path, int]:
    """The initial small model dir of one variant and the tokens it saw on the way (mask learning, calibration)."""
    from tinylm.inherit import calibration_blocks, importance, save_inherited, select_layers
    from tinylm.inherit.mask_learner import MaskLearner
    from tinylm.model_dir import load_model_dir

    if variant == "learned":
        layered = keep_layers(source, shape, root / "layers")
        target = {"hidden_size": shape.hidden_size, "num_heads": shape.num_heads,
                  "intermediate_size": shape.intermediate_size, "num_layers": shape.num_layers}
        learner = MaskLearner(source=str(layered), target=target, lr=cfg["lr"], mask_lr=0.1, lambda_lr=0.1,
                              target_warmup=0.5, model_dir=str(root / "init"))
        trained = experiment.train(None, data_module(cfg, str(source), seed), root / "masks", cfg["mask_steps"], seed,
                                   cfg["lr"], val_batches=cfg["val_batches"], module=learner)
        return root / "init", trained.tokens
    model, tokenizer = load_model_dir(source)
    blocks, seen = None, 0
    if variant == "taylor":
        blocks = calibration_blocks(data_module(cfg, str(source), seed), cfg["calibration"], cfg["seq_len"], seed)
        seen = blocks.numel()
    plan = importance(model, variant, blocks).plan(shape, select_layers("both-ends", model.config.num_layers,
                                                                        shape.num_layers))
    return save_inherited(root / "init", model.state_dict(), model.config, plan, tokenizer,
                          {"parent": str(source), "criterion": variant, "layer_strategy": "both-ends"}), seen


def measure(cfg: dict, options: Options, folder: Path) -> Measured:
    from tinylm.inherit import resolve_target
    from tinylm.model_dir import load_config

    source = source_model(options.scale, options.source)
    shape = resolve_target(cfg["target"], load_config(source))
    results: dict[str, list[float]] = {v: [] for v in VARIANTS}
    tokens: dict[str, int] = {}
    curves: dict[str, list[tuple[float, float]]] = {}
    with scratch("inheritance") as work:
        for seed in range(options.seeds):
            for variant in VARIANTS:
                root = work / f"{variant}-seed{seed}"
                init, seen = (None, 0) if variant == "base" else inherit_variant(variant, source, shape, cfg, root,
                                                                                 seed)
                steps = cfg["steps"] - (cfg["mask_steps"] if variant == "learned" else 0)  # equal token budgets
                trained = train(cfg, root / "train", str(source), seed, init_from=init and str(init), shape=shape,
                                steps=steps)
                results[variant].append(trained.bpb)
                tokens[variant] = seen + trained.tokens
                curves.setdefault(variant, [(t + seen, loss) for t, loss in trained.curve])
    mean = {v: sum(x) / len(x) for v, x in results.items()}
    figure = plot(curves, folder)
    lines = ["| Strategy | ours: held-out bpb ↓ (seed mean) | tokens seen | paper ARC-E [P] | paper HellaSwag [P] "
             "| paper C3 [P] | paper Avg. [P] |", "|---|---|---|---|---|---|---|"]
    for v in VARIANTS:
        lines.append(f"| {v} | {fmt(mean[v], 3)} | {tokens[v]:,} | " + " | ".join(fmt(x) for x in PAPER[v]) + " |")
    table = "\n".join(lines) + (
        f"\n\nOurs is held-out bpb (lower is better) after equal token budgets; the paper's is accuracy. Source "
        f"{source} → target {shape.hidden_size}×{shape.num_layers} layers (both-ends), {shape.num_heads} heads, FFN "
        f"{shape.intermediate_size}; {cfg['steps']} steps × {cfg['batch_size']} × {cfg['seq_len']} tokens, Learned's "
        f"first {cfg['mask_steps']} of them learning masks (weights trained too). " + tokens_line(tokens) + "\n")
    return Measured(table, {"inherit_beats_init": results, "criteria_order": results},
                    rows=[{"strategy": v, "bpb": results[v], "mean_bpb": mean[v]} for v in VARIANTS], tokens=tokens,
                    figures=[figure], extra={"curves": curves, "source": str(source)})


def plot(curves: dict[str, list[tuple[float, float]]], folder: Path) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
        ax.plot([s for s, _ in curve], [x for _, x in curve], label=name)
    ax.set_xlabel("training tokens")
    ax.set_ylabel("training loss")
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, folder, "loss_curves.png")


EXPERIMENT = Experiment(
    "inheritance", "Base / L1 / L2 / Taylor / Learned inheritance (§2, the printed table)", SCALES, FINDINGS, measure,
    paper={v: dict(zip(("arc_e", "hellaswag", "c3", "avg"), PAPER[v])) for v in VARIANTS})
