"""Figure 1: the improvement ladder, each step at the same training-token budget.

    base        random init, the big tokenizer of the pretrained source, a wide-shallow shape
    +tokenizer  the big tokenizer compacted to its most frequent pieces (the paper's 48k of 100,883 share), same body
    +arch       the parameters freed by the compact vocabulary re-spent on depth (same total as base)
    +inherit    +arch's shape inherited from the pretrained source with its tokenizer compacted the same way
                (Taylor widths, both-ends layers), as the paper inherits PanGu-π-1B Pro from PanGu-π-7B
    +rounds     as +inherit, trained in two rounds, the second on the hardest 50% of the batches

Small scale: SmolLM2-135M (``reproduce.pretrained``; ``--source DIR`` for another) and its 49,152-piece byte-level
BPE are the pretrained source and the big tokenizer; smoke scale uses the tiny random-init stand-in. The text is the
whole built-in corpus (English Bible, Wikipedia, Lee, People's Daily): each seed draws its own training sample
from it and every seed scores the same held-out documents (every 50th, the first of each part). Every step trains
the same number of steps on that sample — one pass plus a half pass of the compact tokenization, what two rounds at
50% cost — so +rounds gets no extra compute; Taylor's calibration tokens are stated beside the budget. Scores:
held-out bpb and, with the benchmark files, ARC-E / HellaSwag / C3 on a ``limit``. Model dirs stay under
``$TINYLM_CACHE/ladder/<scale>-<code version>/`` for ``reproduce/final.py``. Each seed (its five
step models and their scores) is a study unit kept under ``<out>/units/`` as it finishes
(``reproduce.cache.study_units``): two processes share the seeds, and a run cut short resumes at the next seed. Seeds vary the sample, init, data order, the rounds'
draws and Taylor's calibration blocks; the source is one model, like the paper's 7B.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reproduce import pretrained
from reproduce.cache import study_units, units_summary
from reproduce.experiment import Experiment, Measured, Options
from reproduce.figures import save_figure, subplots
from reproduce.inheritance import compact_source
from reproduce.recipe import Recipe, scratch
from reproduce.tables import fmt, markdown, mean_sd, shown, tokens_line
from reproduce.verdict import SMALLEST_BPB, Finding
from tinylm.artifacts.cache import cache_key, code_version
from tinylm.artifacts.io import default_cache_dir
from tinylm.artifacts.model_dir import load_config
from tinylm.errors import TinyLMError
from tinylm.evaluation.command import run_tasks
from tinylm.evaluation.datasets import DATA_ENV, has_benchmark
from tinylm.evaluation.tasks import ABLATION_TASKS
from tinylm.inherit import resolve_target
from tinylm.inherit.pipeline import Calibration, inherit
from tinylm.pro.data import write_sample
from tinylm.training.rounds import MultiRoundTraining

# the code that builds and trains the ladder's step models (its cache folder carries their version)
LADDER_CODE = ("reproduce.ladder", "reproduce.recipe", "tinylm.vocab.compact", "tinylm.inherit.importance",
               "tinylm.inherit.materialize", "tinylm.inherit.pipeline", "tinylm.training.lm", "tinylm.training.rounds",
               "tinylm.training.fit", "tinylm.model.transformer")
# the code that scores a step model on the ablation benchmarks (kept in the seed's unit with its bpb)
ABLATION_CODE = ("tinylm.evaluation.adapter", "tinylm.evaluation.datasets", "tinylm.evaluation.command",
                 "tinylm.evaluation.tasks")

STEPS = ("base", "+tokenizer", "+arch", "+inherit", "+rounds")
PAPER = {"base": 42.41, "+tokenizer": 44.11, "+arch": 46.53, "+inherit": 49.79, "+rounds": 51.28}  # [R] Figure 1
PAPER_FRACTION = 48_000 / 100_883  # the compact tokenizer keeps this share of the big one's pieces [R]
HELDOUT_EVERY = 50  # every 50th document of each corpus part is held out
FINDINGS = (
    *(Finding(f"step_{after.strip('+')}", f"{after} improves on {before} (held-out bpb; paper {PAPER[before]:.2f} → "
              f"{PAPER[after]:.2f})", "R", "held-out bpb", (after, before), smallest_effect=SMALLEST_BPB)
      for before, after in itertools.pairwise(STEPS)),
    Finding("whole_recipe", f"the whole recipe (+rounds) improves on the base (paper {PAPER['base']:.2f} → "
            f"{PAPER['+rounds']:.2f})", "R", "held-out bpb", ("+rounds", "base"), smallest_effect=SMALLEST_BPB),
)


@dataclass(frozen=True, kw_only=True)
class Scale(Recipe):
    source_shape: dict  # the pretrained source this scale is sized for (its vocabulary is the big tokenizer)
    base: dict  # wide-shallow, with the big tokenizer
    deep: dict  # the parameters the compact tokenizer frees, spent on depth
    train_tokens: int = 0  # every step's training tokens (one pass + a half pass of its sample)
    heldout_chars: int = 40_000
    calibration: int = 8  # Taylor's calibration blocks of seq_len tokens
    compact_vocab: int | None = None  # None: the paper's share of the big tokenizer
    eval_limit: int | None = 20


SMOLLM2 = {"hidden_size": 576, "num_layers": 30, "num_heads": 9, "num_kv_heads": 3, "head_dim": 64,
           "intermediate_size": 1536, "vocab_size": 49_152, "tie_embeddings": True}
SCALES = {
    "smoke": Scale(sources=("builtin:lee",), source_shape={**pretrained.TINY, "vocab_size": 512, "head_dim": 32},
                   base=dict(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=172),
                   deep=dict(hidden_size=64, num_layers=3, num_heads=2, num_kv_heads=1, intermediate_size=172),
                   train_tokens=12_000, heldout_chars=4_000, seq_len=32, batch_size=8, calibration=2, eval_limit=4,
                   compact_vocab=400),  # a byte-level BPE keeps its 256 bytes: 400 of 512 here
    # sized for 2 CPU cores: SmolLM2's 49,152 pieces → 23,386; base 4 × 192 (11.0M parameters, 86% of them
    # embedding), +arch re-spends the 4.6M freed on 13 more layers (17 × 192, 11.2M); 3 heads of 64 as SmolLM2's
    "small": Scale(source_shape=SMOLLM2,
                   base=dict(hidden_size=192, num_layers=4, num_heads=3, num_kv_heads=1, intermediate_size=512),
                   deep=dict(hidden_size=192, num_layers=17, num_heads=3, num_kv_heads=1, intermediate_size=512),
                   train_tokens=150_000, seq_len=128, batch_size=8, lr=2e-3, eval_limit=100),
    # PanGu-π-1B (2048 × 12, 100k vocab) → 1B Pro (1792 × 21, 48k), inherited from the 7B shape; configured only
    "paper": Scale(source_shape=dict(hidden_size=4096, num_layers=29, num_heads=32, intermediate_size=11008,
                                     vocab_size=100_883),
                   base=dict(hidden_size=2048, num_layers=12, num_heads=16),
                   deep=dict(hidden_size=1792, num_layers=21, num_heads=14),
                   seq_len=2048, lr=1e-4, eval_limit=None),
}


@functools.cache
def _say_skipped(reason: str) -> None:
    """One line per run, not one per model, when the ablation benchmarks cannot be scored."""
    print(f"ladder: ablation tasks skipped, reported n/a ({reason})", flush=True)


def ablation_scores(model_dir: Path, limit: int | None) -> dict[str, float] | None:
    """Accuracy on ARC-E / HellaSwag / C3 (acc_norm where lm-eval reports it), or None without the data."""
    if missing := [task for task in ABLATION_TASKS if not has_benchmark(task)]:
        _say_skipped(f"no {', '.join(missing)} benchmark files; set ${DATA_ENV} to the paper's benchmark files")
        return None
    try:
        from tinylm.evaluation.adapter import TinyLMEval  # imports lm_eval (heavy): only when a model is scored

        results = run_tasks(TinyLMEval(str(model_dir), batch_size=16, device="cpu"), list(ABLATION_TASKS),
                            limit=limit, bootstrap_iters=0)["results"]
    except TinyLMError as err:
        _say_skipped(str(err))
        return None
    scores = {task: 100 * results[task].get("acc_norm,none", results[task].get("acc,none")) for task in ABLATION_TASKS}
    scores["avg"] = statistics.fmean(scores[t] for t in ABLATION_TASKS)
    return scores


def sample(scale: Scale, compact: Path, folder: Path, seed: int) -> Recipe:
    """The seed's training sample of the corpus (sized so one pass + a half pass is the budget, in compact tokens)
    with the fixed held-out documents interleaved, as the recipe every step trains with."""
    folder.mkdir(parents=True)
    record = write_sample(folder, list(scale.sources), "text", HELDOUT_EVERY, compact,
                          round(scale.train_tokens / 1.5), scale.heldout_chars, seed)
    return Recipe(sources=(str(folder / "train.jsonl"),), val_every=record["fit_val_every"], val_batches=1.0,
                  seq_len=scale.seq_len, batch_size=scale.batch_size, lr=scale.lr)


def run_seed(scale: Scale, seed: int, source: Path, big: Path, compact: Path, cache: Path,
             runs: Path) -> dict[str, dict[str, Any]]:
    """Train every step of the ladder for one seed; the model dirs are kept under ``cache/seed<seed>/``."""
    recipe = sample(scale, compact, runs / f"sample-{seed}", seed)
    with_big, with_compact = recipe.data(seed, big), recipe.data(seed, compact)
    rounds = MultiRoundTraining(rounds=2, rate=0.5, seed=seed, out_dir=str(runs / f"rounds-{seed}"))
    budget = sum(rounds.round_steps(with_compact.num_train_blocks, scale.batch_size))  # one pass + a half pass
    # RoPE, norms and tying follow the source in every step, so only what the ladder changes differs
    conventions = load_config(source)
    base = resolve_target(scale.base, conventions).with_vocab(with_big.tokenizer.vocab_size)
    deep = resolve_target(scale.deep, conventions).with_vocab(with_compact.tokenizer.vocab_size)
    out: dict[str, dict[str, Any]] = {}

    def step(name: str, config, data, init_from: Path | None = None, callbacks: tuple = (), extra: int = 0) -> None:
        root = runs / f"step-{name.strip('+')}-{seed}"
        trained = recipe.fit(data, root, seed, config=config, steps=budget, init_from=init_from and str(init_from),
                             callbacks=callbacks, reload_dataloaders_every_n_epochs=1)
        kept = cache / f"seed{seed}" / name.strip("+")
        kept.parent.mkdir(parents=True, exist_ok=True)
        if kept.exists():  # this step's own earlier model dir under the ladder cache, and nothing else
            if not (kept / "config.json").is_file():
                raise TinyLMError(f"{kept} exists and is not a ladder model dir; move it away and rerun")
            shutil.rmtree(kept)
        shutil.move(root / "model", kept)
        out[name] = {"bpb": trained.bpb, "params": config.num_params(), "embedding_share": config.embedding_share(),
                     "vocab": config.vocab_size, "shape": f"L{config.num_layers}-d{config.hidden_size}",
                     "model_dir": str(kept), "tokens": trained.tokens, "calibration_tokens": extra}

    step("base", base, with_big)
    step("+tokenizer", base.with_vocab(deep.vocab_size), with_compact)
    step("+arch", deep, with_compact)
    # both-ends layers, widths by Taylor scores on calibration blocks of the seed's training sample
    inherited = inherit(source, deep, runs / f"inherit-{seed}", layers="both-ends", criterion="taylor", seed=seed,
                        calibration=Calibration(lambda _: with_compact, scale.calibration, scale.seq_len))
    step("+inherit", deep, with_compact, init_from=inherited.model_dir, extra=inherited.calibration_tokens)
    step("+rounds", deep, with_compact, init_from=inherited.model_dir, callbacks=(rounds,),
         extra=inherited.calibration_tokens)
    return out


def measure(settings: Scale, options: Options, folder: Path) -> Measured:
    scale, seeds = options.scale, options.seeds
    if scale == "paper":
        raise SystemExit("ladder --scale paper needs the 1.6T-token corpus and a GPU cluster; run each step with "
                         "`tinylm fit --config recipes/pretrain/pangu-pi-1b-pro.yaml` and `tinylm inherit` instead")
    # the step models are kept per code version: a change to how they are built or trained rebuilds them
    cache = Path(default_cache_dir()) / "ladder" / f"{scale}-{code_version(*LADDER_CODE)}"
    parent = pretrained.source(scale, options.source)
    big_vocab = load_config(parent).vocab_size
    source, compacted = compact_source(scale, options.source,
                                       settings.compact_vocab or round(big_vocab * PAPER_FRACTION), settings.corpus)
    compact = source.parent / "tokenizer"
    scored = all(has_benchmark(task) for task in ABLATION_TASKS)

    def seed_unit(seed: int) -> dict[str, dict[str, Any]]:
        with scratch("ladder") as runs:
            steps = run_seed(settings, seed, source, parent, compact, cache, runs)
        return {name: {**step, "tasks": ablation_scores(Path(step["model_dir"]), settings.eval_limit)}
                for name, step in steps.items()}

    # each seed is a study unit: two processes share the seeds, and a cut-short run resumes at the next seed
    key = cache_key(compacted["key"], dataclasses.asdict(settings), scale, scored,
                    modules=(*LADDER_CODE, *ABLATION_CODE))
    done = study_units(options.out, "ladder-seeds", key,
                       {f"seed{seed}": functools.partial(seed_unit, seed) for seed in range(seeds)})
    per_seed = list(done.values())
    rows = []
    for step in STEPS:
        bpbs = [s[step]["bpb"] for s in per_seed]
        tasks = [s[step]["tasks"] for s in per_seed]
        averages = [t["avg"] for t in tasks if t is not None]
        rows.append({"step": step, **{key: per_seed[0][step][key] for key in ("shape", "vocab", "params",
                                                                               "embedding_share", "tokens",
                                                                               "calibration_tokens")},
                     **dict(zip(("bpb", "bpb_sd"), mean_sd(bpbs))), "bpb_seeds": bpbs,
                     "ablation_avg": mean_sd(averages)[0] if averages else None, "ablation_seeds": averages,
                     "tasks": tasks, "model_dirs": [s[step]["model_dir"] for s in per_seed], "paper": PAPER[step]})
    inflation = (compacted.get("verify") or {}).get("inflation")
    lines = [f"Corpus `{settings.corpus}` (a training sample per seed; the same held-out documents for all). Source "
             f"and big tokenizer: {shown(compacted['parent'])} ({big_vocab:,} pieces) → compact "
             f"{compacted['vocab_size']:,} pieces" + ("" if settings.compact_vocab else " (the paper's 48k-of-100,883 share)")
             + f", covering "
             f"{100 * compacted['counted_coverage']:.2f}% of the counted tokens"
             + (f", sequences {inflation:.3f}× as long" if inflation else "") + f"; every step {rows[0]['tokens']:,} "
             f"training tokens (+inherit and +rounds also read {rows[-1]['calibration_tokens']:,} calibration tokens "
             f"for Taylor's scores); {seeds} seed(s). bpb: held-out bits per byte (lower is better). Tasks: ARC-E / "
             f"HellaSwag / C3 average accuracy on {settings.eval_limit} items each (near chance for models this "
             "small). Paper: the ten-benchmark average of Figure 1 [R].",
             "", *markdown(("step", "shape", "vocab", "params", "emb+head share", "bpb (ours)", "seed sd",
                            "ablation avg (ours)", "paper avg [R]"),
                           ((r["step"], r["shape"], f"{r['vocab']:,}", f"{r['params'] / 1e6:.2f}M",
                             f"{100 * r['embedding_share']:.1f}%", f"{r['bpb']:.4f}", fmt(r["bpb_sd"], 4),
                             fmt(r["ablation_avg"]), f"{r['paper']:.2f}") for r in rows)),
             "", tokens_line({r["step"]: r["tokens"] for r in rows})]
    arms = {r["step"]: r["bpb_seeds"] for r in rows}
    return Measured("\n".join(lines), {f.key: arms for f in FINDINGS}, rows=rows,
                    tokens={r["step"]: r["tokens"] for r in rows}, figures=[plot(rows, folder)],
                    extra={"compaction": compacted, "units": units_summary(done)})


def plot(rows: list[dict[str, Any]], folder: Path) -> str:
    figure, (left, right) = subplots(1, 2, figsize=(9, 3.4))
    names = [r["step"] for r in rows]
    left.bar(names, [r["bpb"] for r in rows], color="tab:blue",
             yerr=[r["bpb_sd"] or 0 for r in rows], capsize=3)
    left.set_ylabel("ours: held-out bits/byte (lower is better)", fontsize=8)
    low = min(r["bpb"] for r in rows)
    left.set_ylim(low * 0.95, max(r["bpb"] for r in rows) * 1.02)
    right.bar(names, [r["paper"] for r in rows], color="tab:gray")
    right.set_ylabel("paper: ten-benchmark average [R]")
    right.set_ylim(40, 52)
    for axis in (left, right):
        axis.tick_params(axis="x", rotation=30)
    return save_figure(figure, folder, "ladder.png")


EXPERIMENT = Experiment("ladder", "Figure 1: the improvement ladder", SCALES, FINDINGS, measure,
                        paper={"average": PAPER, "tag": "R"},
                        core_hours={"small": 1.15})
