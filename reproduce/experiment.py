"""The experiment contract and the one runner every experiment shares.

An experiment module ``reproduce/<id>.py`` declares its scales (a ``Recipe``, extended with its own fields, or
plain data), its findings (``reproduce.verdict.Finding``, declared before any run) and one ``measure(setting,
options, folder) -> Measured``, bundled as ``EXPERIMENT = Experiment(...)``. This module does the rest: the
command line as one frozen ``Options``, the output refused before any work, data modules and fits, timing, the
judging of every finding and ``<out>/<id>/results.json`` and ``table.md``, written atomically, with the plan they
were run under and their provenance (``reproduce.plan``): small and paper scale refuse a dirty git tree, and an
earlier result under another plan moves to ``<out>/<id>/history/``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch
import yaml

from reproduce.plan import (
    check_plan_written,
    checked_tree,
    keep_history,
    plan,
    plan_hash,
    provenance,
    tree_state,
)
from reproduce.verdict import Finding, judged
from tinylm.artifacts.io import atomic_dir, atomic_file, check_output_dir, default_cache_dir
from tinylm.data.datamodule import TextDataModule
from tinylm.model import ModelConfig
from tinylm.training.fit import fit
from tinylm.training.lm import LanguageModel

SCALES = ("smoke", "small", "paper")
# seeds per scale: smoke proves the pipeline; a finding needs at least 3 seeds to be judged; small runs 5 (every
# small arm costs under ~5 minutes a seed, or says otherwise in its plan)
DEFAULT_SEEDS = {"smoke": 1, "small": 5, "paper": 3}
RESULTS = Path("results")  # the committed small-scale results and REPORT.md
REPO = Path(__file__).resolve().parents[1]
PAPER_CORPUS = tuple(os.environ.get("TINYLM_CORPUS", "builtin").split(","))  # paper scales: comma-separated sources


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
    scales: Mapping[str, Any]
    findings: tuple[Finding, ...]
    measure: Callable[[Any, Options, Path], Measured]
    seeds: Mapping[str, int] = field(default_factory=lambda: DEFAULT_SEEDS)
    deterministic: bool = False  # uses no seed: reported as "deterministic", run once
    paper: Mapping[str, Any] = field(default_factory=dict)
    core_hours: Mapping[str, float] = field(default_factory=dict)  # the plan's estimate per scale, one CPU core


def default_out(scale: str) -> Path:
    """Smoke runs prove the pipeline and stay out of the committed ``results/``."""
    return Path("runs") / "smoke" if scale == "smoke" else RESULTS


def seeds_words(experiment: Experiment, seeds: int) -> str:
    return "deterministic" if experiment.deterministic else f"{seeds} seed(s)"


def shown(text: str | Path) -> str:
    """Text as it may appear in committed results: paths under the home folder are written ``~/...``."""
    return str(text).replace(str(Path.home()) + "/", "~/")


def _portable(value: Any) -> Any:
    if isinstance(value, (str, Path)):
        return shown(value)
    if isinstance(value, dict):
        return {key: _portable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_portable(item) for item in value]
    return value


def hardware() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()}× {torch.cuda.get_device_name(0)}"
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def fmt(value: float | None, digits: int = 2) -> str:
    """A number for a table, or "n/a" when unknown."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def subplots(*args: Any, **kwargs: Any):
    """``plt.subplots`` on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save_figure(figure, folder: Path, name: str, dpi: int = 120) -> str:
    """Lay out and write a matplotlib figure atomically as ``folder/name`` (PNG), close it, and return ``name``."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    with atomic_file(Path(folder) / name, "wb") as handle:
        figure.savefig(handle, format="png", dpi=dpi)
    plt.close(figure)
    return name


def read_json(path: Path, missing: Any = None) -> Any:
    """A cached JSON record, or ``missing`` when there is none yet."""
    return json.loads(Path(path).read_text()) if Path(path).is_file() else missing


def write_json(path: Path, record: Any) -> None:
    """Cache ``record`` as JSON at ``path``, atomically (a cut-short run never leaves half a record)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as handle:
        handle.write(json.dumps(record))


def cached_run(kind: str, key: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The record of one unit of an experiment (an arm at a seed), computed once and kept in the tinylm cache
    under ``reproduce/<kind>/<key>.json`` (``key`` from ``cache_key``, so it carries the code version): a long
    study cut short resumes at the next unit, in this run or a later one."""
    path = Path(default_cache_dir()) / "reproduce" / kind / f"{key}.json"
    if (record := read_json(path)) is None:
        record = compute()
        write_json(path, record)
    return record


def mean_sd(values: Sequence[float], exact: bool = False) -> tuple[float, float | None]:
    """The seed mean (``exact``: correctly rounded, ``statistics.mean``; else ``fmean``) and sample SD (None for
    one seed)."""
    mean = statistics.mean if exact else statistics.fmean
    return mean(values), statistics.stdev(values) if len(values) > 1 else None


def matching(rows: Iterable[Mapping[str, Any]], **fields: Any) -> list[Mapping[str, Any]]:
    """The rows whose ``fields`` have the given values."""
    return [row for row in rows if all(row[key] == value for key, value in fields.items())]


def seed_summary(runs: Sequence[Mapping[str, Any]], metric: str = "bpb") -> dict[str, float | None]:
    """``{metric: exact seed mean, metric_sd: sample SD}`` of the runs' ``metric``."""
    return dict(zip((metric, f"{metric}_sd"), mean_sd([run[metric] for run in runs], exact=True)))


def markdown(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A markdown table as lines: the header, its rule and one line per row of formatted cells."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(map(str, row)) + " |" for row in rows)]


@dataclass
class Trained:
    bpb: float
    tokens: int
    module: Any = field(repr=False)
    curve: list[tuple[float, float]] = field(default_factory=list)  # (training tokens, training loss)


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """A training recipe as data: what a ``tinylm fit`` YAML under ``recipes/`` says (``recipe`` reads one). An
    experiment's scale extends it with its own fields only."""

    config: Any = "debug"  # a ModelConfig or a preset name
    sources: tuple[str, ...] = ("builtin",)
    vocab_size: int = 8000
    seq_len: int = 64
    batch_size: int = 8
    steps: int = 0
    lr: float = 3e-3
    min_lr: float | None = None  # lr / 10
    warmup: float = 0.05
    val_batches: int | float = 1.0
    val_every: int = 50  # every n-th document is held out
    accumulate: int = 1  # micro-batches per optimizer step
    precision: str = "32-true"

    @property
    def tokens(self) -> int:
        """Training tokens per run (one device; multiply by the data-parallel size)."""
        return self.steps * self.batch_size * self.accumulate * self.seq_len

    @property
    def corpus(self) -> str:
        return ";".join(self.sources)

    def data(self, seed: int, tokenizer: str | Path | None = None, batch_size: int | None = None):
        """A prepared ``TextDataModule``; ``seed`` sets the data order, so seeds differ in data as well as init."""
        module = TextDataModule(sources=list(self.sources), tokenizer=None if tokenizer is None else str(tokenizer),
                                vocab_size=self.vocab_size, seq_len=self.seq_len,
                                batch_size=batch_size or self.batch_size, seed=seed, val_every=self.val_every)
        module.prepare_data()
        module.setup()
        return module

    def fit(self, datamodule, root: Path, seed: int, config: Any = None, steps: int | None = None,
            init_from: str | None = None, module=None, callbacks: tuple = (), **trainer_kwargs: Any) -> Trained:
        """Fit a ``LanguageModel`` of ``config`` (default: the recipe's), or the given ``module``, for ``steps``
        (default: the recipe's) and score it by held-out bits per byte."""
        if module is None:
            module = LanguageModel(self.config if config is None else config, init_from=init_from, lr=self.lr,
                                   min_lr=self.lr / 10 if self.min_lr is None else self.min_lr, warmup=self.warmup,
                                   model_dir=str(root / "model"))
        trainer_kwargs = {"accumulate_grad_batches": self.accumulate, "precision": self.precision, **trainer_kwargs}
        trainer = fit(module, datamodule, root, max_steps=self.steps if steps is None else steps, seed=seed,
                      limit_val_batches=self.val_batches, callbacks=list(callbacks), **trainer_kwargs)
        with open(root / "logs" / "version_0" / "metrics.csv", newline="") as handle:
            curve = [(float(row["train/tokens"]), float(row["train/loss"]))
                     for row in csv.DictReader(handle) if row.get("train/loss") and row.get("train/tokens")]
        bpb = trainer.callback_metrics.get("val/bpb")
        return Trained(float(bpb) if bpb is not None else float("nan"), module.tokens_seen, module, curve)


def recipe(path: str, scale: type[Recipe] = Recipe, **changes: Any) -> Recipe:
    """A LightningCLI recipe under ``recipes/`` as a ``Recipe`` (or the experiment's ``scale`` extending it, its own
    fields in ``changes``), so a scale and a recipe never restate the same settings."""
    spec = yaml.safe_load((REPO / "recipes" / path).read_text())
    model, data, trainer = spec["model"]["init_args"], spec["data"], spec.get("trainer", {})
    return scale(**{"config": ModelConfig(**model["config"]), "lr": model["lr"], "min_lr": model["min_lr"],
                    "warmup": model["warmup"], "sources": tuple(data["sources"]), "vocab_size": data["vocab_size"],
                    "seq_len": data["seq_len"], "batch_size": data["batch_size"],
                    "val_batches": trainer.get("limit_val_batches", 20), "steps": trainer.get("max_steps", 0),
                    "accumulate": trainer.get("accumulate_grad_batches", 1),
                    "precision": trainer.get("precision", "32-true"), **changes})


@contextmanager
def scratch(name: str) -> Iterator[Path]:
    """A temp folder for training runs: they never land beside the results."""
    with tempfile.TemporaryDirectory(prefix=f"tinylm-{name}-") as folder:
        yield Path(folder)


def check_out(experiment: Experiment, options: Options) -> Path:
    """Refuse ``<out>/<id>`` before any work: an existing result is replaced only with --overwrite, and only when
    tinylm wrote it; small and paper scale also refuse declarations that differ from their plan file
    (``reproduce/plans/``) and a git tree with uncommitted changes outside ``<out>`` (their results must name the
    code and plan they came from)."""
    target = check_output_dir(Path(options.out) / experiment.name, options.overwrite,
                              what=f"--out ({experiment.name})")
    if options.scale != "smoke":  # a committed result promises what its committed plan file says
        check_plan_written(experiment, options.scale)
    checked_tree(options.scale, (Path(options.out),))
    return target


def run(experiment: Experiment, options: Options) -> tuple[Path, dict[str, Any]]:
    """Measure, judge and write ``<out>/<id>/``; returns the folder and the record written."""
    seeds = 1 if experiment.deterministic else options.seeds
    options = Options(**{**asdict(options), "seeds": seeds})
    target = check_out(experiment, options)
    commit, dirty = checked_tree(options.scale, (Path(options.out),))
    planned, hashed = plan(experiment, options.scale), plan_hash(experiment, options.scale)
    start = time.perf_counter()
    with atomic_dir(target, options.overwrite, what=f"--out ({experiment.name})") as folder:
        measured = experiment.measure(experiment.scales[options.scale], options, folder)
        seconds = time.perf_counter() - start
        findings = judged(experiment.findings, measured.findings, options.scale, seeds, experiment.deterministic)
        changed = keep_history(target, folder, hashed)  # an earlier result under another plan is kept, not replaced
        deviation = {} if experiment.deterministic or seeds == planned["seeds"] else {
            "deviation": f"ran {seeds} seed(s); the plan says {planned['seeds']}"}
        if (after := tree_state((Path(options.out),))) != (commit, dirty):  # said, not refused: hours of work
            deviation["tree_changed_during_run"] = f"commit {after[0]}, dirty {after[1]} at the end"
        record = _portable({
            "experiment": experiment.name, "title": experiment.title, "scale": options.scale,
            "seeds": "deterministic" if experiment.deterministic else seeds, "wall_seconds": round(seconds, 1),
            "hardware": hardware(), **provenance(commit, dirty, hashed), **deviation,
            **({"plan_changed": changed} if changed else {}), "table": measured.table, "tokens": measured.tokens,
            "rows": measured.rows, "findings": findings, "paper": dict(experiment.paper), "figures": measured.figures,
            "plan": planned, **measured.extra})
        (folder / "results.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
        header = (f"# {experiment.name} ({options.scale} scale, {seeds_words(experiment, seeds)}, {seconds:.0f} s "
                  f"on {hardware()}; plan {hashed}, commit {(commit or 'unknown')[:10]}{' (dirty)' if dirty else ''})"
                  "\n\n")
        (folder / "table.md").write_text(header + record["table"] + "\n")
    return target, record


def tokens_line(tokens: Mapping[str, int]) -> str:
    """The tokens every arm saw, for a table caption."""
    return "Training tokens per arm (every step that touched data): " + ", ".join(
        f"{arm} {count:,}" for arm, count in tokens.items()) + "."


def parser(experiments: tuple[str, ...], extra: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reproduce",
                                     description="Reproduce the paper's experiments; `all` runs every one.")
    parser.add_argument("experiment", choices=(*experiments, *extra))
    parser.add_argument("--scale", choices=SCALES, default="smoke")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per arm (default: 1 smoke, 3 small and paper; "
                        "at least 3 are needed for a verdict)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default: results/ for small and "
                        "paper scale; runs/smoke/ for smoke, which never overwrites the committed results)")
    parser.add_argument("--overwrite", action="store_true", help="replace results tinylm wrote before")
    parser.add_argument("--skip", default="", help="comma-separated experiments to leave out of `all`")
    parser.add_argument("--model", action="append", default=[], help="extra model dir(s) for `final`")
    parser.add_argument("--source", type=Path, default=None,
                        help="a LLaMA-format model dir to inherit from (layer_skip, layer_selection, inheritance)")
    return parser


def options_from(args: argparse.Namespace, experiment: Experiment | None = None) -> Options:
    seeds = args.seeds or (experiment.seeds if experiment else DEFAULT_SEEDS)[args.scale]
    return Options(scale=args.scale, seeds=seeds, out=args.out or default_out(args.scale), source=args.source,
                   models=tuple(args.model), overwrite=args.overwrite)
