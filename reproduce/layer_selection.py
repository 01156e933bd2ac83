"""Layer selection (PAPER.md §2): which layers to inherit — first, last, both ends, uniform stride — vs scratch.

The small model keeps the source's width and half its layers (by each strategy), then trains for the same token
budget; the paper compares training-loss curves (inheriting beats scratch; keeping the ends is advised).

    python -m reproduce layer_selection --scale smoke
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from reproduce import inheritance
from reproduce.common import experiment_dir, fmt, main
from reproduce.verdict import judge_results

STRATEGIES = ("first", "last", "both-ends", "uniform")


def run(scale: str, seeds: int, out: Path) -> dict:
    from tinylm.inherit import importance, resolve_target, save_inherited, select_layers
    from tinylm.model_dir import load_model_dir

    cfg = inheritance.SCALES[scale]
    folder = experiment_dir(out, "layer_selection")
    source = inheritance.source_model(scale)
    model, tokenizer = load_model_dir(source)
    shape = resolve_target({"num_layers": max(1, model.config.num_layers // 2)}, model.config)
    keep_all = importance(model, "l1").plan  # width unchanged: every head, neuron and channel is kept
    results: dict[str, list[float]] = {}
    curves: dict[str, list[tuple[int, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="tinylm-layer-selection-") as work:
        for seed in range(seeds):
            for name in ("scratch", *STRATEGIES):
                root = Path(work) / f"{name}-seed{seed}"
                init = None
                if name != "scratch":
                    layers = select_layers(name, model.config.num_layers, shape.num_layers)
                    init = str(save_inherited(root / "init", model.state_dict(), model.config,
                                              keep_all(shape, layers), tokenizer,
                                              {"parent": str(source), "layer_strategy": name}))
                bpb, curve = inheritance.train(cfg, root / "train", str(source), seed, init_from=init, shape=shape)
                results.setdefault(name, []).append(bpb)
                curves.setdefault(name, curve)
    mean = {k: sum(v) / len(v) for k, v in results.items()}
    figure = inheritance.plot(curves, folder / "loss_curves.png")
    lines = ["| Layers kept | which | final held-out bpb ↓ | final train loss | paper |", "|---|---|---|---|---|"]
    for name in ("scratch", *STRATEGIES):
        which = "random init" if name == "scratch" else str(select_layers(name, model.config.num_layers,
                                                                             shape.num_layers))
        lines.append(f"| {name} | {which} | {fmt(mean[name], 3)} | {fmt(curves[name][-1][1], 3)} | n/a (figure only) |")
    def ordering(claim: str, better: str, worse: str) -> dict:
        return {"claim": claim, "tag": "P", "kind": "ordering", "higher_is_better": False,
                "arms": {better: results[better], worse: results[worse]}, "expected": [better, worse]}

    findings = [ordering("inherited layers train to a lower loss than random init", "both-ends", "scratch"),
                ordering("keeping both ends beats keeping only the first layers", "both-ends", "first"),
                ordering("keeping both ends beats keeping only the last layers", "both-ends", "last")]
    verdicts = [f"{v.claim}: {v.verdict} — {v.why}" for v in judge_results({"scale": scale, "findings": findings})]
    verdicts.append(f"lowest bpb here: {min(STRATEGIES, key=lambda k: mean[k])}")
    table = "\n".join(lines) + "\n\n" + "\n".join(f"- {v}" for v in verdicts) + "\n"
    return {"table": table, "rows": [{"strategy": k, "bpb": v} for k, v in results.items()],
            "paper": {"finding": "inherited layers reach lower training loss; first and last layers matter most [P]"},
            "findings": findings, "verdicts": verdicts, "figures": [figure], "curves": curves, "source": str(source)}


if __name__ == "__main__":
    main("layer_selection", run, inheritance.pop_source(sys.argv[1:]))
