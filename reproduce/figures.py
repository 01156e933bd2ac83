"""Figures: matplotlib on the file-only Agg backend, each written atomically beside its results.

matplotlib is imported inside these functions: it is slow to import, and only a run that draws needs it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tinylm.artifacts.io import atomic_file


def subplots(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """``plt.subplots`` on the file-only Agg backend."""
    import matplotlib  # slow to import: only when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save_figure(figure: Any, folder: Path, name: str, dpi: int = 120) -> str:
    """Lay out and write a matplotlib figure atomically as ``folder/name`` (PNG), close it, and return ``name``."""
    import matplotlib.pyplot as plt  # slow to import: only when a figure is drawn

    figure.tight_layout()
    with atomic_file(Path(folder) / name, "wb") as handle:
        figure.savefig(handle, format="png", dpi=dpi)
    plt.close(figure)
    return name
