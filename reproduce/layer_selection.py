"""Layer selection (PAPER.md §2): which layers to inherit — first, last, both ends, uniform stride — vs scratch.

The small model keeps the source's width and half its layers (by each strategy), then trains for the same token
budget (seeds vary init and data order); the paper compares training-loss curves (inheriting beats scratch; keeping
the ends is advised). The source is ``reproduce.inheritance``'s (or ``--source DIR``).

    python -m reproduce layer_selection --scale smoke
"""

from __future__ import annotations

from pathlib import Path

from reproduce import inheritance
from reproduce.experiment import Experiment, Measured, Options, fmt, scratch, tokens_line
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
    from tinylm.inherit import importance, resolve_target, save_inherited, select_layers
    from tinylm.model_dir import load_model_dir

    source = inheritance.source_model(options.scale, options.source)
    model, tokenizer = load_model_dir(source)
    shape = resolve_target({"num_layers": max(1, model.config.num_layers // 2)}, model.config)
    keep_all = importance(model, "l1").plan  # width unchanged: every head, neuron and channel is kept
    results: dict[str, list[float]] = {}
    tokens: dict[str, int] = {}
    curves: dict[str, list[tuple[float, float]]] = {}
    with scratch("layer-selection") as work:
        for seed in range(options.seeds):
            for name in ("scratch", *STRATEGIES):
                root = work / f"{name}-seed{seed}"
                init = None
                if name != "scratch":
                    layers = select_layers(name, model.config.num_layers, shape.num_layers)
                    init = str(save_inherited(root / "init", model.state_dict(), model.config,
                                              keep_all(shape, layers), tokenizer,
                                              {"parent": str(source), "layer_strategy": name}))
                trained = inheritance.train(cfg, root / "train", str(source), seed, init_from=init, shape=shape)
                results.setdefault(name, []).append(trained.bpb)
                tokens[name] = trained.tokens
                curves.setdefault(name, trained.curve)
    mean = {k: sum(v) / len(v) for k, v in results.items()}
    lines = ["| Layers kept | which | held-out bpb ↓ (seed mean) | final train loss (seed 0) | paper |",
             "|---|---|---|---|---|"]
    for name in ("scratch", *STRATEGIES):
        which = "random init" if name == "scratch" else str(select_layers(name, model.config.num_layers,
                                                                             shape.num_layers))
        lines.append(f"| {name} | {which} | {fmt(mean[name], 3)} | {fmt(curves[name][-1][1], 3)} | n/a (figure only) |")
    table = "\n".join(lines) + "\n\n" + tokens_line(tokens) + "\n"
    return Measured(table, {f.key: results for f in FINDINGS}, tokens=tokens,
                    rows=[{"strategy": k, "bpb": v} for k, v in results.items()],
                    figures=[inheritance.plot(curves, folder)], extra={"curves": curves, "source": str(source)})


EXPERIMENT = Experiment(
    "layer_selection", "Which layers to inherit (§2, parameter inheritance)", inheritance.SCALES, FINDINGS, measure,
    paper={"finding": "inherited layers reach lower training loss; first and last layers matter most [P]"})
