"""``tinylm inherit``: initialise a smaller model dir from a larger one (layer selection + width pruning)."""

from __future__ import annotations

import json
from pathlib import Path

from tinylm.artifacts import builtin
from tinylm.artifacts.io import check_output_dir
from tinylm.data.datamodule import TextDataModule
from tinylm.errors import TinyLMError
from tinylm.inherit import pipeline
from tinylm.inherit.pipeline import Calibration, check_criterion
from tinylm.tokenizer import load_tokenizer


def inherit(
    source: str,
    target: str,
    out: str,
    layers: str = "both-ends",
    criterion: str = "taylor",
    masks: str | None = None,
    calibration: str = "builtin",
    calibration_size: int = 16,
    seq_len: int = 128, batch_size: int = 4,  # the Taylor calibration's blocks
    keep_ids: str | None = None, tokenizer: str | None = None,  # a compacted vocabulary for the child
    seed: int = 0,
    overwrite: bool = False,
) -> None:
    """Inherit a smaller model from SOURCE: pick layers, keep the most important heads, FFN neurons and channels.

    Args:
        source: the larger model dir (any LLaMA-format dir: tinylm's or transformers').
        target: the smaller shape: a preset name (e.g. tiny), a model dir whose shape to take, or a JSON mapping
            of the shape fields that change, e.g. '{"hidden_size": 128, "num_heads": 2, "num_layers": 2}'.
        out: where the small model dir is written.
        layers: which source layers to keep: first | last | both-ends | uniform | learned | a list like 0,1,5.
        criterion: importance of heads/neurons/channels: l1 | l2 | taylor | learned.
        masks: a MaskLearner output dir (or its masks.safetensors); needed by criterion or layers ``learned``.
        calibration: text sources for Taylor's gradients (tokenized with the source's tokenizer).
        calibration_size: number of calibration blocks.
        seq_len: tokens per calibration block.
        batch_size: calibration blocks per backward pass.
        keep_ids: a JSON file with the vocabulary ids to keep (a list, an object with "keep_ids", or the
            ``compact.json`` that ``tinylm tokenizer compact`` writes), for a compact tokenizer; needs ``tokenizer``.
        tokenizer: the tokenizer written into the new model dir (default: the source's).
        seed: calibration sampling seed.
        overwrite: replace an existing ``out`` that tinylm wrote (a folder tinylm did not write is never replaced).
    """
    check_criterion(criterion)
    inputs = [p for p in (source, masks, keep_ids, tokenizer) if p is not None]
    check_output_dir(out, overwrite, "--out", inputs=inputs)  # before any work, and never over an input
    text = Calibration(lambda _: TextDataModule(sources=calibration, tokenizer=source, seq_len=seq_len, seed=seed),
                       calibration_size, seq_len, batch_size, about={"sources": calibration})
    child = pipeline.inherit(source, target, out, layers=layers, criterion=criterion, calibration=text, masks=masks,
                             seed=seed, keep_ids=None if keep_ids is None else _read_keep_ids(keep_ids),
                             tokenizer=None if tokenizer is None else load_tokenizer(builtin.resolve(tokenizer)),
                             overwrite=overwrite)
    print(f"tinylm: {child.summary()} into {child.model_dir}")


def _read_keep_ids(path: str) -> list[int]:
    file = Path(path)
    if not file.is_file():
        raise TinyLMError(f"keep_ids file {file} does not exist; give a JSON list of vocabulary ids")
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise TinyLMError(f"keep_ids file {file} is not JSON ({err}); give a JSON list of vocabulary ids") from None
    ids = data.get("keep_ids", data.get("id_map")) if isinstance(data, dict) else data  # id_map: compact.json
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        raise TinyLMError(f"keep_ids file {file} holds no list of integer ids; give a JSON list of vocabulary ids")
    return ids
