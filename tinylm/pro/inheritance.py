"""Stage 3, inheritance: the target shape's layers (both-ends) and widths (Taylor) of the compact source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tinylm.model import ModelConfig
from tinylm.pro.data import read_jsonl, token_stream
from tinylm.pro.stages import stage_record


def inherit_model(tmp: Path, compact: Path, shape: ModelConfig, data_dir: Path, layers: str, criterion: str,
                  calibration_size: int, mask_steps: int, seq_len: int, batch_size: int,
                  seed: int) -> dict[str, Any]:
    """Select layers and widths of the compact source (``tinylm inherit``'s path); Taylor's gradients come from
    the training sample, never the held-out text. Writes ``model/``."""
    from tinylm.artifacts.model_dir import load_model_dir
    from tinylm.inherit import (
        calibration_blocks,
        importance,
        learned_importance,
        load_masks,
        save_inherited,
        select_layers,
    )

    model, tokenizer = load_model_dir(compact)
    provenance: dict[str, Any] = {"parent": str(compact), "criterion": criterion, "layer_strategy": layers,
                                  "seed": seed}
    learned = None
    if "learned" in (layers, criterion):
        masks = _learn_masks(tmp / "masks", compact, shape, data_dir, mask_steps, seq_len, batch_size, seed)
        log_alphas, temperature = load_masks(masks)
        learned = learned_importance(log_alphas, model.config, temperature)
        provenance["masks"] = "masks/model"
    kept = select_layers(layers, model.config.num_layers, shape.num_layers,
                         learned.layer_scores if learned is not None else None)
    if criterion == "learned":
        scores = learned
    else:
        blocks = None
        if criterion == "taylor":
            blocks = calibration_blocks(token_stream(tokenizer, read_jsonl(data_dir / "sample.jsonl")),
                                        calibration_size, seq_len, seed)
            provenance["calibration"] = {"text": "the training sample", "size": calibration_size, "seq_len": seq_len}
        scores = importance(model, criterion, blocks, batch_size=4)
    plan = scores.plan(shape, kept)
    save_inherited(tmp / "model", model.state_dict(), model.config, plan, tokenizer, provenance)
    print(f"tinylm pro: inherited {shape.num_params():,} of {model.config.num_params():,} parameters "
          f"({criterion}, layers {kept})", flush=True)
    return {"model": "model", "layers": kept, "criterion": criterion, "layer_strategy": layers}


def _learn_masks(folder: Path, compact: Path, shape: ModelConfig, data_dir: Path, steps: int, seq_len: int,
                 batch_size: int, seed: int) -> str:
    """Train hard-concrete masks towards the target for ``steps`` steps (the learned criterion's input)."""
    from tinylm.data.datamodule import TextDataModule
    from tinylm.inherit.mask_learner import MaskLearner
    from tinylm.inherit.plan import SHAPE_FIELDS
    from tinylm.training.fit import fit

    target = {name: getattr(shape, name) for name in SHAPE_FIELDS}
    learner = MaskLearner(source=str(compact), target=target, model_dir=str(folder / "model"))
    learner.announce_model_dir = False  # inside the stage's temp folder; the stage names the final one
    every = stage_record(data_dir)["result"]["fit_val_every"]
    data = TextDataModule(sources=[str(data_dir / "train.jsonl")], tokenizer=str(compact), seq_len=seq_len,
                          batch_size=batch_size, val_every=every, seed=seed)
    fit(learner, data, folder, max_steps=steps, seed=seed, limit_val_batches=5)
    return str(folder / "model")
