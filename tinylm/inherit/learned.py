"""Reading learned hard-concrete masks: their files and their gates as importance scores.

Plain tensors and files, no training code: ``tinylm inherit --criterion learned`` and ``tinylm.pro`` read the
``masks.safetensors`` a ``MaskLearner`` wrote without importing Lightning.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from tinylm.errors import TinyLMError
from tinylm.inherit.hard_concrete import TEMPERATURE, deterministic_values
from tinylm.inherit.importance import Importance
from tinylm.model import Masks, ModelConfig

MASKS_FILE = "masks.safetensors"
MASK_TYPES = ("hidden", "heads", "ffn", "layers")


def learned_importance(log_alphas: dict[str, Tensor], config: ModelConfig,
                       temperature: float = TEMPERATURE) -> Importance:
    """Read learned gates as importance scores (their deterministic values), with the values kept as scales.

    A dimension without gates scores every unit 1 and is not scaled; ``Importance.plan`` refuses to shrink it.
    """
    soft = {name: deterministic_values(alpha.float(), temperature) for name, alpha in log_alphas.items()}
    ones = {"hidden": torch.ones(config.hidden_size), "heads": torch.ones(config.num_layers, config.num_heads),
            "ffn": torch.ones(config.num_layers, config.intermediate_size), "layers": torch.ones(config.num_layers)}
    for name, values in soft.items():
        if values.shape != ones[name].shape:
            raise TinyLMError(f"learned {name} mask has shape {tuple(values.shape)}, the source needs "
                              f"{tuple(ones[name].shape)}; use the masks learned on this source model")
    scores = {**ones, **soft}
    return Importance(
        criterion="learned",
        embed=scores["hidden"],
        hidden=torch.zeros(config.num_layers, config.hidden_size),
        heads=scores["heads"],
        kv=torch.zeros(config.num_layers, config.num_kv_heads),
        ffn=scores["ffn"],
        layer_scores=soft.get("layers"),
        scales=Masks(**{name: soft.get(name) for name in MASK_TYPES}),
        learned=tuple(sorted(soft)),
    )


def save_masks(path: str | os.PathLike, log_alphas: dict[str, Tensor], temperature: float) -> None:
    save_file({n: a.detach().float().cpu().contiguous() for n, a in log_alphas.items()} or
              {"none": torch.zeros(0)}, str(path), metadata={"temperature": repr(temperature)})


def load_masks(path: str | os.PathLike) -> tuple[dict[str, Tensor], float]:
    """Learned log α per mask type and the temperature, from a mask learner's ``masks.safetensors``."""
    path = Path(path)
    if path.is_dir():
        path = path / MASKS_FILE
    if not path.is_file():
        raise TinyLMError(f"no learned masks at {path}; point --masks at the model dir a MaskLearner wrote")
    with safe_open(str(path), "pt") as handle:
        temperature = float((handle.metadata() or {}).get("temperature", TEMPERATURE))
    return {n: a for n, a in load_file(str(path)).items() if n in MASK_TYPES}, temperature
