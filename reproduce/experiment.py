"""The experiment contract: what an experiment module declares and what its measurement returns.

An experiment module ``reproduce/<id>.py`` declares its scales (one frozen dataclass per scale: a
``reproduce.recipe.Recipe`` extended with its own fields where it trains, a small dataclass of its sizes where it
only measures), its findings (``reproduce.verdict.Finding``, declared before any run) and one ``measure(setting,
options, folder) -> Measured``, bundled as ``EXPERIMENT = Experiment(...)``. ``reproduce.runner`` does the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from reproduce.verdict import Finding

SCALES = ("smoke", "small", "paper")
# seeds per scale: smoke proves the pipeline; a finding needs at least 3 seeds to be judged; small runs 5 (every
# small arm costs under ~5 minutes a seed, or says otherwise in its plan)
DEFAULT_SEEDS = {"smoke": 1, "small": 5, "paper": 3}


@dataclass(frozen=True)
class Options:
    """Everything the command line says, once."""

    scale: str = "smoke"
    seeds: int = 1
    out: Path = Path("runs/smoke")
    source: Path | None = None  # a LLaMA-format model dir to inherit from (layer_skip, layer_selection, inheritance)
    models: tuple[str, ...] = ()  # extra model dirs for `final`
    overwrite: bool = False


@dataclass
class Measured:
    """What one run of an experiment produced. ``findings`` maps every declared finding's key to its data:
    ``{arm: [value per seed]}`` (paired), ``{"x": [...], "y": [...]}`` (correlation), ``{"value": v}``
    (threshold). ``tokens``: training tokens each arm saw (every step that touched data counts)."""

    table: str
    findings: dict[str, Any]
    rows: list[Any] = field(default_factory=list)
    tokens: dict[str, int] = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    scales: Mapping[str, Any]  # scale name -> that scale's frozen dataclass of settings
    findings: tuple[Finding, ...]
    measure: Callable[[Any, Options, Path], Measured]
    seeds: Mapping[str, int] = field(default_factory=lambda: DEFAULT_SEEDS)
    deterministic: bool = False  # uses no seed: reported as "deterministic", run once
    paper: Mapping[str, Any] = field(default_factory=dict)
    core_hours: Mapping[str, float] = field(default_factory=dict)  # the plan's estimate per scale, one CPU core


def seeds_words(experiment: Experiment, seeds: int) -> str:
    """How many seeds a run of ``experiment`` uses, in words: "deterministic" or "N seed(s)"."""
    return "deterministic" if experiment.deterministic else f"{seeds} seed(s)"
