"""Compact tokenizer (PanGu-π Pro §1): one interface over SentencePiece and Hugging Face BPE tokenizers.

A tokenizer inherited from a big multilingual model spends a tiny model's parameters on pieces its corpus
rarely uses. ``tinylm tokenizer count | compact | remap | coverage``: count each piece on the corpus
(``tinylm.vocab.counting``), keep the special and byte pieces plus the most frequent ones up to k
(``tinylm.vocab.choose`` for SentencePiece, ``tinylm.vocab.bpe`` for tokenizer.json), slice the embedding and
output-head rows so a model keeps its weights under the new ids (``tinylm.vocab.remap``), and draw the
coverage curve (``tinylm.vocab.coverage``). This module joins them and checks every compaction on real text.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tinylm.artifacts.io import atomic_dir
from tinylm.data.corpus import resolve
from tinylm.errors import TinyLMError
from tinylm.tokenizer import SentencePieceTokenizer, Tokenizer, load_tokenizer
from tinylm.vocab.bpe import choose_tokens, compact_spec
from tinylm.vocab.choose import choose_pieces, compact_proto, load_proto
from tinylm.vocab.counting import FREQ_FILE, count_frequencies, read_frequencies
from tinylm.vocab.coverage import (
    DEFAULT_KS,
    coverage_curve,
    coverage_rows,
    pieces_for_coverage,
    plot_coverage,
)
from tinylm.vocab.remap import EMBED, HEAD, remap_model, select_vocab_rows, vocab_map

__all__ = [  # the names reproduce/, inherit and tests import from here
    "COMPACT_FILE", "DEFAULT_KS", "EMBED", "FREQ_FILE", "HEAD", "choose_keep", "compact_tokenizer", "count_frequencies",
    "coverage_curve", "coverage_rows", "pieces_for_coverage", "plot_coverage", "read_frequencies", "remap_model",
    "compact_model", "sample_documents", "select_vocab_rows", "verify_compaction", "vocab_map", "vocab_size_for_coverage",
]

COMPACT_FILE = "compact.json"


def verify_compaction(old: Tokenizer, new: Tokenizer, docs: Sequence[str]) -> dict[str, Any]:
    """Round-trip the documents through both tokenizers; count tokens (the sequence-length inflation)."""
    old_ids, new_ids = old.encode(list(docs)), new.encode(list(docs))
    old_text, new_text = [old.decode(ids) for ids in old_ids], [new.decode(ids) for ids in new_ids]
    old_tokens, new_tokens = sum(map(len, old_ids)), sum(map(len, new_ids))
    return {
        "documents": len(docs),
        "bytes": sum(len(d.encode()) for d in docs),
        "old_tokens": old_tokens,
        "new_tokens": new_tokens,
        "inflation": new_tokens / old_tokens if old_tokens else None,
        "lossless": sum(t == d for t, d in zip(new_text, docs)),
        "changed_by_compaction": sum(a != b for a, b in zip(old_text, new_text)),
    }


def sample_documents(specs: Sequence[str], chars: int, text_field: str = "text") -> list[str]:
    """The first documents of each source, about ``chars`` characters in all, split evenly over the sources."""
    sources = [s for spec in specs for s in resolve(spec, text_field)]
    docs: list[str] = []
    for source in sources:
        size = 0
        for doc in source.documents():
            if size >= chars / len(sources):
                break
            if doc.strip():
                docs.append(doc)
                size += len(doc)
    return docs


def choose_keep(tokenizer: Tokenizer, counts: np.ndarray, vocab_size: int,
                keep_reachable: bool = True) -> tuple[list[int], dict[str, Any]]:
    """The ids a compaction to ``vocab_size`` keeps (special and byte pieces, then the most frequent ones), and
    how they were chosen; SentencePiece and tokenizer.json alike."""
    if isinstance(tokenizer, SentencePieceTokenizer):
        return choose_pieces(load_proto(tokenizer), counts, vocab_size, keep_reachable)
    return choose_tokens(json.loads(tokenizer.path.read_text(encoding="utf-8")), counts, vocab_size)


def vocab_size_for_coverage(tokenizer: Tokenizer, counts: np.ndarray, coverage: float,
                            keep_reachable: bool = True, attempts: int = 6) -> int:
    """The vocabulary size whose kept pieces cover ``coverage`` of the counted tokens.

    The top-k pieces by count are not all kept (special and byte pieces always are, and BPE keeps the pieces its
    merges need), so k grows by twice the top pieces the kept set still lacks (they displace more) until the kept
    set covers the share, at most ``attempts`` times.
    """
    counts = np.asarray(counts)
    total, ranked = max(1, int(counts.sum())), np.argsort(-counts, kind="stable")
    needed = pieces_for_coverage(counts, coverage)
    k = needed
    for _ in range(attempts - 1):
        k = min(k, len(counts))
        kept = np.asarray(choose_keep(tokenizer, counts, k, keep_reachable)[0])
        if counts[kept].sum() / total >= coverage - 1e-12 or k == len(counts):
            return k
        k += 2 * max(1, needed - int(np.isin(ranked[:needed], kept).sum()))
    return min(k, len(counts))


def compact_tokenizer(
    tokenizer: Tokenizer,
    frequencies: dict[str, Any],
    vocab_size: int,
    out: str | os.PathLike,
    verify_docs: Sequence[str] = (),
    keep_reachable: bool = True,
    overwrite: bool = False,
    inputs: Sequence[str | os.PathLike] = (),
) -> dict[str, Any]:
    """Write the compact tokenizer (``tokenizer.model`` or ``tokenizer.json``, + Hugging Face files) keeping
    ``vocab_size`` pieces to ``out``, and ``out/compact.json`` with the id map (``id_map[new id] = old id``), the
    coverage of the counted tokens and the round-trip check on ``verify_docs``.

    Nothing is written if the counts belong to another tokenizer or compaction loses text; ``out`` is never
    the tokenizer itself, nor any of ``inputs``.
    """
    if frequencies.get("tokenizer_sha256") != tokenizer.sha256:
        raise TinyLMError(f"the frequency file was counted with another tokenizer ({frequencies.get('tokenizer')}, "
                          f"sha256 {str(frequencies.get('tokenizer_sha256'))[:12]}…) than {tokenizer.path} "
                          f"(sha256 {tokenizer.sha256[:12]}…); recount with this tokenizer")
    counts = np.asarray(frequencies["counts"], dtype=np.int64)
    sentencepiece = isinstance(tokenizer, SentencePieceTokenizer)
    keep, info = choose_keep(tokenizer, counts, vocab_size, keep_reachable)
    if sentencepiece:
        proto = load_proto(tokenizer)
    else:
        spec = json.loads(tokenizer.path.read_text(encoding="utf-8"))
    with atomic_dir(out, overwrite, inputs=[tokenizer.path, *inputs]) as tmp:
        if sentencepiece:
            (tmp / "tokenizer.model").write_bytes(compact_proto(proto, keep).SerializeToString())
            new = load_tokenizer(tmp / "tokenizer.model")
        else:
            tokenizer.save_hf(tmp)  # the special tokens and BOS setting; tokenizer.json is replaced next
            (tmp / "tokenizer.json").write_text(json.dumps(compact_spec(spec, keep), ensure_ascii=False),
                                                encoding="utf-8")
            new = load_tokenizer(tmp / "tokenizer.json")
        check = verify_compaction(tokenizer, new, verify_docs) if verify_docs else None
        if check and check["changed_by_compaction"]:
            raise TinyLMError(f"compaction changed the decoded text of {check['changed_by_compaction']} of "
                              f"{check['documents']} documents (the tokenizer has no byte fallback for the "
                              "dropped characters); use a byte-fallback tokenizer or a larger vocab_size")
        if sentencepiece:
            new.save_hf(tmp)
        record = {
            "parent_tokenizer": str(tokenizer.path),
            "parent_sha256": tokenizer.sha256,
            "parent_vocab_size": tokenizer.vocab_size,
            "kind": "sentencepiece" if sentencepiece else "bpe",
            "vocab_size": len(keep),
            **info,
            "counted_coverage": float(counts[keep].sum() / max(1, counts.sum())),
            "frequency_sources": frequencies.get("sources"),
            "verify": check,
            "id_map": keep,
        }
        (tmp / COMPACT_FILE).write_text(json.dumps(record) + "\n")
    return record


def compact_model(source: Path, specs: Sequence[str], folder: Path, coverage: float | None = None,
                  vocab_size: int | None = None, val_every: int = 50, text_field: str = "text", workers: int = 0,
                  verify_chars: int = 2_000_000, overwrite: bool = False) -> dict[str, Any]:
    """The compact-tokenizer pipeline (the one ``tinylm pro`` and ``reproduce`` call): count the model dir
    ``source``'s tokenizer on ``specs`` into ``folder/counts``, keep ``vocab_size`` pieces (or the fewest whose
    kept set covers ``coverage`` of the counted tokens) in ``folder/tokenizer``, and remap the source's embedding
    and head rows into ``folder/source``. Returns the compaction record (``compact.json``) with the counts'.
    """
    if (coverage is None) == (vocab_size is None):
        raise TinyLMError("give exactly one of coverage and vocab_size for the compact tokenizer")
    tokenizer = load_tokenizer(source)
    sources = [s for spec in specs for s in resolve(spec, text_field)]
    count_frequencies(tokenizer, sources, folder / "counts", val_every=val_every, workers=workers)
    frequencies = read_frequencies(folder / "counts")
    k = vocab_size or vocab_size_for_coverage(tokenizer, frequencies["counts"], coverage)
    docs = sample_documents(list(specs), verify_chars, text_field) if verify_chars > 0 else []
    record = compact_tokenizer(tokenizer, frequencies, k, folder / "tokenizer", docs, overwrite=overwrite)
    remap_model(source, folder / "tokenizer", folder / "source", overwrite)
    return {**record, "counted_tokens": frequencies["tokens"]}
