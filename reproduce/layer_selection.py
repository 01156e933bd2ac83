"""Layer selection (PAPER.md §2): which layers of a pretrained model to inherit — first, last, both ends, uniform
stride — vs scratch.

The child of ``reproduce.inheritance`` (SmolLM2-135M with its tokenizer compacted, at small scale) keeps its
layers by each strategy and its widths by L1 magnitude, then trains for the same token budget; seeds vary the data
order (and scratch's init). Scored by held-out bpb at step 0 (what the kept layers carry before any training) and
after the budget; the paper compares training-loss curves (inheriting beats scratch; keeping the ends is advised).
Runs are shared with ``reproduce.inheritance`` (both-ends here is its L1 arm).

    python -m reproduce layer_selection --scale smoke
"""

from __future__ import annotations

from pathlib import Path

from reproduce import inheritance
from reproduce.experiment import Experiment, Measured, Options, fmt, tokens_line
from reproduce.verdict import Finding

STRATEGIES = ("first", "last", "both-ends", "uniform")
FINDINGS = (
    Finding("inherit_beats_scratch", "inherited layers train to a lower loss than random init", "P", "held-out bpb",
            ("both-ends", "scratch")),
    Finding("ends_beat_first", "keeping both ends beats keeping only the first layers", "P", "held-out bpb",
            ("both-ends", "first")),
    Finding("ends_beat_last", "keeping both ends beats keeping only the last layers", "P", "held-out bpb",
            ("both-ends", "last")),
)


def measure(cfg: dict, options: Options, folder: Path) -> Measured:
    from tinylm.inherit import select_layers
    from tinylm.model_dir import load_config

    arms = ("scratch", *STRATEGIES)
    done, source, shape, record = inheritance.runs(arms, cfg, options)
    final = {a: [r["bpb"] for r in done[a]] for a in arms}
    step0 = {a: [r["step0_bpb"] for r in done[a]] for a in arms}
    tokens = {a: done[a][0]["tokens"] for a in arms}
    curves = {a: done[a][0]["curve"] for a in arms}
    n = load_config(source).num_layers
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    lines = ["| Layers kept | which | step-0 bpb ↓ | bpb after budget ↓ | wall s / run | paper |",
             "|---|---|---|---|---|---|"]
    for a in arms:
        which = "random init" if a == "scratch" else str(select_layers(a, n, shape.num_layers))
        lines.append(f"| {a} | {which} | {fmt(mean(step0[a]), 3)} | {fmt(mean(final[a]), 3)} | "
                     f"{mean([r['seconds'] for r in done[a]]):.0f} | n/a (figure only) |")
    table = "\n".join(lines) + (
        f"\n\nSeed means over {options.seeds} seed(s); source {n} layers "
        f"({record['vocab_size']:,}-piece compact tokenizer), child {shape.num_layers} layers × {shape.hidden_size} "
        f"with widths kept by L1; {cfg['steps']} steps × {cfg['batch_size']} × {cfg['seq_len']} tokens. "
        + tokens_line(tokens) + "\n")
    return Measured(table, {f.key: final for f in FINDINGS}, tokens=tokens,
                    rows=[{"strategy": a, "bpb": final[a], "step0_bpb": step0[a]} for a in arms],
                    figures=[inheritance.plot(curves, folder)], extra={"curves": curves, "compaction": record})


EXPERIMENT = Experiment(
    "layer_selection", "Which layers to inherit (§2, parameter inheritance)", inheritance.SCALES, FINDINGS, measure,
    paper={"finding": "inherited layers reach lower training loss; first and last layers matter most [P]"})
