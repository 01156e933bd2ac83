"""Stage 5, the report: held-out bits per byte and benchmark scores of each model (every training seed's model
too), the arms compared seed by seed (mean difference, 95% t interval, paired p), ``report.md`` with the findings
in words, ``report.json`` and a figure of the loss curves."""

from __future__ import annotations

import csv
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from tinylm.artifacts.io import atomic_file
from tinylm.artifacts.model_dir import load_model_dir
from tinylm.artifacts.provenance import run_provenance
from tinylm.errors import TinyLMError
from tinylm.evaluation.adapter import TinyLMEval
from tinylm.evaluation.command import run_tasks
from tinylm.evaluation.stats import paired_t
from tinylm.model import ModelConfig, Transformer
from tinylm.model.scoring import block_nll, stream_blocks
from tinylm.pro.data import token_stream
from tinylm.pro.target import describe
from tinylm.tokenizer import load_tokenizer

ARM_NAMES = {"pro": "Pro (inherited + rounds)", "scratch": "scratch (same shape, same tokens)",
             "distill": "Pro + distill"}
SHORT_NAMES = {"pro": "Pro", "scratch": "scratch", "distill": "Pro + distill"}
# the arm pairs compared seed by seed: (arm, the arm it is measured against); the first is the headline
COMPARISONS = (("pro", "scratch"), ("distill", "pro"))


def model_name(arm: str, seed: int) -> str:
    """A trained model's row in the scores: its arm and its training seed."""
    return f"{ARM_NAMES[arm]}, seed {seed}"


def score_model(path: Path | None, tokenizer_dir: Path, shape: ModelConfig, seed: int, heldout: list[str],
             seq_len: int, tasks: list[str], limit: int | None, data_dir: str | None) -> dict[str, Any]:
    """Held-out bpb and benchmark scores of a model dir (``None``: a seeded random init of the target shape).

    Held-out bpb is ``tinylm.model.scoring``'s: the documents as one packed stream (each followed by EOS), every
    token after the first scored once, over the bytes those tokens stand for."""
    start = time.perf_counter()
    if path is None:
        model = Transformer(shape)
        model.reset_parameters(seed)
    else:
        model, _ = load_model_dir(path, with_tokenizer=False)
    tokenizer = load_tokenizer(tokenizer_dir if path is None else path)
    model.eval()
    # before the shared scoring the bytes were the documents' own (a SentencePiece dummy-prefix space a document
    # more now), which moved reported numbers slightly
    blocks = stream_blocks(token_stream(tokenizer, heldout), seq_len)
    bpb = block_nll(model, blocks, torch.from_numpy(tokenizer.token_bytes), batch_size=8).bits_per_byte
    scores = benchmark_scores(model, tokenizer, tasks, limit, data_dir)
    return {"params": model.config.num_params(), "embedding_share": model.config.embedding_share(),
            "vocab_size": model.config.vocab_size, "layers": model.config.num_layers,
            "hidden_size": model.config.hidden_size, "bpb": bpb, "tasks": scores,
            "seconds": round(time.perf_counter() - start, 1)}


def benchmark_scores(model: Transformer, tokenizer, tasks: list[str], limit: int | None,
                     data_dir: str | None) -> dict[str, float | None]:
    """Accuracy (acc_norm where lm-eval reports it) ×100 per task, None for a task whose files are missing."""
    if not tasks:
        return {}
    try:
        results = run_tasks(TinyLMEval(model, tokenizer=tokenizer, batch_size=16), tasks, limit=limit,
                            data_dir=data_dir, bootstrap_iters=0)["results"]
    except TinyLMError as err:
        print(f"tinylm pro: benchmarks skipped, reported n/a ({err})", flush=True)
        return {task: None for task in tasks}
    scores = {}
    for task in tasks:
        row = results.get(task, {})
        value = row.get("acc_norm,none", row.get("acc,none"))
        scores[task] = 100 * value if isinstance(value, (int, float)) else None
    return scores


def tokenizer_line(result: dict[str, Any]) -> str:
    inflation = f", sequences {result['inflation']:.3f}× as long" if result.get("inflation") else ""
    return (f"kept {result['vocab_size']:,} of {result['source_vocab']:,} pieces, covering "
            f"{100 * result['counted_coverage']:.2f}% of the counted tokens "
            f"(target {100 * result['coverage_target']:.2f}%){inflation}")


def loss_curve(folder: Path) -> dict[str, list[float]]:
    """Step-wise train loss and the val/bpb points from a training arm's CSV log."""
    curve: dict[str, list[float]] = {"step": [], "loss": [], "val_step": [], "val_bpb": []}
    for path in sorted(folder.glob("logs/version_*/metrics.csv")):
        with open(path) as handle:
            for row in csv.DictReader(handle):
                if row.get("train/loss"):
                    curve["step"].append(int(row["step"]))
                    curve["loss"].append(float(row["train/loss"]))
                if row.get("val/bpb"):
                    curve["val_step"].append(int(row["step"]))
                    curve["val_bpb"].append(float(row["val/bpb"]))
    return curve


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def seed_comparisons(heldout: dict[str, dict[int, float]]) -> dict[str, dict[str, Any]]:
    """Each of ``COMPARISONS`` whose arms both trained, over the seeds they share: ``paired_t`` of the per-seed
    held-out bpb differences (arm − the arm it is measured against; negative: the arm is better), plus the arms'
    means and the seeds."""
    compared = {}
    for arm, other in COMPARISONS:
        seeds = sorted(set(heldout.get(arm, {})) & set(heldout.get(other, {})))
        if seeds:
            label = f"{SHORT_NAMES[arm]} − {SHORT_NAMES[other]}"
            compared[label] = {"arm": arm, "against": other, "seeds": seeds,
                               "arm_mean": statistics.fmean(heldout[arm][s] for s in seeds),
                               "against_mean": statistics.fmean(heldout[other][s] for s in seeds),
                               **paired_t([heldout[arm][s] - heldout[other][s] for s in seeds])}
    return compared


def difference_line(label: str, c: dict[str, Any]) -> str:
    """A comparison in words: with one seed a single draw, plainly; with more the mean, interval and p."""
    if c["n"] == 1:
        return (f"{label}: {c['mean']:+.4f} bpb from one seed ({c['seeds'][0]}): one draw, so no interval and no "
                "p-value (`--seeds 3` or more gives the mean, a 95% interval and a paired p).")
    p = "n/a (the difference is the same at every seed)" if c["seed_free"] else f"{c['p']:.3g}"
    return (f"{label} over {c['n']} seeds: mean {c['mean']:+.4f} bpb, 95% t interval [{c['low']:+.4f}, "
            f"{c['high']:+.4f}], paired two-sided p = {p} (one-sample t-test on the per-seed differences).")


def seed_table(heldout: dict[str, dict[int, float]], seeds: list[int]) -> list[str]:
    """Held-out bpb of each trained arm at each seed, with the headline difference per seed."""
    arms = [arm for arm in heldout if heldout[arm]]
    both = "pro" in heldout and "scratch" in heldout
    header = "| seed |" + "".join(f" {SHORT_NAMES[a]} |" for a in arms) + (" Pro − scratch |" if both else "")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for seed in seeds:
        values = [heldout[a].get(seed) for a in arms]
        diff = heldout["pro"].get(seed, math.nan) - heldout["scratch"].get(seed, math.nan) if both else None
        signed = "n/a" if diff is None or math.isnan(diff) else f"{diff:+.4f}"
        lines.append(f"| {seed} |" + "".join(f" {_fmt(v, 4)} |" for v in values) + (f" {signed} |" if both else ""))
    return lines


def write_pro_report(run: Path, source: str, done: dict[str, dict[str, Any]], scores: dict[str, dict[str, Any]],
                     trained: dict[str, dict[int, dict[str, Any]]], shape: ModelConfig, tasks: list[str],
                     tokens: int, recipe: dict[str, Any], seeds: list[int],
                     eval_limit: int | None = None) -> dict[str, Any]:
    """``report.md``, ``report.json`` and ``loss_curves.png`` at the top of the run folder. ``trained`` holds each
    arm's finished training stages by seed; ``seeds`` the seeds asked for."""
    tok = done["tokenizer"]["result"]
    results = {arm: {seed: record["result"] for seed, record in by_seed.items()} for arm, by_seed in trained.items()
               if by_seed}
    heldout = {arm: {seed: scores[model_name(arm, seed)]["bpb"] for seed in by_seed} for arm, by_seed in
               results.items()}
    compared = seed_comparisons(heldout)
    curves = {(arm, seed): loss_curve(record["folder"]) for arm, by_seed in trained.items()
              for seed, record in by_seed.items()}
    figure = plot_curves(run, curves) if curves else None
    header = "| model | layers × width | vocab | params | emb+head | held-out bpb |" + \
        "".join(f" {t} |" for t in tasks) + (" avg |" if tasks else "")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for name, row in scores.items():
        values = [row["tasks"].get(t) for t in tasks]
        known = [v for v in values if v is not None]
        avg = statistics.fmean(known) if known and len(known) == len(values) else None
        lines.append(f"| {name} | {row['layers']} × {row['hidden_size']} | {row['vocab_size']:,} | "
                     f"{row['params'] / 1e6:.2f}M | {100 * row['embedding_share']:.1f}% | {row['bpb']:.4f} |" +
                     "".join(f" {_fmt(v, 1)} |" for v in values) + (f" {_fmt(avg, 1)} |" if tasks else ""))
    said = findings(scores, heldout, compared, results)
    arch = done["architecture"]["result"]
    inherit = done["inherit"]["result"]
    first = next((r for by_seed in results.values() for r in by_seed.values()), {})  # same steps, tokens per arm
    made_by = run_provenance()
    commit = (f"commit {made_by['commit'][:10]}{' with uncommitted changes' if made_by['dirty'] else ''}"
              if made_by["commit"] else f"tinylm {made_by['versions']['tinylm']} (not a git checkout)")
    drawn = (f"one seed ({seeds[0]}): every number below is one draw" if len(seeds) == 1 else
             f"{len(seeds)} seeds ({', '.join(map(str, seeds))}), each a row of its own")
    text = [
        "# tinylm pro report", "",
        f"Source `{source}`: {_fmt(scores['source']['params'] / 1e6)}M parameters, "
        f"vocab {scores['source']['vocab_size']:,}.",
        "",
        f"Made by {commit}, torch {made_by['versions']['torch']}, lightning {made_by['versions']['lightning']}, "
        f"{made_by['hardware']} (a resumed stage may have run earlier, under code of the same version: stage keys "
        "carry it).",
        "",
        "## The four formulas, in order",
        f"1. **Compact tokenizer**: {tokenizer_line(tok)}.",
        f"2. **Architecture** ({arch['how']}): {describe(shape)}.",
        f"3. **Inheritance**: layers {inherit['layer_strategy']} {inherit['layers']} of the compact source, width by "
        f"{inherit['criterion']}.",
        f"4. **Multi-round training**: {recipe['rounds']} round(s), later rounds on the hardest {recipe['rate']:.0%} "
        f"of the batches; lr = (bs / bs0)^r × lr0 = ({recipe['batch_size'] * recipe['seq_len']}/"
        f"{recipe['lr_scaling_bs0']})^{recipe['lr_scaling_r']} × {recipe['lr']:g}"
        + (f" = {first['lr']:.2e}" if first else "") +
        (f"; {first['steps']} steps, {first['tokens']:,} training tokens per arm (asked: {tokens:,})"
         if first else "") + f"; trained with {drawn}.",
        "",
        "## Scores",
        "Held-out bpb: bits per UTF-8 byte on held-out documents of --data (never trained on; lower is better), "
        "comparable across tokenizers. Benchmarks: accuracy ×100 (acc_norm where lm-eval reports it)"
        + (f" on the first {eval_limit} items of each task (one item moves a score by {100 / eval_limit:.0f} points)"
           if eval_limit else "") + "; n/a when the benchmark files are missing. Every training seed's model is "
        "scored on the benchmarks too (a row each); the seed statistics below are on held-out bpb.",
        "", *lines, "",
    ]
    if heldout:
        text += ["## Seed by seed",
                 "Held-out bpb of each trained arm at each training seed (the seed sets data order, the rounds' draws "
                 "and the scratch init; tokenizer, shape and inherited model are the same for all).", "",
                 *seed_table(heldout, seeds), "", *[f"- {difference_line(label, c)}" for label, c in compared.items()],
                 ""]
    text += [
        "## Findings", *[f"- {line}" for line in said], "",
    ]
    if figure:
        text += [f"![loss curves]({figure})", ""]
    text += ["## Stage times", "| stage | seconds |", "|---|---|"]
    text += [f"| {name} | {record.get('seconds', 0):.0f} |" for name, record in done.items() if record]
    report = {"scores": scores, "findings": said, "tokenizer": tok, "architecture": arch, "seeds": seeds,
              "heldout_bpb": heldout, "comparisons": compared,
              "benchmarks": "every training seed's model is scored (a row each in scores)",
              "training": results, "recipe": recipe, "provenance": made_by}
    with atomic_file(run / "report.md") as handle:
        handle.write("\n".join(text) + "\n")
    with atomic_file(run / "report.json") as handle:
        json.dump(report, handle, indent=2, default=str)
    return report


def findings(scores: dict[str, dict[str, Any]], heldout: dict[str, dict[int, float]],
             compared: dict[str, dict[str, Any]], trained: dict[str, dict[int, dict[str, Any]]]) -> list[str]:
    """What the numbers say, in words chosen by the numbers: a difference over several seeds by its interval,
    one seed's as the single draw it is."""
    bpb = {name: row["bpb"] for name, row in scores.items()}
    start, random_init = bpb["inherited (step 0)"], bpb["random init"]
    verdict = "far below" if start < 0.8 * random_init else "below" if start < random_init else "NOT below"
    said = [f"At step 0 the inherited model is {verdict} a random init of the same shape: {start:.3f} vs "
            f"{random_init:.3f} held-out bpb ({100 * (start - random_init) / random_init:+.1f}%)."]
    for c in compared.values():
        a, b, n = c["arm_mean"], c["against_mean"], c["n"]
        if n == 1:  # one draw: its sign, no more
            how = "ends below" if c["mean"] < 0 else "does NOT end below"
            numbers = f"{a:.3f} vs {b:.3f} bpb ({100 * c['mean'] / b:+.1f}%), one seed: a single draw, no interval"
        else:  # the 95% interval decides; one that holds 0 tells the arms apart from nothing
            how = "ends below" if c["high"] < 0 else "ends ABOVE" if c["low"] > 0 else "cannot be told apart from"
            numbers = (f"{a:.3f} vs {b:.3f} bpb on average over {n} seeds ({100 * c['mean'] / b:+.1f}%), 95% "
                       f"interval of the difference [{c['low']:+.3f}, {c['high']:+.3f}]")
        if c["arm"] == "pro":
            said.append(f"After the same training tokens, Pro {how} scratch: {numbers}.")
        else:
            seconds = {arm: statistics.fmean(r["seconds"] for r in trained[arm].values()) for arm in ("distill", "pro")}
            said.append(f"At equal tokens, Pro + distill (a logit-KL term from the compact source) {how} Pro "
                        f"without it: {numbers}; the distilled arm took {seconds['distill']:.0f} s against {seconds['pro']:.0f} s "
                        "per seed (the teacher's forward pass).")
    if "compact source" in bpb:
        said.append(f"Compacting the tokenizer moves the source from {bpb['source']:.3f} to "
                    f"{bpb['compact source']:.3f} bpb: words whose pieces were dropped are spelled with several kept "
                    "ones, which the source, never trained on those spellings, predicts poorly (training on the "
                    "compact tokenizer removes this; coverage counts tokens, so rarer languages in --data hide it).")
    return said


def plot_curves(run: Path, curves: dict[tuple[str, int], dict[str, list[float]]]) -> str:
    """Training loss (smoothed) and validation bpb of each arm at each seed against optimizer steps (one colour
    per arm)."""
    import matplotlib  # optional heavy dependency, imported only when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    colours = {arm: f"C{i}" for i, arm in enumerate(dict.fromkeys(arm for arm, _ in curves))}
    several = len({seed for _, seed in curves}) > 1
    for (arm, seed), curve in curves.items():
        label = ARM_NAMES[arm] + (f", seed {seed}" if several else "")
        window = max(1, len(curve["loss"]) // 50)
        smooth = [statistics.fmean(curve["loss"][max(0, i - window + 1): i + 1]) for i in range(len(curve["loss"]))]
        left.plot(curve["step"], smooth, color=colours[arm], alpha=0.8, label=label)
        right.plot(curve["val_step"], curve["val_bpb"], marker="o", color=colours[arm], alpha=0.8, label=label)
    left.set_xlabel("optimizer step")
    left.set_ylabel("training loss (nats/token, smoothed)")
    right.set_xlabel("optimizer step")
    right.set_ylabel("validation bits/byte")
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    with atomic_file(run / "loss_curves.png", "wb") as handle:
        figure.savefig(handle, format="png", dpi=110)
    plt.close(figure)
    return "loss_curves.png"
