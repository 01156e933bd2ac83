"""Forgetting (docs/paper.md §3): do tiny models lose what they saw early in training?

The training samples are split (seeded) into K equal parts trained one after another (part k is epoch k, through
the DataModule's round plan); a few times inside every part, the frozen model's mean loss on *every* part is
measured on a fixed random probe of its samples. The paper's claim is qualitative [P]: the loss on data seen early
rises again later. Per part j < K at the end: rise = loss_j(end) − loss_j(right after part j), > 0 is the paper's
forgetting; gap = loss_j(end) − loss_K(end). Seeds vary init, the split, the probes and the data order. The
"recency" reading was added after the first run's rise finding failed, so it is exploratory: reported, never judged.

The paper's setting is a pretrained model meeting new data; since plan v3 the scale's ``pretrained`` setting runs
it beside the from-scratch reading: the pretrained source (SmolLM2-135M at small scale, ``reproduce.pretrained``)
continues on seeded parts of new text in its own tokenizer, its parts' losses tracked the same way
(``blocks_per_part`` keeps a 135M model's CPU cost to minutes).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np

from reproduce import pretrained
from reproduce.experiment import Experiment, Measured, Options
from reproduce.figures import save_figure, subplots
from reproduce.recipe import PAPER_CORPUS, Recipe, scratch
from reproduce.tables import fmt, markdown, shown
from reproduce.verdict import Finding
from tinylm.artifacts.model_dir import load_config
from tinylm.model import ModelConfig
from tinylm.training.rounds import score_blocks

FINDINGS = (
    Finding("rise", "tiny models forget: the first part's loss rises again after later parts are trained", "P",
            "probe loss of part 1 (nats/token)", ("part 1 right after it", "part 1 at the end"), smallest_effect=0.02),
    Finding("recency", "the earlier a part was trained, the higher its loss at the end (Spearman of training order "
            "and end loss over the parts, seed means)", "P", "probe loss (nats/token)", ("part", "end loss"),
            kind="correlation", sign=-1, exploratory=True,
            note="added after the first run's rise finding failed; the paper claims a rise, not this"),
    Finding("rise_pretrained", "a pretrained model forgets: the first part of new data's loss rises again after "
            "later parts are trained (the paper's setting; SmolLM2-135M at small scale)", "P",
            "probe loss of part 1 (nats/token)", ("part 1 right after it", "part 1 at the end"),
            smallest_effect=0.02),
)


@dataclass(frozen=True, kw_only=True)
class Scale(Recipe):
    parts: int
    measures_per_part: int
    probe_batches: int = 4  # each part's loss is measured on this many batches of its samples
    val_batches: int = 0
    blocks_per_part: int | None = None  # None: the training blocks split into equal parts
    pretrained: Scale | None = None  # the same reading from the pretrained source, on new text in its tokenizer


SCALES = {
    "smoke": Scale(sources=("builtin:lee",), vocab_size=2000, batch_size=16, parts=4, measures_per_part=2,
                   lr=3e-3, min_lr=3e-4,
                   pretrained=Scale(sources=("builtin:lee",), batch_size=4, parts=4, blocks_per_part=8,
                                    measures_per_part=2, probe_batches=2, lr=1e-3, min_lr=1e-4, warmup=0.1)),
    # sized for 2 CPU cores: one pass of a 128 × 4 model over the built-in Wikipedia text (~700k tokens); the
    # pretrained reading: SmolLM2-135M on 4 parts of 32 news blocks (16k tokens, ~7 min a seed on one core)
    "small": Scale(config=ModelConfig(hidden_size=128, num_layers=4, num_heads=4, intermediate_size=352),
                   sources=("builtin:wiki",), vocab_size=4000, seq_len=128, batch_size=16, parts=8,
                   measures_per_part=4, lr=2e-3, min_lr=2e-4, warmup=0.03,
                   pretrained=Scale(sources=("builtin:lee",), seq_len=128, batch_size=4, parts=4, blocks_per_part=32,
                                    measures_per_part=2, probe_batches=4, lr=3e-4, min_lr=3e-5, warmup=0.1)),
    "paper": Scale(config="pangu-pi-1b", sources=PAPER_CORPUS, vocab_size=48000, seq_len=2048, batch_size=8,
                   accumulate=64, parts=10, measures_per_part=4, lr=1e-4, min_lr=1e-5, warmup=0.03,
                   precision="bf16-mixed"),
}


class SequentialParts(L.Callback):
    """Trains part k in epoch k and measures the loss on a probe of every part ``measures`` times per part."""

    def __init__(self, parts: list[np.ndarray], probes: list[np.ndarray], batches_per_part: int, measures: int,
                 score_batch_size: int) -> None:
        self.parts, self.probes = parts, probes
        self.batches_per_part, self.score_batch_size = batches_per_part, score_batch_size
        self.at = {round(batches_per_part * (i + 1) / measures) for i in range(measures)}
        self.curve: list[dict[str, Any]] = []  # {"step", "part_trained", "loss": [per part]}

    def setup(self, trainer, pl_module, stage) -> None:
        trainer.datamodule.set_round_plan(self.parts[0])
        trainer.reload_dataloaders_every_n_epochs = 1

    def measure(self, trainer, pl_module) -> None:
        data = trainer.datamodule
        pl_module.eval()
        loss = [float(score_blocks(pl_module, data.train_stream, data.seq_len, probe, self.score_batch_size,
                                   pl_module.device, trainer.precision_plugin.forward_context).mean())
                for probe in self.probes]
        pl_module.train()
        self.curve.append({"step": trainer.global_step, "part_trained": trainer.current_epoch, "loss": loss})

    def on_train_start(self, trainer, pl_module) -> None:
        self.measure(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx + 1 in self.at:
            self.measure(trainer, pl_module)
        if batch_idx + 1 == self.batches_per_part and trainer.current_epoch + 1 < len(self.parts):
            trainer.datamodule.set_round_plan(self.parts[trainer.current_epoch + 1])


def train(scale: Scale, seed: int, root: Path, source: Path | None = None) -> dict[str, Any]:
    """Train ``scale.parts`` seeded parts in sequence, from random init (or from the ``source`` model dir, reading
    the data in its tokenizer), measuring every part's probe loss along the way."""
    data = scale.data(seed, tokenizer=None if source is None else source)
    order = np.random.default_rng(seed).permutation(data.num_train_blocks)
    size = min(data.num_train_blocks // scale.parts, scale.blocks_per_part or data.num_train_blocks)
    parts = [np.sort(order[k * size : (k + 1) * size]) for k in range(scale.parts)]
    batches_per_part = size // scale.batch_size
    probe = min(size, scale.probe_batches * scale.batch_size)  # samples per part, seeded, scored at every measure
    probes = [np.sort(order[k * size : k * size + probe]) for k in range(scale.parts)]
    callback = SequentialParts(parts, probes, batches_per_part, scale.measures_per_part, scale.batch_size)
    steps_per_part = math.ceil(batches_per_part / scale.accumulate)
    trained = scale.fit(data, root, seed, steps=steps_per_part * scale.parts, callbacks=(callback,),
                        config=None if source is None else load_config(source),
                        init_from=None if source is None else str(source))
    return {"curve": callback.curve, "steps_per_part": steps_per_part, "tokens": trained.tokens}


def ends(curve: list[dict[str, Any]], parts: int) -> dict[str, list[float]]:
    """Loss of each part right after it was trained, and at the end."""
    after = [[c for c in curve if c["part_trained"] == k][-1]["loss"][k] for k in range(parts)]
    end = curve[-1]["loss"]
    return {"after": after, "end": end, "rise": [end[j] - after[j] for j in range(parts)],
            "gap": [end[j] - end[-1] for j in range(parts)]}


def figure(curve: list[dict[str, Any]], parts: int, steps_per_part: int, out: Path,
           name: str = "forgetting.png") -> str:
    fig, ax = subplots(figsize=(7, 4))
    steps = [c["step"] for c in curve]
    for j in range(parts):
        ax.plot(steps, [c["loss"][j] for c in curve], marker="o", ms=3, label=f"part {j + 1}")
    for k in range(1, parts):
        ax.axvline(k * steps_per_part, color="gray", lw=0.5, ls=":")
    ax.set(xlabel="training step (parts trained in sequence; dotted: part boundaries)",
           ylabel="mean loss on the part (nats/token)", title="loss of each data part during sequential training")
    ax.legend(ncol=2, fontsize=8)
    return save_figure(fig, out, name)


def rise(runs: list[dict[str, Any]], parts: int) -> dict[str, list[float]]:
    """Part 1's probe loss right after it and at the end, per seed: the paired arms of a rise finding."""
    summaries = [ends(r["curve"], parts) for r in runs]
    return {"part 1 right after it": [s["after"][0] for s in summaries],
            "part 1 at the end": [s["end"][0] for s in summaries]}


def pretrained_reading(setting: Scale, options: Options, tmp: Path) -> tuple[list[str], dict[str, Any], dict]:
    """The pretrained source continued on new text: its table lines, its rise arms and its record."""
    source = pretrained.source(options.scale, options.source)
    runs = [train(setting, seed, tmp / f"p{seed}", source) for seed in range(options.seeds)]
    arms = rise(runs, setting.parts)
    named = options.source or (pretrained.BUILTIN if options.scale != "smoke" else "a tiny random-init stand-in")
    lines = ["", f"**From the pretrained source** ({shown(named)}, its own tokenizer) on {setting.parts} seeded parts "
             f"of {setting.blocks_per_part} blocks of {'; '.join(setting.sources)} ({runs[0]['tokens']:,} tokens a "
             f"seed): part 1's probe loss {statistics.mean(arms['part 1 right after it']):.4f} right after it, "
             f"{statistics.mean(arms['part 1 at the end']):.4f} at the end (seed means; a rise is forgetting)."]
    return lines, arms, {"source": str(source), "curves": [r["curve"] for r in runs], "tokens": runs[0]["tokens"],
                         "steps_per_part": runs[0]["steps_per_part"]}


def measure(setting: Scale, options: Options, folder: Path) -> Measured:
    with scratch("forgetting") as tmp:
        runs = [train(setting, seed, tmp / f"s{seed}") for seed in range(options.seeds)]
        after_pretraining = pretrained_reading(setting.pretrained, options, tmp) if setting.pretrained else None
    curves, K = [r["curve"] for r in runs], setting.parts
    summaries = [ends(c, K) for c in curves]
    rows = [{"part": j + 1, **{key: statistics.mean(s[key][j] for s in summaries) for key in ("after", "end", "rise",
                                                                                           "gap")}} for j in range(K)]
    lines = [*markdown(("part", "loss right after it (ours)", "loss at the end (ours)", "rise ↑ = forgetting",
                        "gap to last part", "paper"),
                       ((r["part"], fmt(r["after"], 4), fmt(r["end"], 4), f"{r['rise']:+.4f}", f"{r['gap']:+.4f}",
                         "rises again [P]" if r["part"] < K else "n/a") for r in rows)), "",
             f"Scale `{options.scale}`, {K} random equal parts trained in sequence, {options.seeds} seed(s), "
             f"{runs[0]['tokens']:,} training tokens per seed; each part's loss is measured on a fixed random probe "
             f"of {setting.probe_batches * setting.batch_size} of its samples (fewer if the part is smaller). The "
             "paper gives a figure, no numbers: the loss of early parts rises again after later parts are trained "
             "[P]."]
    measured = {"rise": rise(runs, K), "recency": {"x": [r["part"] for r in rows], "y": [r["end"] for r in rows]},
                "rise_pretrained": after_pretraining[1] if after_pretraining else {}}
    extra: dict[str, Any] = {"curves": curves}
    tokens = {"each seed": runs[0]["tokens"]}
    figures = [figure(curves[0], K, runs[0]["steps_per_part"], folder)]
    if after_pretraining:
        lines += after_pretraining[0]
        extra["pretrained"] = record = after_pretraining[2]
        tokens["each seed, pretrained"] = record["tokens"]
        figures.append(figure(record["curves"][0], setting.pretrained.parts, record["steps_per_part"], folder,
                              "forgetting_pretrained.png"))
    return Measured("\n".join(lines), measured, rows=rows, tokens=tokens, figures=figures, extra=extra)


EXPERIMENT = Experiment("forgetting", "Forgetting of early data (§3, multiple-round training)", SCALES, FINDINGS,
                        measure, paper={"claim": "the loss of early parts rises again", "tag": "P"},
                        core_hours={"small": 1.0})
