"""What a results table shows: numbers formatted, markdown rows, seed summaries and the caption lines every
experiment writes the same way."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from tinylm.artifacts.io import default_cache_dir


def fmt(value: float | None, digits: int = 2) -> str:
    """A number for a table, or "n/a" when unknown."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A markdown table as lines: the header, its rule and one line per row of formatted cells."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(map(str, row)) + " |" for row in rows)]


def shown(text: str | Path) -> str:
    """Text as it may appear in committed results: paths under the tinylm cache are written ``$TINYLM_CACHE/...``
    and paths under the home folder ``~/...``, so no machine's folders land in the repository."""
    return str(text).replace(default_cache_dir().rstrip("/") + "/", "$TINYLM_CACHE/").replace(
        str(Path.home()) + "/", "~/")


def portable(value: Any) -> Any:
    """``value`` (JSON data) with every path written as ``shown`` writes it, for a committed record."""
    if isinstance(value, (str, Path)):
        return shown(value)
    if isinstance(value, dict):
        return {key: portable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(item) for item in value]
    return value


def located(text: str) -> Path:
    """The path a committed result names (``shown``'s inverse): ``$TINYLM_CACHE/...`` under this machine's tinylm
    cache, ``~/...`` under its home folder."""
    if text.startswith("$TINYLM_CACHE/"):
        return Path(default_cache_dir()) / text.removeprefix("$TINYLM_CACHE/")
    return Path(text).expanduser()


def tokens_line(tokens: Mapping[str, int]) -> str:
    """The tokens every arm saw, for a table caption."""
    return "Training tokens per arm (every step that touched data): " + ", ".join(
        f"{arm} {count:,}" for arm, count in tokens.items()) + "."


def mean_sd(values: Sequence[float], exact: bool = False) -> tuple[float, float | None]:
    """The seed mean (``exact``: correctly rounded, ``statistics.mean``; else ``fmean``) and sample SD (None for
    one seed)."""
    mean = statistics.mean if exact else statistics.fmean
    return mean(values), statistics.stdev(values) if len(values) > 1 else None


def seed_summary(runs: Sequence[Mapping[str, Any]], metric: str = "bpb") -> dict[str, float | None]:
    """``{metric: exact seed mean, metric_sd: sample SD}`` of the runs' ``metric``."""
    return dict(zip((metric, f"{metric}_sd"), mean_sd([run[metric] for run in runs], exact=True)))


def matching(rows: Iterable[Mapping[str, Any]], **fields: Any) -> list[Mapping[str, Any]]:
    """The rows whose ``fields`` have the given values."""
    return [row for row in rows if all(row[key] == value for key, value in fields.items())]
