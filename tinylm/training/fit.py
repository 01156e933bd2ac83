"""Training from Python (reproduce scripts, tests): the same Trainer a recipe builds, in one call."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from tinylm.data.datamodule import TextDataModule
from tinylm.training.runs import LOGS, RunLogger, versions


def fit(
    module: L.LightningModule,
    data: TextDataModule,
    root_dir: str | Path,
    max_steps: int,
    seed: int = 1234,
    val_check_interval: int | None = None,
    limit_val_batches: int | float = 1.0,
    callbacks: Sequence[L.Callback] = (),
    progress: bool = False,
    ckpt_path: str | None = None,
    flush_logs_every_n_steps: int = 100,
    **trainer_kwargs: Any,
) -> L.Trainer:
    """Seed, build a CPU/GPU Trainer logging CSV under ``root_dir``, and fit ``module`` on ``data``.

    Validation runs every ``val_check_interval`` steps (default: once, at the end). Resumed from ``ckpt_path``,
    the run keeps logging into the metrics.csv of the newest version under ``root_dir/logs``.
    """
    L.seed_everything(seed, verbose=False)
    trainer = L.Trainer(
        default_root_dir=str(root_dir),
        max_steps=max_steps,
        max_epochs=-1,
        val_check_interval=val_check_interval or max_steps,
        check_val_every_n_epoch=None,
        limit_val_batches=limit_val_batches,
        gradient_clip_val=1.0,
        logger=RunLogger(str(root_dir), name=LOGS, version=versions(root_dir)[-1] if ckpt_path and versions(root_dir)
                         else None, flush_logs_every_n_steps=flush_logs_every_n_steps),
        callbacks=list(callbacks),
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        **trainer_kwargs,
    )
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    return trainer
