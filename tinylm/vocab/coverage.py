"""Coverage: the share of corpus tokens the top-k pieces account for — the curve, its table and its figure."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from tinylm.artifacts.io import atomic_file
from tinylm.errors import TinyLMError

DEFAULT_KS = (1000, 2000, 4000, 8000, 16000, 24000, 32000, 48000, 64000, 100000)


def coverage_curve(counts: np.ndarray) -> np.ndarray:
    """``curve[k-1]`` = share of all counted tokens that the ``k`` most frequent pieces account for."""
    ranked = np.sort(np.asarray(counts, dtype=np.float64))[::-1]
    total = ranked.sum()
    if total <= 0:
        raise TinyLMError("the frequency file counts no tokens; count a non-empty corpus")
    return np.cumsum(ranked) / total


def coverage_rows(counts: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> list[dict[str, float]]:
    """Coverage at each k (at most the vocabulary; the full vocabulary is always the last row)."""
    curve = coverage_curve(counts)
    sizes = sorted({k for k in ks if 0 < k < len(curve)} | {len(curve)})
    return [{"k": k, "vocab_fraction": k / len(curve), "coverage": float(curve[k - 1])} for k in sizes]


def pieces_for_coverage(counts: np.ndarray, share: float) -> int:
    """The smallest k whose top-k pieces cover ``share`` of the counted tokens."""
    return int(np.searchsorted(coverage_curve(counts), share - 1e-12) + 1)


def plot_coverage(curves: dict[str, np.ndarray], path: str | os.PathLike, relative: bool = False,
                  paper_point: tuple[float, float] | None = None) -> None:
    """Cumulative coverage against k (or k / vocabulary with ``relative``) for each labelled count vector."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, counts in curves.items():
        curve = coverage_curve(counts) * 100
        x = np.arange(1, len(curve) + 1)
        ax.plot(x / len(curve) if relative else x, curve, label=label)
    if paper_point is not None:
        ax.plot(*paper_point, "k*", markersize=10, label=f"paper: {paper_point[1]:.2f}% [P]")
    ax.set_xlabel("top-k pieces / vocabulary size" if relative else "top-k pieces")
    ax.set_ylabel("share of corpus tokens (%)")
    ax.set_ylim(min(50, ax.get_ylim()[0]), 100.5)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_file(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=120)
    plt.close(fig)


def coverage_markdown(rows: list[dict[str, float]]) -> str:
    lines = ["| k | k / vocab | coverage |", "|---|---|---|"]
    lines += [f"| {r['k']} | {r['vocab_fraction']:.3f} | {100 * r['coverage']:.2f}% |" for r in rows]
    return "\n".join(lines)
