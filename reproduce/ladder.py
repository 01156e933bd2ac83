"""Figure 1: the improvement ladder, each step at the same token budget.

    base        random init, the big inherited tokenizer, a wide-shallow shape
    +tokenizer  the big tokenizer compacted to its most frequent pieces (the paper's 48k of 100,883), same body
    +arch       the parameters freed by the compact vocabulary re-spent on depth (same total as base)
    +inherit    +arch inherited from a larger, longer-trained model with the big tokenizer (Taylor, both-ends layers,
                embedding and head rows remapped to the compact vocabulary)
    +rounds     as +inherit, trained in two rounds, the second on the hardest 50% of the batches

The big tokenizer is mistral-common's 32,000 pieces (trained on other text, standing in for PanGu's 100,883), so
compacting drops a real long tail; smoke scale trains a small one instead. Every step trains one pass plus a half
pass (what two rounds at 50% cost), so +rounds gets no extra compute. Scores: held-out bpb and, with the benchmark
files, ARC-E / HellaSwag / C3 on a ``limit``. Model dirs stay under ``$TINYLM_CACHE/ladder/<scale>/`` for
``reproduce/final.py``. Seeds vary init, data order, the rounds' draws and Taylor's calibration sample; the source
model is shared. At small scale every fourth document is held out.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reproduce.experiment import (Experiment, Measured, Options, Recipe, fmt, markdown, mean_sd, save_figure, subplots,
                                  scratch, tokens_line)
from reproduce.verdict import Finding
from tinylm.datamodule import TextDataModule, default_cache_dir
from tinylm.model import ModelConfig
from tinylm.tokenizer import Tokenizer

STEPS = ("base", "+tokenizer", "+arch", "+inherit", "+rounds")
PAPER = {"base": 42.41, "+tokenizer": 44.11, "+arch": 46.53, "+inherit": 49.79, "+rounds": 51.28}  # [R] Figure 1
ABLATION_TASKS = ("arc_easy", "hellaswag", "c3")
PAPER_FRACTION = 48_000 / 100_883  # the compact tokenizer keeps this share of the big one's pieces [R]
FINDINGS = (
    *(Finding(f"step_{after.strip('+')}", f"{after} improves on {before} (held-out bpb; paper {PAPER[before]:.2f} → "
              f"{PAPER[after]:.2f})", "R", "held-out bpb", (after, before))
      for before, after in itertools.pairwise(STEPS)),
    Finding("whole_recipe", f"the whole recipe (+rounds) improves on the base (paper {PAPER['base']:.2f} → "
            f"{PAPER['+rounds']:.2f})", "R", "held-out bpb", ("+rounds", "base")),
)


@dataclass(frozen=True, kw_only=True)
class Scale(Recipe):
    big_vocab: int | None  # None: mistral-common's inherited 32k tokenizer; a size: train one (smoke only)
    base: dict  # wide-shallow
    deep: dict  # the freed parameters spent on depth
    source: dict  # the larger model to inherit from (big tokenizer)
    source_steps: int = 100
    eval_limit: int | None = 20


SCALES = {
    "smoke": Scale(sources=("builtin:lee",), big_vocab=2000,
                   base=dict(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=176),
                   deep=dict(hidden_size=64, num_layers=4, num_heads=2, intermediate_size=176),
                   source=dict(hidden_size=96, num_layers=6, num_heads=3, head_dim=32, intermediate_size=256),
                   source_steps=60, batch_size=16, eval_limit=10),
    # sized for 2 CPU cores: the built-in Lee corpus (~80k tokens a pass), mistral's 32k → 15,226 pieces;
    # base 14.1M parameters (87% of them embedding + head), +arch re-spends the 6.4M freed on 14 more layers
    "small": Scale(sources=("builtin:lee",), big_vocab=None,
                   base=dict(hidden_size=192, num_layers=4, num_heads=6, intermediate_size=512),
                   deep=dict(hidden_size=192, num_layers=18, num_heads=6, intermediate_size=512),
                   source=dict(hidden_size=224, num_layers=24, num_heads=7, intermediate_size=608),
                   source_steps=200, seq_len=128, lr=2e-3, eval_limit=100, val_every=4),
    # PanGu-π-1B (2048 × 12, 100k vocab) → 1B Pro (1792 × 21, 48k), inherited from the 7B shape; configured only
    "paper": Scale(big_vocab=100883, base=dict(hidden_size=2048, num_layers=12, num_heads=16),
                   deep=dict(hidden_size=1792, num_layers=21, num_heads=14),
                   source=dict(hidden_size=4096, num_layers=29, num_heads=32),
                   source_steps=0, seq_len=2048, lr=1e-4, eval_limit=None),
}


def big_tokenizer(scale: Scale) -> Tokenizer:
    """The inherited tokenizer (mistral's 32k), or at smoke scale one of ``big_vocab`` trained on the corpus."""
    from reproduce.coverage import mistral_tokenizer

    if scale.big_vocab is None:
        return mistral_tokenizer()
    return TextDataModule(list(scale.sources), vocab_size=scale.big_vocab).resolve_tokenizer()


def source_model(scale: Scale, big: TextDataModule, cache: Path, runs: Path) -> Path:
    """The larger model to inherit from, trained with the big tokenizer (once per scale: it is the given
    pretrained model, like the paper's PanGu-π-7B, not part of any step's budget)."""
    settings = [big.tokenizer.sha256, scale.corpus, scale.source, scale.source_steps, scale.seq_len,
                scale.batch_size, scale.lr, scale.val_every]
    folder = cache / f"source-{hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]}"
    if not (folder / "model.safetensors").is_file():
        scale.fit(big, runs / "source", 0, config=ModelConfig(**scale.source), steps=scale.source_steps,
                  reload_dataloaders_every_n_epochs=1)
        shutil.move(runs / "source" / "model", folder)
    return folder


def ablation_scores(model_dir: Path, limit: int | None) -> dict[str, float] | None:
    """Accuracy on ARC-E / HellaSwag / C3 (acc_norm where lm-eval reports it), or None without the data."""
    from tinylm.errors import TinyLMError

    try:
        from tinylm.evaluation.adapter import TinyLMEval
        from tinylm.evaluation.command import run_tasks

        results = run_tasks(TinyLMEval(str(model_dir), batch_size=16, device="cpu"), list(ABLATION_TASKS),
                            limit=limit)["results"]
    except TinyLMError as err:
        print(f"ladder: ablation tasks skipped ({err})")
        return None
    scores = {task: 100 * results[task].get("acc_norm,none", results[task].get("acc,none")) for task in ABLATION_TASKS}
    scores["avg"] = statistics.fmean(scores[t] for t in ABLATION_TASKS)
    return scores


def run_seed(scale: Scale, seed: int, big_path: Path, compact_dir: Path, cache: Path,
             runs: Path) -> dict[str, dict[str, Any]]:
    """Train every step of the ladder for one seed; the model dirs are kept under ``cache/seed<seed>/``."""
    from tinylm.inherit.command import inherit
    from tinylm.rounds import MultiRoundTraining

    big, small = scale.data(seed, big_path), scale.data(seed, compact_dir / "tokenizer.model")
    rounds = MultiRoundTraining(rounds=2, rate=0.5, seed=seed, out_dir=str(runs / f"rounds-{seed}"))
    budget = sum(rounds.round_steps(small.num_train_blocks, scale.batch_size))  # one pass + a half pass
    base, deep = ModelConfig(**scale.base), ModelConfig(**scale.deep)
    out: dict[str, dict[str, Any]] = {}

    def step(name: str, config: ModelConfig, data: TextDataModule, init_from: str | None = None,
             callbacks: tuple = ()) -> None:
        root = runs / f"step-{name.strip('+')}-{seed}"
        trained = scale.fit(data, root, seed, config=config, steps=budget,
                            init_from=init_from, callbacks=callbacks, reload_dataloaders_every_n_epochs=1)
        kept = cache / f"seed{seed}" / name.strip("+")
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(kept, ignore_errors=True)
        shutil.move(root / "model", kept)
        config = config.with_vocab(data.tokenizer.vocab_size)
        out[name] = {"bpb": trained.bpb, "params": config.num_params(), "embedding_share": config.embedding_share(),
                     "vocab": config.vocab_size, "shape": f"L{config.num_layers}-d{config.hidden_size}",
                     "model_dir": str(kept), "tokens": budget * scale.batch_size * scale.seq_len}

    step("base", base, big)
    step("+tokenizer", base, small)
    step("+arch", deep, small)
    inherited = runs / f"inherited-{seed}"
    inherit(source=str(source_model(scale, big, cache, runs)), target=str(cache / f"seed{seed}" / "arch"),
            out=str(inherited), layers="both-ends", criterion="taylor", calibration=scale.sources[0],
            seq_len=scale.seq_len, keep_ids=str(compact_dir / "compact.json"),
            tokenizer=str(compact_dir / "tokenizer.model"), seed=seed)
    step("+inherit", deep, small, init_from=str(inherited))
    step("+rounds", deep, small, init_from=str(inherited), callbacks=(rounds,))
    return out


def measure(settings: Scale, options: Options, folder: Path) -> Measured:
    from reproduce.tokenizer import cut

    scale, seeds = options.scale, options.seeds
    if scale == "paper":
        raise SystemExit("ladder --scale paper needs the 1.6T-token corpus and a GPU cluster; run each step with "
                         "`tinylm fit --config recipes/pretrain/pangu-pi-1b-pro.yaml` and `tinylm inherit` instead")
    cache = Path(default_cache_dir()) / "ladder" / scale
    big = big_tokenizer(settings)
    compact_dir, compacted = cut(big, settings.corpus, round(big.vocab_size * PAPER_FRACTION))
    tokenizers = {"big": big.vocab_size, "compact": compacted["vocab_size"],
                  "coverage": compacted["counted_coverage"], "inflation": compacted["verify"]["inflation"]}
    with scratch("ladder") as runs:
        per_seed = [run_seed(settings, seed, big.path, compact_dir, cache, runs) for seed in range(seeds)]
    rows = []
    for step in STEPS:
        bpbs = [s[step]["bpb"] for s in per_seed]
        tasks = [ablation_scores(Path(s[step]["model_dir"]), settings.eval_limit) for s in per_seed]
        averages = [t["avg"] for t in tasks if t is not None]
        rows.append({"step": step, **{key: per_seed[0][step][key] for key in ("shape", "vocab", "params",
                                                                               "embedding_share", "tokens")},
                     **dict(zip(("bpb", "bpb_sd"), mean_sd(bpbs))), "bpb_seeds": bpbs,
                     "ablation_avg": mean_sd(averages)[0] if averages else None, "ablation_seeds": averages,
                     "tasks": tasks, "model_dirs": [s[step]["model_dir"] for s in per_seed], "paper": PAPER[step]})
    big = "mistral-common's inherited" if settings.big_vocab is None else "a corpus-trained (smoke)"
    lines = [f"Corpus `{settings.corpus}`; {big} {tokenizers['big']:,}-piece tokenizer → compact "
             f"{tokenizers['compact']:,} pieces (the paper's 48k-of-100,883 share), covering "
             f"{100 * tokenizers['coverage']:.2f}% of the counted tokens, sequences {tokenizers['inflation']:.3f}× "
             f"as long; every step {rows[0]['tokens']:,} training tokens; {seeds} seed(s). bpb: held-out bits per "
             f"byte (lower is better). Tasks: ARC-E / HellaSwag / C3 average accuracy on {settings.eval_limit} "
             "items each (near chance for models this small). Paper: the ten-benchmark average of Figure 1 [R].",
             "", *markdown(("step", "shape", "vocab", "params", "emb+head share", "bpb (ours)", "seed sd",
                            "ablation avg (ours)", "paper avg [R]"),
                           ((r["step"], r["shape"], f"{r['vocab']:,}", f"{r['params'] / 1e6:.2f}M",
                             f"{100 * r['embedding_share']:.1f}%", f"{r['bpb']:.4f}", fmt(r["bpb_sd"], 4),
                             fmt(r["ablation_avg"]), f"{r['paper']:.2f}") for r in rows)),
             "", tokens_line({r["step"]: r["tokens"] for r in rows})]
    arms = {r["step"]: r["bpb_seeds"] for r in rows}
    return Measured("\n".join(lines), {f.key: arms for f in FINDINGS}, rows=rows,
                    tokens={r["step"]: r["tokens"] for r in rows}, figures=[plot(rows, folder)],
                    extra={"tokenizers": tokenizers})


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
                        paper={"average": PAPER, "tag": "R"})
