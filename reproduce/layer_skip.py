"""Layer redundancy (PAPER.md §2): skip x ∈ {1, 2, 3} adjacent layers at every position of a trained model.

The paper finds skipping costs little in the middle and a lot near the first and last layers. We score held-out
bits per byte of the source model of ``reproduce.inheritance`` (or ``--source DIR``) with each span skipped, and
draw a heatmap (rows: x, columns: first skipped layer). Deterministic: one trained model on the fixed held-out
documents, no seed; the findings are thresholds on measured differences.

    python -m reproduce layer_skip --scale smoke
"""

from __future__ import annotations

from pathlib import Path

from reproduce import inheritance
from reproduce.experiment import Experiment, Measured, Options, fmt, pyplot, save_figure
from reproduce.verdict import Finding

FINDINGS = tuple(
    Finding(f"{end}_costs_most", f"skipping the {end} layers costs more bpb than the cheapest middle span (every x)",
            "P", "held-out bpb minus the cheapest middle span's, smallest over x", kind="threshold", at_least=0.0)
    for end in ("first", "last"))


def measure(cfg: dict, options: Options, folder: Path) -> Measured:
    import torch

    from tinylm.inherit import layer_skip_scores
    from tinylm.model_dir import load_model_dir

    source = inheritance.source_model(options.scale, options.source)
    model, tokenizer = load_model_dir(source)
    data = inheritance.data_module(cfg, str(source))
    blocks = []  # seq_len + 1 tokens each: the inputs plus the last target
    for index, batch in enumerate(data.val_dataloader()):
        if index >= cfg["val_batches"]:
            break
        blocks.append(torch.cat([batch["input_ids"], batch["labels"][:, -1:]], dim=1))
    token_bytes = torch.from_numpy(tokenizer.token_bytes)
    n = model.config.num_layers
    spans = [x for x in (1, 2, 3) if x < n]
    scores = layer_skip_scores(model, blocks, token_bytes, spans)
    full = scores[0][0]
    lines = ["| skipped layers x | " + " | ".join(f"start {s}" for s in range(n)) + " |",
             "|---|" + "---|" * n]
    for x in spans:
        cells = [fmt(scores[x][s], 3) if s < len(scores[x]) else "" for s in range(n)]
        lines.append(f"| {x} | " + " | ".join(cells) + " |")
    long = [x for x in spans if len(scores[x]) > 2]  # spans with a middle position to compare with
    measured = {f"{end}_costs_most": {"value": min((scores[x][pos] - min(scores[x][1:-1]) for x in long),
                                                   default=float("nan"))}
                for end, pos in (("first", 0), ("last", -1))}
    figure = heatmap(scores, spans, n, full, folder)
    table = (f"Full model: {full:.3f} bpb (held-out, {len(blocks)} batches). Paper: qualitative only [P] — ends "
             "matter most.\n\n" + "\n".join(lines) + "\n")
    return Measured(table, measured, rows=[{"x": x, "bpb": scores[x]} for x in spans], figures=[figure],
                    extra={"full_bpb": full, "source": str(source)})


def heatmap(scores: dict[int, list[float]], spans: list[int], n: int, full: float, folder: Path) -> str:
    import numpy as np

    plt = pyplot()
    grid = np.full((len(spans), n), np.nan)
    for row, x in enumerate(spans):
        grid[row, : len(scores[x])] = np.array(scores[x]) - full
    fig, ax = plt.subplots(figsize=(1 + 0.6 * n, 1 + 0.6 * len(spans)))
    image = ax.imshow(grid, cmap="Reds", aspect="auto")
    ax.set_xticks(range(n))
    ax.set_yticks(range(len(spans)), [str(x) for x in spans])
    ax.set_xlabel("first skipped layer")
    ax.set_ylabel("adjacent layers skipped")
    fig.colorbar(image, label="Δ bpb vs full model")
    fig.tight_layout()
    return save_figure(fig, folder, "layer_skip.png")


EXPERIMENT = Experiment("layer_skip", "Skipping adjacent layers of a trained model (§2, layer redundancy)",
                        inheritance.SCALES, FINDINGS, measure, deterministic=True,
                        paper={"finding": "skipping layers near the first and last costs most [P]"})
