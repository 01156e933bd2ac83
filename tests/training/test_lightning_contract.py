"""The few places tinylm leans on Lightning internals, each pinned here so that a Lightning upgrade that moves
them fails this test instead of silently changing a run (issue: private API breaks without a sound).

- ``RunCLI._parse_ckpt_path``: LightningCLI (≥ 2.3) loads ``--ckpt_path``'s hyperparameters over the command's;
  tinylm overrides it to do nothing and refuses changed settings itself (``LanguageModel.on_load_checkpoint``).
- ``_AppendingWriter``: ``CSVLogger``'s ``ExperimentWriter`` deletes an existing ``metrics.csv`` in ``__init__``;
  tinylm's writer sets the same attributes without calling it, so a resume appends.
- ``LightningModule._trainer``: the public ``trainer`` property raises when detached; code that also runs outside
  a Trainer asks whether one is attached.
- ``trainer.fit_loop.epoch_loop.max_steps`` / ``fit_loop.max_epochs``: the rounds callback ends the run after its
  last round (``Trainer.max_steps`` has no setter); ``epoch_loop.batch_progress``: the batches a resumed epoch skips.
"""

from __future__ import annotations

import inspect

import lightning as L
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from tinylm.training.runs import RunCLI, _AppendingWriter


def test_the_cli_hook_tinylm_replaces_is_still_lightnings():
    assert "_parse_ckpt_path" in vars(LightningCLI)
    assert inspect.signature(RunCLI._parse_ckpt_path).parameters.keys() == \
        inspect.signature(LightningCLI._parse_ckpt_path).parameters.keys()


def test_the_csv_writer_attributes_tinylm_sets_are_the_ones_lightning_uses(tmp_path):
    lightning = ExperimentWriter(str(tmp_path / "a"))
    ours = _AppendingWriter(str(tmp_path / "b"))
    assert set(vars(lightning)) <= set(vars(ours)), set(vars(lightning)) - set(vars(ours))
    assert inspect.signature(ExperimentWriter.__init__).parameters.keys() == {"self", "log_dir"}


def test_the_loop_attributes_tinylm_reads_and_sets_exist():
    trainer = L.Trainer(max_steps=5, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit_loop.epoch_loop.max_steps = 3  # what MultiRoundTraining does
    assert trainer.max_steps == 3
    trainer.fit_loop.max_epochs = -1
    assert trainer.max_epochs == -1
    assert trainer.fit_loop.epoch_loop.batch_progress.current.processed == 0
    assert L.LightningModule()._trainer is None
