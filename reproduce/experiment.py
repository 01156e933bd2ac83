"""The experiment contract and the one runner every experiment shares.

An experiment module ``reproduce/<id>.py`` is declarative: its scales (plain data, or a recipe under
``recipes/``), its findings (``reproduce.verdict.Finding``, declared before any run) and one ``measure`` function,
bundled as ``EXPERIMENT = Experiment(...)``. ``measure(setting, options, folder)`` trains and scores at the
scale's ``setting``, draws its figures into ``folder`` and returns a ``Measured``: the table, the rows, the
tokens each arm saw, and one measurement per declared finding. This module does the rest: parses the command
line into one frozen ``Options``, refuses a bad ``--out`` before any work, builds data modules and fits models
(``data``, ``train``), times the run, judges every finding (``reproduce.verdict``) and writes
``<out>/<id>/results.json`` and ``table.md`` atomically.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch
import yaml

from reproduce.verdict import Finding, judged
from tinylm.io import atomic_dir, atomic_file, check_output_dir

SCALES = ("smoke", "small", "paper")
# seeds per scale: smoke proves the pipeline; a finding needs at least 3 seeds to be judged (5 where arms are cheap)
DEFAULT_SEEDS = {"smoke": 1, "small": 3, "paper": 3}
RESULTS = Path("results")  # the committed small-scale results and REPORT.md
REPO = Path(__file__).resolve().parents[1]


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


def save_figure(figure, folder: Path, name: str, dpi: int = 120) -> str:
    """Write a matplotlib figure atomically as ``folder/name`` (PNG), close it, and return ``name``."""
    import matplotlib.pyplot as plt

    with atomic_file(Path(folder) / name, "wb") as handle:
        figure.savefig(handle, format="png", dpi=dpi)
    plt.close(figure)
    return name


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def recipe(path: str) -> dict[str, Any]:
    """A LightningCLI recipe under ``recipes/`` as data, so a scale and a recipe never restate the same settings:
    ``{"config", "lr", "min_lr", "warmup", "sources", "vocab_size", "seq_len", "batch_size", "val_batches"}``."""
    spec = yaml.safe_load((REPO / "recipes" / path).read_text())
    model, data, trainer = spec["model"]["init_args"], spec["data"], spec.get("trainer", {})
    return {"config": model["config"], "lr": model["lr"], "min_lr": model["min_lr"], "warmup": model["warmup"],
            "sources": tuple(data["sources"]), "vocab_size": data["vocab_size"], "seq_len": data["seq_len"],
            "batch_size": data["batch_size"], "val_batches": trainer.get("limit_val_batches", 20)}


# ---- the building blocks experiments share ---------------------------------------------------------------
def data(sources: str | tuple[str, ...] | list[str], seq_len: int, batch_size: int, seed: int,
         tokenizer: str | Path | None = None, vocab_size: int = 8000, val_every: int = 50):
    """A prepared ``TextDataModule``; ``seed`` sets the data order, so seeds differ in data as well as init."""
    from tinylm.datamodule import TextDataModule

    module = TextDataModule(sources=[sources] if isinstance(sources, str) else list(sources),
                            tokenizer=None if tokenizer is None else str(tokenizer), vocab_size=vocab_size,
                            seq_len=seq_len, batch_size=batch_size, seed=seed, val_every=val_every)
    module.prepare_data()
    module.setup()
    return module


@dataclass
class Trained:
    bpb: float
    tokens: int
    module: Any = field(repr=False)
    curve: list[tuple[float, float]] = field(default_factory=list)  # (training tokens, training loss)


def train(config, datamodule, root: Path, steps: int, seed: int, lr: float, min_lr: float | None = None,
          warmup: float = 0.05, val_batches: int | float = 1.0, init_from: str | None = None, module=None,
          callbacks: tuple = (), **trainer_kwargs: Any) -> Trained:
    """Fit a ``LanguageModel`` (or the given ``module``) for ``steps`` and score it by held-out bits per byte."""
    from tinylm.lm import LanguageModel
    from tinylm.train import fit

    if module is None:
        module = LanguageModel(config, init_from=init_from, lr=lr, min_lr=lr / 10 if min_lr is None else min_lr,
                               warmup=warmup, model_dir=str(root / "model"))
    trainer = fit(module, datamodule, root, max_steps=steps, seed=seed, limit_val_batches=val_batches,
                  callbacks=list(callbacks), **trainer_kwargs)
    with open(root / "logs" / "version_0" / "metrics.csv", newline="") as handle:
        curve = [(float(row["train/tokens"]), float(row["train/loss"]))
                 for row in csv.DictReader(handle) if row.get("train/loss") and row.get("train/tokens")]
    bpb = trainer.callback_metrics.get("val/bpb")
    return Trained(float(bpb) if bpb is not None else float("nan"), module.tokens_seen, module, curve)


@contextmanager
def scratch(name: str) -> Iterator[Path]:
    """A temp folder for training runs: they never land beside the results."""
    with tempfile.TemporaryDirectory(prefix=f"tinylm-{name}-") as folder:
        yield Path(folder)


# ---- the runner --------------------------------------------------------------------------------------------
def check_out(experiment: Experiment, options: Options) -> Path:
    """Refuse ``<out>/<id>`` before any work: an existing result is replaced only with --overwrite, and only when
    tinylm wrote it."""
    return check_output_dir(Path(options.out) / experiment.name, options.overwrite, what=f"--out ({experiment.name})")


def run(experiment: Experiment, options: Options) -> tuple[Path, dict[str, Any]]:
    """Measure, judge and write ``<out>/<id>/``; returns the folder and the record written."""
    seeds = 1 if experiment.deterministic else options.seeds
    options = Options(**{**asdict(options), "seeds": seeds})
    target = check_out(experiment, options)
    start = time.perf_counter()
    with atomic_dir(target, options.overwrite, what=f"--out ({experiment.name})") as folder:
        measured = experiment.measure(experiment.scales[options.scale], options, folder)
        seconds = time.perf_counter() - start
        findings = judged(experiment.findings, measured.findings, options.scale, seeds, experiment.deterministic)
        record = _portable({
            "experiment": experiment.name, "title": experiment.title, "scale": options.scale,
            "seeds": "deterministic" if experiment.deterministic else seeds, "wall_seconds": round(seconds, 1),
            "hardware": hardware(), "table": measured.table, "tokens": measured.tokens, "rows": measured.rows,
            "findings": findings, "paper": dict(experiment.paper), "figures": measured.figures, **measured.extra})
        (folder / "results.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
        header = (f"# {experiment.name} ({options.scale} scale, {seeds_words(experiment, seeds)}, {seconds:.0f} s "
                  f"on {hardware()})\n\n")
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
