"""Choosing the pieces of a compact SentencePiece tokenizer (the paper's first design formula, §1).

Keep the special and byte pieces plus the most frequent normal pieces up to k, delete the rest from the model
proto. Deleting BPE pieces can strand a frequent piece whose building blocks were all deleted: SentencePiece
would never emit it again. ``choose_pieces`` swaps such pieces for the next most frequent ones (on mistral's
32k tokenizer cut to 8k on the built-in corpus: 1,429 swaps, sequence-length inflation 1.089 → 1.075). Byte
fallback plus always keeping "▁" keeps every round trip lossless. (Byte-level BPE: ``tinylm.vocab.bpe``.)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sentencepiece import sentencepiece_model_pb2 as sp_pb2

from tinylm.errors import TinyLMError
from tinylm.tokenizer import SentencePieceTokenizer

_PIECE = sp_pb2.ModelProto.SentencePiece
MANDATORY = (_PIECE.UNKNOWN, _PIECE.CONTROL, _PIECE.USER_DEFINED, _PIECE.BYTE)


def load_proto(tokenizer: SentencePieceTokenizer) -> sp_pb2.ModelProto:
    proto = sp_pb2.ModelProto()
    proto.ParseFromString(tokenizer.path.read_bytes())
    return proto


def choose_pieces(
    proto: sp_pb2.ModelProto, counts: np.ndarray, vocab_size: int, keep_reachable: bool = True
) -> tuple[list[int], dict[str, int]]:
    """The old ids to keep, ascending: special, byte and "▁" pieces, then the most frequent others up to vocab_size.

    Ties go to the lower id (the earlier BPE merge). With ``keep_reachable``, a kept BPE piece that no pair of
    kept pieces (or single characters) can merge into would never be emitted; it is swapped for the next most
    frequent piece until every kept piece is reachable.
    """
    types = [p.type for p in proto.pieces]
    # "▁" too: a space left to byte fallback would decode as the bytes of "▁", not as a space
    mandatory = [i for i, p in enumerate(proto.pieces) if p.type in MANDATORY or p.piece == "▁"]
    if vocab_size > len(types):
        raise TinyLMError(f"vocab_size={vocab_size} is larger than the tokenizer ({len(types)} pieces); "
                          f"give a vocab_size of at most {len(types)}")
    if vocab_size <= len(mandatory):
        raise TinyLMError(f"vocab_size={vocab_size} leaves no room for normal pieces: the tokenizer has "
                          f"{len(mandatory)} special, byte and whitespace pieces that are always kept; "
                          "give more than that")
    ranked = sorted(set(range(len(types))) - set(mandatory), key=lambda i: (-counts[i], i))
    budget = vocab_size - len(mandatory)
    kept, replaced = set(ranked[:budget]), 0
    if keep_reachable and proto.trainer_spec.model_type == sp_pb2.TrainerSpec.BPE:
        pieces = [p.piece for p in proto.pieces]
        dropped: set[int] = set()
        position = budget
        while dead := _unreachable(pieces, kept):
            kept -= dead
            dropped |= dead
            replaced += len(dead)
            while len(kept) < budget and position < len(ranked):
                if ranked[position] not in dropped:
                    kept.add(ranked[position])
                position += 1
    return sorted(mandatory + list(kept)), {"mandatory": len(mandatory), "replaced_unreachable": replaced}


def _unreachable(pieces: list[str], kept: set[int]) -> set[int]:
    """Kept pieces that no sequence of merges can build: SentencePiece's BPE merges two adjacent symbols when
    their concatenation is a piece, and single characters are the starting symbols whether or not they are
    pieces. (Hugging Face's BPE in tokenizer.json merges only pairs of pieces, so it can disagree with
    SentencePiece on a piece built from a dropped character; tokenizer.model is the reference.)"""
    built: set[str] = set()
    for text in sorted((pieces[i] for i in kept), key=len):
        if len(text) == 1 or any((j == 1 or text[:j] in built) and (j == len(text) - 1 or text[j:] in built)
                                 for j in range(1, len(text))):
            built.add(text)
    return {i for i in kept if pieces[i] not in built}


def compact_proto(proto: sp_pb2.ModelProto, keep: Sequence[int]) -> sp_pb2.ModelProto:
    """A copy of ``proto`` with only the pieces ``keep`` (ascending old ids; scores and types unchanged)."""
    new = sp_pb2.ModelProto()
    new.CopyFrom(proto)
    del new.pieces[:]
    new.pieces.extend(proto.pieces[i] for i in keep)
    position = {old: new_id for new_id, old in enumerate(keep)}
    spec = new.trainer_spec
    spec.vocab_size = len(keep)
    for field in ("unk_id", "bos_id", "eos_id", "pad_id"):
        if getattr(spec, field) >= 0:
            setattr(spec, field, position.get(getattr(spec, field), -1))
    return new
