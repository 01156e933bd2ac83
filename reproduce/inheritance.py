"""Parameter inheritance (docs/paper.md §2) from a real pretrained model: Base (random init) vs L1, L2, Taylor, Learned.

As in the paper, the source's tokenizer is compacted first (SmolLM2-135M's 49,152 pieces → ``vocab_size`` by
frequency on the ``wiki`` training documents, embedding rows remapped), then a small child is inherited. Every
criterion keeps the both-ends layers and every arm sees the same training tokens (Learned's mask-learning steps,
which train the weights too, come out of its budget; Taylor's calibration tokens are counted). Seeds vary data
order, calibration sample, mask-learning data and Base's init; the source is one model, like the paper's 7B.
Scored by held-out bpb on ``reproduce.pretrained``'s fixed sample at step 0 (what each criterion kept) and after
the budget; the paper's ARC-E / HellaSwag / C3 are at chance for a child trained minutes on a CPU, so not run.
Each (arm, seed) is a study unit kept under ``<out>/units/`` as it finishes (``reproduce.cache.study_units``) and
shared with ``reproduce.layer_selection``: committed, a study longer than one sitting resumes on any clone.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from reproduce import pretrained
from reproduce.cache import study_units, units_summary
from reproduce.experiment import Experiment, Measured, Options
from reproduce.figures import save_figure, subplots
from reproduce.recipe import Recipe, scratch
from reproduce.tables import fmt, markdown, mean_sd, shown, tokens_line
from reproduce.verdict import SMALLEST_BPB, Finding
from tinylm.artifacts.cache import cache_key
from tinylm.artifacts.io import default_cache_dir
from tinylm.artifacts.model_dir import load_config, load_model_dir, model_fingerprint
from tinylm.inherit import resolve_target
from tinylm.inherit.layers import bits_per_byte
from tinylm.inherit.mask_learner import MaskLearner
from tinylm.inherit.pipeline import Calibration, inherit
from tinylm.model import ModelConfig, Transformer
from tinylm.tokenizer import load_tokenizer
from tinylm.vocab.compact import compact_model

# the code behind each cache (its keys carry these modules' version, so changed code recomputes)
COMPACT_CODE = ["tinylm.vocab.compact", "tinylm.vocab.counting", "tinylm.vocab.choose", "tinylm.vocab.bpe",
                "tinylm.vocab.remap"]
RUN_CODE = ["reproduce.inheritance", "reproduce.recipe", "tinylm.inherit.importance", "tinylm.inherit.layers",
            "tinylm.inherit.materialize", "tinylm.inherit.mask_learner", "tinylm.inherit.learned",
            "tinylm.inherit.pipeline", "tinylm.training.lm", "tinylm.training.fit", "tinylm.model.transformer",
            "tinylm.model.scoring"]

CORPUS = "builtin:wiki"  # English, like SmolLM2's pretraining; its every 50th document is the held-out sample


@dataclass(frozen=True)
class GentleCut:
    """A second child, ~5× smaller than its source as the paper's 7B → 1B: Taylor vs scratch (plan v3)."""

    target: dict[str, int]  # the child's shape fields that differ from the source's
    seeds: int  # at most this many of the run's seeds


@dataclass(frozen=True, kw_only=True)
class Scale(Recipe):
    """The child's training recipe (the built-in ``wiki`` training documents, as the held-out sample's corpus) and
    how the source is cut down to it; ``vocab_size`` is the size the source's tokenizer is compacted to."""

    sources: tuple[str, ...] = (CORPUS,)
    val_batches: int | float = 1  # one validation batch: the score is the fixed held-out sample's, not Lightning's
    val_every: int = pretrained.SAMPLE_EVERY
    target: dict[str, int] | str  # the child's shape: the source's fields that change, or a preset name
    mask_steps: int  # Learned's mask-learning steps (weights trained too), out of its budget of ``steps``
    calibration: int  # Taylor's calibration blocks of ``seq_len`` tokens
    heldout_bytes: int  # the fixed held-out sample's size (``reproduce.pretrained``)
    gentle: GentleCut | None = None


SCALES = {
    "smoke": Scale(vocab_size=400, target=dict(hidden_size=32, num_layers=3, num_heads=1, intermediate_size=86),
                   steps=6, mask_steps=2, lr=3e-3, seq_len=32, batch_size=4, calibration=4, heldout_bytes=2_000,
                   sources=("builtin:lee",),  # the small Lee slice keeps CI fast
                   gentle=GentleCut(target=dict(hidden_size=64, num_layers=4, num_heads=2, num_kv_heads=1,
                                                intermediate_size=128), seeds=1)),
    # SmolLM2-135M (30 × 576) → 8 layers × 256 (4 heads of 64, 2 KV heads), 8k vocab; plan v3: 1M training tokens
    # per arm (1,000 steps × 8 × 128), ≥ 100k held-out tokens (every 5th wiki document held out, 520 KB), ~12 min
    # a run on one core; the gentle cut: 16 layers × 384 (~28M parameters, 4.8× smaller than the source, as the
    # paper's 7B → 1B), Taylor vs scratch, 3 seeds (~35 min a run)
    "small": Scale(vocab_size=8_000, target=dict(hidden_size=256, num_layers=8, num_heads=4, num_kv_heads=2,
                                                 intermediate_size=688),
                   steps=1_000, mask_steps=250, lr=1e-3, seq_len=128, batch_size=8, calibration=8,
                   heldout_bytes=520_000, val_every=5,
                   gentle=GentleCut(target=dict(hidden_size=384, num_layers=16, num_heads=6, num_kv_heads=2,
                                                intermediate_size=1024), seeds=3)),
    # the paper: PanGu-π-7B → PanGu-π-1B Pro (GPU cluster; configured, not run here); its cut is itself the gentle one
    "paper": Scale(vocab_size=48_000, target="pangu-pi-1b-pro", steps=50_000, mask_steps=3_200, lr=1e-4, seq_len=2048,
                   batch_size=32, calibration=10, heldout_bytes=1_000_000),
}

PAPER = {  # ARC-E, HellaSwag, C3, Avg. [P]
    "base": (36.68, 40.34, 49.15, 42.06), "l1": (39.51, 47.70, 50.96, 46.06), "l2": (41.98, 48.33, 50.68, 47.00),
    "taylor": (43.21, 48.43, 52.05, 47.90), "learned": (40.74, 51.77, 51.73, 48.08),
}
VARIANTS = ("base", "l1", "l2", "taylor", "learned")
ARM = {"base": "scratch", "l1": "both-ends", "l2": "l2", "taylor": "taylor", "learned": "learned"}  # cached runs
FINDINGS = (
    Finding("inherit_beats_init", "inheriting beats random init, even with the weakest criterion (L1 46.06 vs Base "
            "42.06 avg.)", "P", "held-out bpb", ("l1", "base"), smallest_effect=SMALLEST_BPB),
    Finding("criteria_order", "criteria rank Learned > Taylor > L2 > L1 > Base (48.08, 47.90, 47.00, 46.06, 42.06 "
            "avg.)", "P", "held-out bpb", ("learned", "taylor", "l2", "l1", "base"),
            smallest_effect=SMALLEST_BPB),
    Finding("criteria_order_step0", "the same ranking holds right after inheritance (step 0: what each criterion "
            "kept)", "P", "held-out bpb at step 0", ("learned", "taylor", "l2", "l1", "base"),
            smallest_effect=SMALLEST_BPB),
    Finding("gentle_inherit_beats_init", "at a gentle cut (a child ~5× smaller than its source, as the paper's 7B → "
            "1B), Taylor inheritance beats random init (plan v3)", "P", "held-out bpb", ("taylor", "base"),
            smallest_effect=SMALLEST_BPB),
)


def compact_source(scale: str, given: Path | None, vocab_size: int, corpus: str = CORPUS) -> tuple[Path, dict]:
    """The pretrained source with its tokenizer compacted to ``vocab_size`` (counted on the ``wiki`` training
    documents) and its embedding rows remapped, cached; plus the compaction record, whose ``key`` names the compact
    source by content (the same on every machine, for the study units built on it)."""
    source = pretrained.source(scale, given)
    key = cache_key(model_fingerprint(source), vocab_size, corpus, modules=COMPACT_CODE)
    folder = Path(default_cache_dir()) / "reproduce" / f"compact-source-{key}"
    if not (folder / "source" / "config.json").is_file():
        compact_model(source, [corpus], folder, vocab_size=vocab_size, workers=1, verify_chars=200_000,
                      overwrite=True)
    record = json.loads((folder / "tokenizer" / "compact.json").read_text())
    record.pop("id_map", None)
    return folder / "source", {"parent": str(source), **record, "key": key}


def init_dir(arm: str, source: Path, shape: ModelConfig, setting: Scale, root: Path,
             seed: int) -> tuple[Path | None, int]:
    """The child's initial model dir for one arm (None: random init) and the data tokens spent building it.
    Layer arms (first, last, both-ends, uniform) keep widths by L1; l2, taylor and learned keep both-ends."""
    if arm == "scratch":
        return None, 0
    if arm == "learned":  # masks learned on the both-ends layers at full width, weights trained too
        layers = inherit(source, {"num_layers": shape.num_layers}, root / "layers", layers="both-ends",
                         criterion="l1", seed=seed)
        target = {k: getattr(shape, k) for k in ("hidden_size", "num_heads", "num_kv_heads", "intermediate_size",
                                                 "num_layers")}
        learner = MaskLearner(source=str(layers.model_dir), target=target, lr=setting.lr, mask_lr=0.1,
                              lambda_lr=0.1, target_warmup=0.5, model_dir=str(root / "init"))
        trained = setting.fit(setting.data(seed, source), root / "masks", seed, steps=setting.mask_steps,
                              module=learner)
        return root / "init", trained.tokens
    both_ends = arm in ("l2", "taylor")
    text = Calibration(lambda _: setting.data(seed, source), setting.calibration, setting.seq_len)
    child = inherit(source, shape, root / "init", layers="both-ends" if both_ends else arm,
                    criterion=arm if both_ends else "l1", calibration=text, seed=seed)
    return child.model_dir, child.calibration_tokens


def run_arm(arm: str, seed: int, source: Path, shape: ModelConfig, setting: Scale) -> dict[str, Any]:
    """One (arm, seed): step-0 and trained held-out bpb, tokens, curve, seconds."""
    start = time.perf_counter()
    tokenizer = load_tokenizer(source / "tokenizer.json")  # the compact one: held-out blocks and bytes per token
    blocks = pretrained.heldout_blocks(tokenizer, setting.heldout_bytes, setting.seq_len, setting.val_every)
    token_bytes = torch.from_numpy(tokenizer.token_bytes)
    with scratch(f"inherit-{arm}") as work:
        init, seen = init_dir(arm, source, shape, setting, work, seed)
        if init is None:
            torch.manual_seed(seed)
        first = Transformer(shape) if init is None else load_model_dir(init, with_tokenizer=False)[0]
        step0 = bits_per_byte(first.eval(), blocks, token_bytes)
        steps = setting.steps - (setting.mask_steps if arm == "learned" else 0)  # equal token budgets
        trained = setting.fit(setting.data(seed, source), work / "train", seed, config=shape, steps=steps,
                              init_from=init and str(init))
        final = bits_per_byte(trained.module.net.eval(), blocks, token_bytes)
    return {"arm": arm, "seed": seed, "step0_bpb": step0, "bpb": final, "tokens": seen + trained.tokens,
            "calibration_tokens": seen, "curve": [(t + seen, loss) for t, loss in trained.curve],
            "seconds": time.perf_counter() - start}


def runs(arms: Sequence[str], setting: Scale,
         options: Options) -> tuple[dict[str, list[dict]], Path, ModelConfig, dict]:
    """Every arm at every seed (seed-major, so a cut-short run has whole seeds), each a study unit kept under
    ``<out>/units/`` (shared with ``reproduce.layer_selection``), the compact source, the child's shape and the
    compaction record (with the units' summary)."""
    source, record = compact_source(options.scale, options.source, setting.vocab_size, setting.corpus)
    shape = resolve_target(setting.target, load_config(source))
    key = cache_key(record["key"], str(shape), dataclasses.asdict(setting), options.scale, modules=RUN_CODE)
    jobs = {f"{arm}-seed{seed}": functools.partial(run_arm, arm, seed, source, shape, setting)
            for seed in range(options.seeds) for arm in arms}
    done = study_units(options.out, "inherit-runs", key, jobs)
    out = {arm: [done[f"{arm}-seed{seed}"] for seed in range(options.seeds)] for arm in arms}
    return out, source, shape, {**record, "units": units_summary(done)}


def measured(done: dict[str, list[dict]]) -> tuple[dict, dict, dict, dict, dict]:
    """Per arm: trained and step-0 bpb per seed, tokens, the first seed's curve and the mean seconds per run."""
    return ({a: [r["bpb"] for r in runs] for a, runs in done.items()},
            {a: [r["step0_bpb"] for r in runs] for a, runs in done.items()},
            {a: runs[0]["tokens"] for a, runs in done.items()}, {a: runs[0]["curve"] for a, runs in done.items()},
            {a: f"{mean_sd([r['seconds'] for r in runs])[0]:.0f}" for a, runs in done.items()})


def gentle_cut(setting: Scale, options: Options) -> tuple[dict[str, list[float]], list[str], dict]:
    """Taylor vs scratch at the scale's gentle cut (a child ~5× smaller than the source) over its own seeds: the
    finding's arms, the table's lines and a record; nothing when the scale declares no gentle cut."""
    if setting.gentle is None:
        return {}, [], {}
    seeds = min(options.seeds, setting.gentle.seeds)
    done, _, shape, record = runs(("taylor", "scratch"),
                                  dataclasses.replace(setting, target=setting.gentle.target),
                                  dataclasses.replace(options, seeds=seeds))
    final, step0, tokens, _, seconds = measured({"taylor": done["taylor"], "base": done["scratch"]})
    lines = ["", f"**Gentle cut** (plan v3): child {shape.num_layers} layers × {shape.hidden_size} "
             f"({shape.num_params() / 1e6:.1f} M parameters), {seeds} seed(s), same recipe and tokens:", "",
             *markdown(("Strategy", "step-0 bpb ↓", "bpb after budget ↓", "tokens seen", "wall s / run"),
                       ((v, fmt(statistics.fmean(step0[v]), 3), fmt(statistics.fmean(final[v]), 3),
                         f"{tokens[v]:,}", seconds[v]) for v in ("taylor", "base")))]
    return final, lines, {"child": shown(str(shape)), "seeds": seeds, "bpb": final, "step0_bpb": step0,
                          "tokens": tokens, "units": record["units"]}


def measure(setting: Scale, options: Options, folder: Path) -> Measured:
    done, source, shape, record = runs([ARM[v] for v in VARIANTS], setting, options)
    gentle, gentle_lines, gentle_record = gentle_cut(setting, options)
    final, step0, tokens, curves, seconds = measured({v: done[ARM[v]] for v in VARIANTS})
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    lines = markdown(("Strategy", "ours: step-0 bpb ↓", "ours: bpb after budget ↓", "tokens seen", "wall s / run",
                      "paper ARC-E [P]", "paper HellaSwag [P]", "paper C3 [P]", "paper Avg. [P]"),
                     ((v, fmt(mean(step0[v]), 3), fmt(mean(final[v]), 3), f"{tokens[v]:,}", seconds[v],
                       *(fmt(x) for x in PAPER[v])) for v in VARIANTS))
    table = "\n".join(lines) + (
        f"\n\nSeed means over {options.seeds} seed(s); held-out bpb on the fixed `{CORPUS}` sample "
        f"(≥ {setting.heldout_bytes:,} bytes, `reproduce.pretrained`), lower is better; the paper's columns are "
        f"accuracy. Source: {shown(record['parent'])} with its tokenizer compacted "
        f"{record['parent_vocab_size']:,} → {record['vocab_size']:,} pieces (covering "
        f"{100 * record['counted_coverage']:.2f}% of the counted `{setting.corpus}` training tokens) → "
        "child "
        f"{shape.num_layers} layers × {shape.hidden_size} ({shape.num_heads} heads of {shape.head_dim}, "
        f"{shape.num_kv_heads} KV, FFN {shape.intermediate_size}; {shape.num_params() / 1e6:.1f} M parameters), "
        f"both-ends layers for every criterion; {setting.steps} steps × {setting.batch_size} × {setting.seq_len} "
        f"tokens at lr {setting.lr}, Learned's first {setting.mask_steps} of them learning masks (weights trained too; "
        "its step 0 is after them). Benchmarks are not run: a child trained for minutes is at chance on them. "
        + tokens_line(tokens) + "\n" + "\n".join(gentle_lines))
    return Measured(table, {"inherit_beats_init": final, "criteria_order": final, "criteria_order_step0": step0,
                            "gentle_inherit_beats_init": gentle},
                    rows=[{"strategy": v, "bpb": final[v], "step0_bpb": step0[v], "mean_bpb": mean(final[v])}
                          for v in VARIANTS], tokens=tokens, figures=[plot(curves, folder)],
                    extra={"curves": curves, "units": record.pop("units"), "compaction": record,
                           "child": shown(str(shape)),
                           "gentle": gentle_record})


def plot(curves: dict[str, list[tuple[float, float]]], folder: Path) -> str:
    fig, ax = subplots(figsize=(6, 4))
    for name, curve in curves.items():
        ax.plot([s for s, _ in curve], [x for _, x in curve], label=name)
    ax.set(xlabel="training tokens", ylabel="training loss")
    ax.legend()
    return save_figure(fig, folder, "loss_curves.png")


EXPERIMENT = Experiment(
    "inheritance", "Base / L1 / L2 / Taylor / Learned inheritance (§2, the printed table)", SCALES, FINDINGS, measure,
    paper={v: dict(zip(("arc_e", "hellaswag", "c3", "avg"), PAPER[v])) for v in VARIANTS},
    core_hours={"small": 8.5})
