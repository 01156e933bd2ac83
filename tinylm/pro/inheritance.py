"""Stage 3, inheritance: the target shape's layers (both-ends) and widths (Taylor) of the compact source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tinylm.data.datamodule import TextDataModule
from tinylm.inherit.mask_learner import MaskLearner
from tinylm.inherit.pipeline import Calibration, inherit, needs_masks
from tinylm.inherit.plan import SHAPE_FIELDS
from tinylm.model import ModelConfig
from tinylm.pro.data import read_jsonl, token_stream
from tinylm.pro.stages import stage_record
from tinylm.training.fit import fit


def inherit_model(tmp: Path, compact: Path, shape: ModelConfig, data_dir: Path, layers: str, criterion: str,
                  calibration_size: int, mask_steps: int, seq_len: int, batch_size: int,
                  seed: int) -> dict[str, Any]:
    """Select layers and widths of the compact source (``tinylm inherit``'s pipeline); Taylor's gradients come from
    the training sample, never the held-out text. Writes ``model/``."""
    masks = None
    if needs_masks(layers, criterion):
        masks = _learn_masks(tmp / "masks", compact, shape, data_dir, mask_steps, seq_len, batch_size, seed)
    sample = Calibration(lambda tokenizer: token_stream(tokenizer, read_jsonl(data_dir / "sample.jsonl")),
                         calibration_size, seq_len, batch_size=4, about={"text": "the training sample"})
    # the masks are named inside the stage folder: tmp is renamed into place when the stage finishes
    child = inherit(compact, shape, tmp / "model", layers=layers, criterion=criterion, calibration=sample,
                    masks=masks, masks_name="masks/model", seed=seed)
    print(f"tinylm pro: {child.summary()}", flush=True)
    return {"model": "model", "layers": child.layers, "criterion": criterion, "layer_strategy": layers}


def _learn_masks(folder: Path, compact: Path, shape: ModelConfig, data_dir: Path, steps: int, seq_len: int,
                 batch_size: int, seed: int) -> str:
    """Train hard-concrete masks towards the target for ``steps`` steps (the learned criterion's input)."""
    target = {name: getattr(shape, name) for name in SHAPE_FIELDS}
    learner = MaskLearner(source=str(compact), target=target, model_dir=str(folder / "model"))
    learner.announce_model_dir = False  # inside the stage's temp folder; the stage names the final one
    every = stage_record(data_dir)["result"]["fit_val_every"]
    data = TextDataModule(sources=[str(data_dir / "train.jsonl")], tokenizer=str(compact), seq_len=seq_len,
                          batch_size=batch_size, val_every=every, seed=seed)
    fit(learner, data, folder, max_steps=steps, seed=seed, limit_val_batches=5)
    return str(folder / "model")
