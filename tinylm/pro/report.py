"""Stage 5, the report: held-out bits per byte and benchmark scores of each model, ``report.md`` with the
findings in words, ``report.json`` and a figure of the loss curves."""

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
from tinylm.errors import TinyLMError
from tinylm.evaluation.adapter import TinyLMEval
from tinylm.evaluation.command import run_tasks
from tinylm.model import ModelConfig, Transformer
from tinylm.model.scoring import block_nll, stream_blocks
from tinylm.pro.data import token_stream
from tinylm.pro.target import describe
from tinylm.tokenizer import load_tokenizer

ARM_NAMES = {"pro": "Pro (inherited + rounds)", "scratch": "scratch (same shape, same tokens)",
              "distill": "Pro + distill"}


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


def write_pro_report(run: Path, source: str, done: dict[str, dict[str, Any]], scores: dict[str, dict[str, Any]], arms: dict,
                 shape: ModelConfig, tasks: list[str], tokens: int, recipe: dict[str, Any],
                 eval_limit: int | None = None) -> dict[str, Any]:
    """``report.md``, ``report.json`` and ``loss_curves.png`` at the top of the run folder."""
    tok = done["tokenizer"]["result"]
    trained = {arm: done[arm]["result"] for arm in arms if done.get(arm)}
    figure = plot_curves(run, {arm: loss_curve(done[arm]["folder"]) for arm in trained}) if trained else None
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
    said = findings(scores, trained)
    arch = done["architecture"]["result"]
    inherit = done["inherit"]["result"]
    first = next(iter(trained.values()), {})  # every arm trains the same steps and tokens
    text = [
        "# tinylm pro report", "",
        f"Source `{source}`: {_fmt(scores['source']['params'] / 1e6)}M parameters, "
        f"vocab {scores['source']['vocab_size']:,}.",
        "",
        "## The four formulas, in order",
        f"1. **Compact tokenizer**: {tokenizer_line(tok)}.",
        f"2. **Architecture** ({arch['how']}): {describe(shape)}.",
        f"3. **Inheritance**: layers {inherit['layer_strategy']} {inherit['layers']} of the compact source, width by "
        f"{inherit['criterion']}.",
        f"4. **Multi-round training**: {recipe['rounds']} round(s), later rounds on the hardest {recipe['rate']:.0%} "
        f"of the batches; lr = (bs / bs0)^r × lr0 = ({recipe['batch_size'] * recipe['seq_len']}/"
        f"{recipe['lr_scaling_bs0']})^{recipe['lr_scaling_r']} × {recipe['lr']:g}"
        + (f" = {first['lr']:.2e}" if trained else "") +
        (f"; {first['steps']} steps, {first['tokens']:,} training tokens per arm (asked: {tokens:,})."
         if trained else "."),
        "",
        "## Scores",
        "Held-out bpb: bits per UTF-8 byte on held-out documents of --data (never trained on; lower is better), "
        "comparable across tokenizers. Benchmarks: accuracy ×100 (acc_norm where lm-eval reports it)"
        + (f" on the first {eval_limit} items of each task (one item moves a score by {100 / eval_limit:.0f} points)"
           if eval_limit else "") + "; n/a when the benchmark files are missing. One seed.",
        "", *lines, "",
        "## Findings", *[f"- {line}" for line in said], "",
    ]
    if figure:
        text += [f"![loss curves]({figure})", ""]
    text += ["## Stage times", "| stage | seconds |", "|---|---|"]
    text += [f"| {name} | {record.get('seconds', 0):.0f} |" for name, record in done.items() if record]
    report = {"scores": scores, "findings": said, "tokenizer": tok, "architecture": arch,
              "training": trained, "recipe": recipe}
    with atomic_file(run / "report.md") as handle:
        handle.write("\n".join(text) + "\n")
    with atomic_file(run / "report.json") as handle:
        json.dump(report, handle, indent=2, default=str)
    return report


def findings(scores: dict[str, dict[str, Any]], trained: dict[str, dict[str, Any]]) -> list[str]:
    """What the numbers say, in words chosen by the numbers (one seed: differences are not tested)."""
    bpb = {name: row["bpb"] for name, row in scores.items()}
    start, random_init = bpb["inherited (step 0)"], bpb["random init"]
    verdict = "far below" if start < 0.8 * random_init else "below" if start < random_init else "NOT below"
    said = [f"At step 0 the inherited model is {verdict} a random init of the same shape: {start:.3f} vs "
            f"{random_init:.3f} held-out bpb ({100 * (start - random_init) / random_init:+.1f}%)."]
    pro, scratch = bpb.get(ARM_NAMES["pro"]), bpb.get(ARM_NAMES["scratch"])
    if pro is not None and scratch is not None:
        verdict = "ends below" if pro < scratch else "does NOT end below"
        said.append(f"After the same training tokens, Pro {verdict} scratch: {pro:.3f} vs {scratch:.3f} bpb "
                    f"({100 * (pro - scratch) / scratch:+.1f}%).")
    distill = bpb.get(ARM_NAMES["distill"])
    if pro is not None and distill is not None:
        verdict = "helps" if distill < pro else "does NOT help"
        said.append(f"At equal tokens, the logit-KL term from the compact source {verdict}: {distill:.3f} vs "
                    f"{pro:.3f} bpb without it ({100 * (distill - pro) / pro:+.1f}%); the distilled arm took "
                    f"{trained['distill']['seconds']:.0f} s against {trained['pro']['seconds']:.0f} s "
                    "(the teacher's forward pass).")
    if "compact source" in bpb:
        said.append(f"Compacting the tokenizer moves the source from {bpb['source']:.3f} to "
                    f"{bpb['compact source']:.3f} bpb: words whose pieces were dropped are spelled with several kept "
                    "ones, which the source, never trained on those spellings, predicts poorly (training on the "
                    "compact tokenizer removes this; coverage counts tokens, so rarer languages in --data hide it).")
    return said


def plot_curves(run: Path, curves: dict[str, dict[str, list[float]]]) -> str:
    """Training loss (smoothed) and validation bpb of each arm against optimizer steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for arm, curve in curves.items():
        window = max(1, len(curve["loss"]) // 50)
        smooth = [statistics.fmean(curve["loss"][max(0, i - window + 1): i + 1]) for i in range(len(curve["loss"]))]
        left.plot(curve["step"], smooth, label=ARM_NAMES[arm])
        right.plot(curve["val_step"], curve["val_bpb"], marker="o", label=ARM_NAMES[arm])
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
