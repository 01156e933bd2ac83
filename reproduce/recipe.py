"""A training recipe as data, and the fit every training experiment shares.

``Recipe`` says what a ``tinylm fit`` YAML under ``recipes/`` says (``recipe`` reads one); an experiment's scale
extends it with its own fields only. ``Recipe.data`` prepares the data module, ``Recipe.fit`` trains a
``LanguageModel`` (or a given module) and scores it by held-out bits per byte.
"""

from __future__ import annotations

import csv
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

from tinylm.data.datamodule import TextDataModule
from tinylm.model import ModelConfig
from tinylm.training.fit import fit
from tinylm.training.lm import LanguageModel

REPO = Path(__file__).resolve().parents[1]
PAPER_CORPUS = tuple(os.environ.get("TINYLM_CORPUS", "builtin").split(","))  # paper scales: comma-separated sources


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

    def data(self, seed: int, tokenizer: str | Path | None = None, batch_size: int | None = None) -> TextDataModule:
        """A prepared ``TextDataModule``; ``seed`` sets the data order, so seeds differ in data as well as init."""
        module = TextDataModule(sources=list(self.sources), tokenizer=None if tokenizer is None else str(tokenizer),
                                vocab_size=self.vocab_size, seq_len=self.seq_len,
                                batch_size=batch_size or self.batch_size, seed=seed, val_every=self.val_every)
        module.prepare_data()
        module.setup()
        return module

    def fit(self, datamodule: TextDataModule, root: Path, seed: int, config: Any = None, steps: int | None = None,
            init_from: str | None = None, module: LanguageModel | None = None, callbacks: tuple = (),
            **trainer_kwargs: Any) -> Trained:
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
