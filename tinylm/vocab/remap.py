"""Remapping a model to a compact tokenizer: its embedding and output-head rows follow the new ids
(tied or untied), matched by piece string, so the model keeps its weights under the new vocabulary."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import torch

from tinylm.artifacts.io import check_output_dir
from tinylm.artifacts.model_dir import (load_config, load_state_dict, read_provenance, resolve_model_dir,
                                        write_model_dir)
from tinylm.errors import TinyLMError
from tinylm.tokenizer import Tokenizer, load_tokenizer

EMBED = "model.embed_tokens.weight"
HEAD = "lm_head.weight"


def select_vocab_rows(state: dict[str, torch.Tensor], keep_ids: Sequence[int]) -> dict[str, torch.Tensor]:
    """A state dict whose embedding and output-head rows are ``keep_ids`` in that order (new row i = old keep_ids[i]).

    Every other tensor is passed through unchanged; a tied model without ``lm_head.weight`` stays without it.
    """
    index = torch.as_tensor(list(keep_ids), dtype=torch.long)
    out = dict(state)
    for name in (EMBED, HEAD):
        if name in state:
            rows = state[name].shape[0]
            if len(index) and (int(index.min()) < 0 or int(index.max()) >= rows):
                raise TinyLMError(f"{name} has {rows} rows but keep_ids reach {int(index.max())}; "
                                  "give row ids of this model's vocabulary")
            out[name] = state[name].index_select(0, index.to(state[name].device))
    return out


def vocab_map(old: Tokenizer, new: Tokenizer) -> list[int]:
    """``ids[new id] = old id``, matched by piece string; every piece of ``new`` must exist in ``old``."""
    ids = []
    for new_id in range(new.vocab_size):
        piece = new.piece(new_id)
        old_id = old.piece_id(piece)
        if old_id is None:
            raise TinyLMError(f"tokenizer {new.path} is not a compaction of the model's tokenizer {old.path}: its "
                              f"piece {piece!r} (id {new_id}) is not in the model's vocabulary; compact the "
                              "model's own tokenizer")
        ids.append(old_id)
    return ids


def remap_model(model: str | os.PathLike, tokenizer: str | os.PathLike, out: str | os.PathLike,
                overwrite: bool = False) -> Path:
    """Write a copy of the model dir ``model`` whose embedding and head rows follow the compact ``tokenizer``."""
    check_output_dir(out, overwrite, inputs=[model, tokenizer])
    model = resolve_model_dir(model)
    config = load_config(model)
    if not any((model / name).is_file() for name in ("tokenizer.model", "tokenizer.json")):
        raise TinyLMError(f"{model} has no tokenizer.model or tokenizer.json, so its rows cannot be matched to "
                          "pieces; copy the tokenizer the model was trained with into the model dir")
    old, new = load_tokenizer(model), load_tokenizer(tokenizer)
    if type(old) is not type(new):
        raise TinyLMError(f"tokenizer {new.path} is not a compaction of the model's tokenizer {old.path} (one is "
                          "SentencePiece, the other tokenizer.json); compact the model's own tokenizer")
    if old.vocab_size > config.vocab_size:
        raise TinyLMError(f"{model}: its tokenizer has {old.vocab_size} pieces but config.json has vocab_size "
                          f"{config.vocab_size}; the model dir does not match its tokenizer")
    keep = vocab_map(old, new)
    state = select_vocab_rows(load_state_dict(model), keep)
    provenance = {k: v for k, v in read_provenance(model).items()
                  if k not in ("tinylm_format", "created", "num_params")}
    provenance.update({
        "recipe": "tokenizer remap",
        "parent": str(model.resolve()),
        "vocab_map": {"parent_tokenizer_sha256": old.sha256, "tokenizer_sha256": new.sha256, "new_to_old": keep},
    })
    return write_model_dir(out, replace(config, vocab_size=len(keep)), state, new, provenance, overwrite,
                           inputs=[model, tokenizer])
