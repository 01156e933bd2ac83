"""Layer selection (docs/paper.md §2): which layers of a pretrained model to inherit — first, last, both ends, uniform
stride — vs scratch. The child of ``reproduce.inheritance`` keeps its layers by each strategy and its widths by L1,
trains for equal tokens and is scored by held-out bpb at step 0 and after the budget (runs shared with
``reproduce.inheritance``: both-ends is its L1 arm). Seeds vary the data order and scratch's init.
"""

from __future__ import annotations

from pathlib import Path

from reproduce import inheritance
from reproduce.experiment import Experiment, Measured, Options
from reproduce.tables import fmt, markdown, tokens_line
from reproduce.verdict import SMALLEST_BPB, Finding
from tinylm.artifacts.model_dir import load_config
from tinylm.inherit import select_layers

STRATEGIES = ("first", "last", "both-ends", "uniform")
FINDINGS = (
    Finding("inherit_beats_scratch", "inherited layers train to a lower loss than random init", "P", "held-out bpb",
            ("both-ends", "scratch"), smallest_effect=SMALLEST_BPB, same_as="inheritance/inherit_beats_init"),
    Finding("ends_beat_first", "keeping both ends beats keeping only the first layers", "P", "held-out bpb",
            ("both-ends", "first"), smallest_effect=SMALLEST_BPB),
    Finding("ends_beat_last", "keeping both ends beats keeping only the last layers", "P", "held-out bpb",
            ("both-ends", "last"), smallest_effect=SMALLEST_BPB),
)


def measure(setting: inheritance.Scale, options: Options, folder: Path) -> Measured:
    arms = ("scratch", *STRATEGIES)
    done, source, shape, record = inheritance.runs(arms, setting, options)
    final, step0, tokens, curves, seconds = inheritance.measured(done)
    n = load_config(source).num_layers
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    lines = markdown(("Layers kept", "which", "step-0 bpb ↓", "bpb after budget ↓", "wall s / run", "paper"),
                     ((a, "random init" if a == "scratch" else select_layers(a, n, shape.num_layers),
                       fmt(mean(step0[a]), 3), fmt(mean(final[a]), 3), seconds[a], "n/a (figure only)")
                      for a in arms))
    table = "\n".join(lines) + (
        f"\n\nSeed means over {options.seeds} seed(s); source {n} layers "
        f"({record['vocab_size']:,}-piece compact tokenizer), child {shape.num_layers} layers × {shape.hidden_size} "
        f"with widths kept by L1; {setting.steps} steps × {setting.batch_size} × {setting.seq_len} tokens. "
        + tokens_line(tokens) + "\n")
    return Measured(table, {f.key: final for f in FINDINGS}, tokens=tokens,
                    rows=[{"strategy": a, "bpb": final[a], "step0_bpb": step0[a]} for a in arms],
                    figures=[inheritance.plot(curves, folder)],
                    extra={"curves": curves, "units": record.pop("units"), "compaction": record})


EXPERIMENT = Experiment(
    "layer_selection", "Which layers to inherit (§2, parameter inheritance)", inheritance.SCALES, FINDINGS, measure,
    paper={"finding": "inherited layers reach lower training loss; first and last layers matter most [P]"},
    core_hours={"small": 3.0})
