"""The inheritance pipeline, written once: a source model dir in, a smaller model dir out (docs/paper.md §2).

Load the source, resolve the target shape, read learned masks where they decide something, pick the layers, score
the widths (L1, L2, Taylor on calibration blocks, or the learned gates), plan, fold-and-slice and write ``out``.
``tinylm inherit``, ``tinylm pro``'s inherit stage and the ``reproduce`` experiments all call ``inherit``; each
says only where its calibration text and masks come from. Learning masks is training (``MaskLearner``, Lightning),
so it happens before, in the caller: this module reads masks and stays light.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinylm.artifacts import builtin
from tinylm.artifacts.model_dir import load_model_dir
from tinylm.errors import TinyLMError
from tinylm.inherit.importance import CRITERIA, Importance, calibration_blocks, importance
from tinylm.inherit.layers import select_layers
from tinylm.inherit.learned import learned_importance, load_masks
from tinylm.inherit.materialize import save_inherited
from tinylm.inherit.plan import resolve_target
from tinylm.model import ModelConfig, Transformer
from tinylm.tokenizer import Tokenizer

WIDTH_CRITERIA = (*CRITERIA, "learned")  # the scored criteria and the learned masks' gates


@dataclass(frozen=True)
class Calibration:
    """Taylor's calibration set: ``size`` blocks of ``seq_len`` tokens, ``batch_size`` blocks per backward pass.

    ``tokens`` makes the text from the source's tokenizer: a 1-D token stream or a ``TextDataModule`` (what
    ``calibration_blocks`` reads). It is called only when the criterion is Taylor, since tokenizing a corpus is the
    costly part. ``about`` is what tinylm.json says the text was, beside its size and seq_len.
    """

    tokens: Callable[[Tokenizer | None], Any]
    size: int
    seq_len: int
    batch_size: int = 8
    about: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Inherited:
    """What ``inherit`` wrote: the small model dir and what a caller reports or budgets."""

    model_dir: Path
    config: ModelConfig  # the small model's
    source_config: ModelConfig
    layers: list[int]  # the source layers kept, in order
    criterion: str
    calibration_tokens: int  # tokens Taylor's calibration read (0 for the other criteria): part of a token budget

    def summary(self) -> str:
        """One line for a log: how many parameters were kept, by which criterion, from which layers."""
        return (f"inherited {self.config.num_params():,} of {self.source_config.num_params():,} parameters "
                f"({self.criterion}, layers {self.layers})")


def check_criterion(criterion: str) -> None:
    """Refuse an unknown width criterion (the CLI calls this before any other work)."""
    if criterion not in WIDTH_CRITERIA:
        raise TinyLMError(f"unknown criterion {criterion!r}; choose one of {', '.join(WIDTH_CRITERIA)}")


def needs_masks(layers: str | Sequence[int], criterion: str) -> bool:
    """Whether learned masks decide anything: the widths (criterion ``learned``) or the layers (``learned``)."""
    return criterion == "learned" or layers == "learned"


def inherit(
    source: str | os.PathLike,
    target: ModelConfig | str | dict[str, int],
    out: str | os.PathLike,
    *,
    layers: str | Sequence[int] = "both-ends",
    criterion: str = "taylor",
    calibration: Calibration | None = None,
    masks: str | os.PathLike | None = None,
    masks_name: str | None = None,
    seed: int = 0,
    keep_ids: Sequence[int] | None = None,
    tokenizer: Tokenizer | None = None,
    overwrite: bool = False,
) -> Inherited:
    """Inherit ``target`` from ``source``: keep its layers by ``layers`` and its heads, FFN neurons and hidden
    channels by ``criterion``; write the small model dir to ``out`` (atomically).

    Args:
        source: the larger model dir (a path or a ``builtin:`` name; tinylm.json names it as given).
        target: the smaller shape: a ``ModelConfig``, a preset name, a model dir, or a mapping (or JSON text) of
            the shape fields that change (``resolve_target``).
        out: where the small model dir goes.
        layers: first | last | both-ends | uniform | learned, or the source layer indices to keep.
        criterion: l1 | l2 | taylor | learned.
        calibration: Taylor's calibration text and sizes; needed by ``taylor``, unused by the others.
        masks: a MaskLearner output dir (or its masks.safetensors); needed where ``needs_masks``.
        masks_name: how tinylm.json names the masks (default: their path), e.g. relative to a folder that is
            renamed into place.
        seed: the calibration sample's seed (recorded).
        keep_ids: the vocabulary rows to keep, for a compact tokenizer; needs ``tokenizer``.
        tokenizer: the tokenizer written into the new dir (default: the source's).
        overwrite: replace an existing ``out`` that tinylm wrote.
    """
    check_criterion(criterion)
    model, source_tokenizer = load_model_dir(builtin.resolve(source))
    config = model.config
    shape = resolve_target(target, config)
    provenance: dict[str, Any] = {"parent": str(source), "criterion": criterion, "layer_strategy": layers,
                                  "seed": seed}
    learned = None
    if needs_masks(layers, criterion):
        if masks is None:
            raise TinyLMError("criterion/layers 'learned' needs --masks, the output dir of a MaskLearner run")
        log_alphas, temperature = load_masks(masks)
        learned = learned_importance(log_alphas, config, temperature)
        provenance["masks"] = masks_name or str(masks)
    kept = select_layers(layers, config.num_layers, shape.num_layers,
                         learned.layer_scores if learned is not None else None)
    if keep_ids is not None and tokenizer is None:
        raise TinyLMError("--keep_ids changes the vocabulary; give the matching compact tokenizer with --tokenizer")
    scores, calibration_tokens = _width_scores(model, criterion, learned, calibration, source_tokenizer, seed,
                                               provenance)
    plan = scores.plan(shape, kept, keep_ids)
    path = save_inherited(out, model.state_dict(), config, plan,
                          source_tokenizer if tokenizer is None else tokenizer, provenance, overwrite=overwrite)
    return Inherited(Path(path), plan.config(config), config, kept, criterion, calibration_tokens)


def _width_scores(model: Transformer, criterion: str, learned: Importance | None, calibration: Calibration | None,
                  tokenizer: Tokenizer | None, seed: int, provenance: dict[str, Any]) -> tuple[Importance, int]:
    """The importance of every head, neuron and channel, and the calibration tokens read; records the
    calibration set in ``provenance``."""
    if criterion == "learned":
        assert learned is not None  # needs_masks holds for the learned criterion, so the masks were read
        return learned, 0
    if criterion != "taylor":
        return importance(model, criterion), 0
    if calibration is None:
        raise TinyLMError("criterion 'taylor' needs calibration text for its gradients; give a Calibration")
    blocks = calibration_blocks(calibration.tokens(tokenizer), calibration.size, calibration.seq_len, seed)
    provenance["calibration"] = {**calibration.about, "size": calibration.size, "seq_len": calibration.seq_len}
    return importance(model, "taylor", blocks, calibration.batch_size), blocks.numel()
