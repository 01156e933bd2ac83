"""Where a ``tinylm fit`` run writes, and which earlier run ``--ckpt_path last|auto`` resumes.

Everything a run writes lives under one folder, ``--trainer.default_root_dir`` (the recipe's ``runs/<name>``)::

    <root>/logs/version_<N>/   metrics.csv, hparams.yaml, config.yaml, checkpoints/, rounds/, model/

A fresh run takes the next ``version_<N>``, so it never touches an earlier run. ``--ckpt_path last`` resumes
the newest version that holds ``checkpoints/last.ckpt`` and keeps logging into that same version (metrics are
appended, not replaced); with nothing to resume it is an error. ``--ckpt_path auto`` resumes when there is
something to resume and starts a fresh version otherwise (litgpt's ``resume: auto``). ``RunCLI`` applies these
rules to ``tinylm fit`` before anything is built, so a refused command writes nothing.
"""

from __future__ import annotations

import csv
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from jsonargparse import Namespace
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities.exceptions import SIGTERMException

from tinylm.artifacts import builtin
from tinylm.artifacts.io import check_apart, check_output_dir, check_writable, is_tinylm_dir
from tinylm.artifacts.model_dir import check_same_tokenizer
from tinylm.errors import TinyLMError
from tinylm.tokenizer import load_tokenizer

LOGS = "logs"
LAST = "last.ckpt"


def versions(root: str | os.PathLike) -> list[int]:
    """The run versions under ``<root>/logs``, oldest first."""
    folder = Path(root) / LOGS
    if not folder.is_dir():
        return []
    found = (re.fullmatch(r"version_(\d+)", p.name) for p in folder.iterdir() if p.is_dir())
    return sorted(int(m.group(1)) for m in found if m)


def last_checkpoint(root: str | os.PathLike) -> tuple[int, Path] | None:
    """(version, its last.ckpt) of the newest run under ``root`` that can be resumed, or None."""
    for version in reversed(versions(root)):
        path = Path(root) / LOGS / f"version_{version}" / "checkpoints" / LAST
        if path.is_file():
            return version, path
    return None


def resolve_resume(root: str | os.PathLike, ckpt_path: str | None) -> tuple[str | None, int | None]:
    """Turn ``--ckpt_path`` into (checkpoint file or None, the log version to continue or None for a new one)."""
    if ckpt_path in ("last", "auto"):
        found = last_checkpoint(root)
        if found is None:
            if ckpt_path == "auto":
                return None, None
            raise TinyLMError(f"--ckpt_path last: nothing to resume under {Path(root) / LOGS} (no "
                              f"version_*/checkpoints/{LAST}); drop --ckpt_path to start a new run, use "
                              "--ckpt_path auto to resume only when possible, or check --trainer.default_root_dir")
        version, path = found
        check_checkpoint_file(path, f"--ckpt_path {ckpt_path} ->")
        return str(path), version
    if ckpt_path is None:
        return None, None
    check_checkpoint_file(ckpt_path)
    return ckpt_path, None


def trim_metrics(root: str | os.PathLike, checkpoint: str | os.PathLike) -> int:
    """Drop the rows a killed run logged after ``checkpoint`` from the newest metrics.csv under ``root/logs``
    (the resumed run trains and logs those steps again); returns the checkpoint's step."""
    step = int(torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)["global_step"])
    found = versions(root)
    path = Path(root) / LOGS / f"version_{found[-1]}" / "metrics.csv" if found else None
    if path is not None and path.is_file():
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            fields, rows = reader.fieldnames or [], [row for row in reader if int(row.get("step") or 0) < step]
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
    return step


def check_checkpoint_file(path: str | os.PathLike, what: str = "--ckpt_path") -> None:
    """Refuse a missing, truncated, corrupted or unsafe checkpoint before anything is built.

    Torch checkpoints are zip files whose entries carry CRC-32s: a flipped byte fails the check (torch's own
    reader never looks, and loads the garbage). Loading with ``weights_only`` refuses pickled code; ``mmap`` keeps
    that look cheap (the tensors are not read)."""
    path = Path(path)
    if not path.is_file():
        raise TinyLMError(f"{what} {path} does not exist; give a .ckpt file, or 'last' / 'auto' to resume "
                          "the latest run under --trainer.default_root_dir")
    fix = "pick another checkpoint (e.g. an earlier one in the same checkpoints/ folder)"
    if not zipfile.is_zipfile(path):
        raise TinyLMError(f"{what} {path} is truncated or not a Lightning checkpoint; {fix}")
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        broken = str(err)
    if broken is not None:
        raise TinyLMError(f"{what} {path} is corrupted ({broken} fails its CRC check); {fix}")
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:
        raise TinyLMError(f"{what} {path} holds pickled objects other than weights and plain data, which tinylm "
                          f"never loads (they could run code); {fix}") from None
    except (RuntimeError, EOFError, ValueError) as err:
        raise TinyLMError(f"{what} {path} cannot be read ({str(err).splitlines()[0]}); {fix}") from None


class SaveOnSigterm(Callback):
    """A scheduler's SIGTERM ends the run at the next step boundary with a checkpoint, and a non-zero exit.

    Lightning only notes the signal (``trainer.received_sigterm``) and, in one process, goes on to the end of the
    epoch, then exits 0 without saving. Here every rank decides together after each step (one all-reduce of a
    bool), saves ``checkpoints/last.ckpt`` (what ``--ckpt_path last`` resumes) and raises ``Stopped``, which the
    CLI turns into exit status 143 (128 + SIGTERM), as schedulers expect.
    """

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.strategy.reduce_boolean_decision(trainer.received_sigterm, all=False):
            self.stop(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # a SIGTERM during validation (or the sanity check): Lightning raises SIGTERMException there, a SystemExit
        # with status 0 and no checkpoint; between steps one process can save, several could deadlock
        if isinstance(exception, SIGTERMException):
            self.stop(trainer, save=trainer.world_size == 1)

    def stop(self, trainer: L.Trainer, save: bool = True) -> None:
        """Save ``checkpoints/last.ckpt`` and end the run with ``Stopped`` (exit status 143)."""
        saved = None
        for callback in trainer.checkpoint_callbacks if save else ():
            if callback.dirpath:
                saved = Path(callback.dirpath) / LAST
                trainer.save_checkpoint(saved)  # a collective under DDP/FSDP: every rank is here
                break
        raise Stopped(f"stopped by SIGTERM after step {trainer.global_step}; "
                      + (f"checkpoint saved to {saved}; continue with --ckpt_path last" if saved else
                         "this run has no checkpoint callback, so nothing was saved" if save else
                         "it came during validation on several processes, so nothing was saved; continue from "
                         "the last periodic checkpoint"))


class Stopped(SystemExit):
    """A run ended early by a signal, after saving; exit status 143."""

    def __init__(self, message: str) -> None:
        super().__init__(143)
        self.message = message


class RunLogger(CSVLogger):
    """``CSVLogger`` under ``<root>/logs/version_<N>`` that appends to an existing ``metrics.csv`` on resume
    (Lightning's own deletes it when the version folder exists)."""

    def __init__(self, save_dir: str, name: str = LOGS, version: int | None = None, **kwargs) -> None:
        super().__init__(save_dir, name=name, version=version, **kwargs)

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


class _AppendingWriter(ExperimentWriter):
    """Continues an existing metrics.csv, and makes its folder only at the first write: Lightning builds the
    writer before setup, so a run refused during setup (or a refused resume) leaves no empty version folder.
    It sets ExperimentWriter's attributes without calling its __init__: pinned by tests/training/test_lightning_contract.py."""

    def __init__(self, log_dir: str) -> None:  # ExperimentWriter's, without its makedirs and metrics.csv removal
        self.metrics: list[dict[str, float]] = []
        self.metrics_keys: list[str] = []
        self.hparams: dict = {}
        self._fs = get_filesystem(log_dir)
        self.log_dir = log_dir
        self.metrics_file_path = os.path.join(log_dir, self.NAME_METRICS_FILE)
        if os.path.isfile(self.metrics_file_path):  # continue the file: its header holds the keys logged so far
            with open(self.metrics_file_path, newline="") as handle:
                self.metrics_keys = list(csv.DictReader(handle).fieldnames or [])

    def save(self) -> None:
        if self.metrics:
            self._fs.makedirs(self.log_dir, exist_ok=True)
        super().save()

    def log_hparams(self, params: dict) -> None:
        self._fs.makedirs(self.log_dir, exist_ok=True)
        super().log_hparams(params)


def check_steps(max_steps: int | None, max_epochs: int | None = None, rounds: bool = False) -> None:
    """Refuse a run that trains nothing, or one with no end (the LR schedule would span Lightning's guess)."""
    if max_steps is not None and (max_steps == 0 or max_steps < -1):
        raise TinyLMError(f"--trainer.max_steps {max_steps} trains nothing; give a positive number of steps "
                          "(or -1 to let max_epochs or the rounds callback decide)")
    if max_steps in (None, -1) and max_epochs in (None, -1) and not rounds:
        raise TinyLMError("--trainer.max_steps -1 with no --trainer.max_epochs gives the run no end (and the "
                          "learning-rate schedule no length); give --trainer.max_steps N, or --trainer.max_epochs N "
                          "for N passes over the data")


def _init_args(config: Namespace) -> tuple[Namespace, Namespace]:
    """The model's and the data's arguments of a parsed fit config (class_path form or plain)."""
    init = config.model.init_args if "init_args" in config.model else Namespace()
    data = config.data.init_args if "init_args" in (config.data or {}) else (config.data or Namespace())
    return init, data


def fit_inputs(config: Namespace) -> list[str]:
    """Everything a fit reads from disk (the model it starts from, the tokenizer, the text): no output may be,
    contain or lie inside one of them."""
    init, data = _init_args(config)
    sources = data.get("sources") or []
    return [p for p in (init.get("init_from"), init.get("source"), data.get("tokenizer"),
                        *([sources] if isinstance(sources, str) else sources)) if p]


def check_init_tokenizer(config: Namespace) -> None:
    """Weights taken from a model dir must train under that model's own tokenizer: refused before anything is
    written (``LanguageModel.configure_model`` checks it again for Python callers)."""
    init, data = _init_args(config)
    start, tokenizer = init.get("init_from") or init.get("source"), data.get("tokenizer")
    if start and tokenizer:
        check_same_tokenizer(builtin.resolve(start), load_tokenizer(builtin.resolve(tokenizer)))


class RunCLI(LightningCLI):
    """LightningCLI with tinylm's run rules: one root for everything, ``--ckpt_path last|auto``, ``--overwrite``.

    The checks run before anything is built, so a refused command writes nothing.
    """

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--overwrite", type=bool, nargs="?", const=True, default=False,
                            help="replace an existing model dir (--model.model_dir) that tinylm wrote")

    def _parse_ckpt_path(self) -> None:
        """LightningCLI would load the checkpoint here and let its hyperparameters silently replace the command's;
        tinylm instead refuses a resume whose model, data or rounds settings differ (``on_load_checkpoint``).
        A private Lightning hook: pinned by tests/training/test_lightning_contract.py."""

    def before_instantiate_classes(self) -> None:
        fitting = self.subcommand == "fit"
        config = self.config[self.subcommand] if self.subcommand else self.config  # run=False: no subcommand
        trainer, version = config.trainer, None
        root = trainer.default_root_dir or "."
        if fitting:
            rounds = any("MultiRoundTraining" in str(getattr(c, "class_path", c)) for c in trainer.callbacks or [])
            check_steps(trainer.max_steps, trainer.max_epochs, rounds)
            config.ckpt_path, version = resolve_resume(root, config.ckpt_path)
            if config.ckpt_path is not None:
                self.save_config_callback = None  # the run's config.yaml stays the one it started with
        elif config.get("ckpt_path") not in (None, "last", "best"):
            check_checkpoint_file(config.ckpt_path)
        if trainer.logger is None or trainer.logger is True:
            trainer.logger = Namespace(class_path="tinylm.training.runs.RunLogger",
                                       init_args=Namespace(save_dir=str(root), name=LOGS, version=version))
        if config.overwrite:
            config.model.init_args.overwrite = True
        own = Path(root) / LOGS / f"version_{version}" / "model"
        if fitting and version is not None and "init_args" in config.model and \
                not config.model.init_args.get("model_dir") and is_tinylm_dir(own):
            config.model.init_args.overwrite = True  # a resumed run owns the model dir in its log folder
        init = config.model.init_args if "init_args" in config.model else Namespace()
        model_dir = init.get("model_dir")
        if fitting:  # refused before anything is built or written
            inputs = fit_inputs(config)
            check_init_tokenizer(config)
            check_apart(root, inputs, "--trainer.default_root_dir")
            check_writable(root, "--trainer.default_root_dir")
            if model_dir:
                check_output_dir(model_dir, bool(init.get("overwrite")), "--model.model_dir",
                                 protect=[Path(root) / LOGS], inputs=inputs)
