"""Token frequencies over a corpus: how often a tokenizer emits each id (parallel, streaming, resumable).

Counting is exact and fast for SentencePiece because it never merges across a boundary that no piece spans:
with the identity normalizer, a text splits into segments (a run of spaces plus the word after it, and each
character no multi-character piece contains, such as a newline). Each distinct segment is encoded once per
shard and its ids are weighted by how often it occurs — the tokenizer's own output, at a fraction of the cost.
Tokenizers this does not hold for, and Hugging Face tokenizer.json ones (whose Rust encoder batches over every
core and caches words itself), are counted by encoding whole documents.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as sp_pb2

from tinylm.artifacts.io import atomic_file
from tinylm.data.corpus import Source, split_documents
from tinylm.errors import TinyLMError
from tinylm.tokenizer import SentencePieceTokenizer, Tokenizer
from tinylm.vocab.choose import load_proto

FREQ_FILE = "frequencies.json"
_COUNT_VERSION = 1
_PIECE = sp_pb2.ModelProto.SentencePiece
_MATCHABLE = (_PIECE.NORMAL, _PIECE.USER_DEFINED, _PIECE.UNUSED)  # pieces encoding can produce from text


@dataclass(frozen=True)
class _Plan:
    """What a counting worker needs: the model it encodes with, and how to cut text into segments."""

    model: bytes  # serialized ModelProto (without the dummy prefix when ``pattern`` is set), or tokenizer.json
    pattern: str | None  # segment regex over the ▁-escaped text; None = encode whole documents
    dummy_prefix: bool
    vocab_size: int
    kind: str = "sentencepiece"  # or "hf": whole documents through the tokenizers library


def _plan(tokenizer: Tokenizer) -> _Plan:
    if not isinstance(tokenizer, SentencePieceTokenizer):
        return _Plan(tokenizer.path.read_bytes(), None, False, tokenizer.vocab_size, "hf")
    proto = load_proto(tokenizer)
    norm = proto.normalizer_spec
    identity = (not norm.precompiled_charsmap and not norm.normalization_rule_tsv
                and not norm.remove_extra_whitespaces and norm.escape_whitespaces
                and not proto.trainer_spec.treat_whitespace_as_suffix
                and proto.trainer_spec.model_type in (sp_pb2.TrainerSpec.BPE, sp_pb2.TrainerSpec.UNIGRAM))
    if not identity:
        return _Plan(proto.SerializeToString(), None, norm.add_dummy_prefix, len(proto.pieces))
    pieces = [p.piece for p in proto.pieces if p.type in _MATCHABLE]
    inner = set(chain.from_iterable(p for p in pieces if len(p) > 1))  # characters some merge can touch
    # Splitting before a space run is safe only if no piece has a space right after another character.
    space_splits = not any(p[i] == "▁" and p[i - 1] != "▁" for p in pieces for i in range(1, len(p)))
    word = "".join(_class_escape(c) for c in sorted(inner - {"▁"}))
    if space_splits:
        pattern = f"[^{word}▁]|▁+[{word}]*|[{word}]+" if word else "[^▁]|▁+"
    else:
        pattern = f"[^{word}▁]|[{word}▁]+"
    dummy_prefix = norm.add_dummy_prefix
    proto.normalizer_spec.add_dummy_prefix = False  # added once per document by the caller instead
    return _Plan(proto.SerializeToString(), pattern, dummy_prefix, len(proto.pieces))


def _class_escape(char: str) -> str:
    return "\\" + char if char in "\\]^-[" else char


_worker: tuple[_Plan, Any, re.Pattern | None] | None = None


def _init_worker(plan: _Plan) -> None:
    global _worker
    if plan.kind == "hf":
        from tokenizers import Tokenizer as Backend

        encoder = Backend.from_str(plan.model.decode())
    else:
        encoder = spm.SentencePieceProcessor()
        encoder.LoadFromSerializedProto(plan.model)
    _worker = (plan, encoder, re.compile(plan.pattern) if plan.pattern else None)


def _count_docs(docs: list[str]) -> tuple[np.ndarray, dict[str, int]]:
    """Token counts (length vocab_size) of ``docs`` as the tokenizer encodes each document."""
    plan, encoder, pattern = _worker
    if pattern is None:
        texts, weights = docs, np.ones(len(docs), dtype=np.int64)
    else:
        segments: Counter[str] = Counter()
        prefix = "▁" if plan.dummy_prefix else ""
        for doc in docs:
            segments.update(pattern.findall(prefix + doc.replace(" ", "▁")))
        texts, weights = list(segments), np.fromiter(segments.values(), dtype=np.int64, count=len(segments))
    if plan.kind == "hf":
        encoded = [e.ids for e in encoder.encode_batch(texts, add_special_tokens=False)]
    else:
        encoded = encoder.encode(texts, num_threads=1)
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    ids = np.fromiter(chain.from_iterable(encoded), dtype=np.int64, count=int(lengths.sum()))
    counts = np.bincount(ids, weights=np.repeat(weights, lengths), minlength=plan.vocab_size)
    counts = np.rint(counts).astype(np.int64)  # float64 weights are exact below 2**53
    stats = {"documents": len(docs), "bytes": sum(len(d.encode()) for d in docs), "tokens": int(counts.sum())}
    return counts, stats


def _count_shard(docs: list[str], path: str) -> dict[str, int]:
    counts, stats = _count_docs(docs)
    nonzero = np.flatnonzero(counts)
    with atomic_file(path, "wb") as handle:  # a shard file exists only once it is complete
        np.savez(handle, ids=nonzero.astype(np.int32), counts=counts[nonzero],
                 stats=np.array([stats["documents"], stats["bytes"], stats["tokens"]], dtype=np.int64))
    return stats


def _read_shard(path: Path, vocab_size: int) -> tuple[np.ndarray, dict[str, int]]:
    with np.load(path) as data:
        counts = np.zeros(vocab_size, dtype=np.int64)
        counts[data["ids"]] = data["counts"]
        documents, nbytes, tokens = (int(x) for x in data["stats"])
    return counts, {"documents": documents, "bytes": nbytes, "tokens": tokens}


def _shards(docs: Iterable[str], shard_chars: int) -> Iterator[list[str]]:
    shard: list[str] = []
    size = 0
    for doc in docs:
        if not doc.strip():
            continue  # packing skips blank documents too
        shard.append(doc)
        size += len(doc)
        if size >= shard_chars:
            yield shard
            shard, size = [], 0
    if shard:
        yield shard


def _training_docs(source: Source, val_every: int) -> Iterator[str]:
    """The documents ``tinylm fit`` trains on (every ``val_every``-th one is held out; 0 keeps all)."""
    return split_documents([source], val_every)[0] if val_every else source.documents()


def count_frequencies(
    tokenizer: Tokenizer,
    sources: list[Source],
    out: str | os.PathLike,
    val_every: int = 50,
    workers: int = 0,
    shard_chars: int = 4_000_000,
) -> dict[str, Any]:
    """Count how often the tokenizer emits each id on ``sources``; write and return ``<out>/frequencies.json``.

    Documents are cut into shards of about ``shard_chars`` characters, counted in ``workers`` processes
    (0 = one per core) with a bounded queue, so memory stays flat in the corpus size. Each finished shard is
    saved under ``<out>/shards``; a rerun skips finished shards (and does not even read a finished source).
    """
    if val_every < 0 or val_every == 1:
        raise TinyLMError(f"val_every={val_every} must be 0 (count every document) or at least 2")
    if shard_chars < 1:
        raise TinyLMError(f"shard_chars={shard_chars} must be positive")
    out = Path(out)
    shard_dir = out / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    plan = _plan(tokenizer)
    workers = workers or os.cpu_count() or 1
    start = time.perf_counter()
    paths: list[Path] = []
    encoded = {"documents": 0, "bytes": 0, "shards": 0}
    pending: set[Future] = set()
    finished: list[tuple[Path, int]] = []  # (completion marker, number of shards) of each source read

    def collect(done: Iterable[dict[str, int]]) -> None:
        for stats in done:
            encoded["documents"] += stats["documents"]
            encoded["bytes"] += stats["bytes"]
            encoded["shards"] += 1

    if plan.kind == "hf":
        workers = 1  # the tokenizers library already encodes a batch on every core
    pool = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(plan,)) if workers > 1 else None
    if pool is None:
        _init_worker(plan)
    try:
        for source in sources:
            key = hashlib.sha256(json.dumps([_COUNT_VERSION, tokenizer.sha256, source.fingerprint, val_every,
                                             shard_chars]).encode()).hexdigest()[:16]
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", source.spec)[-40:]
            marker = shard_dir / f"{name}-{key}.json"
            if marker.is_file():  # every shard of this source was counted: no need to read it again
                done_paths = [shard_dir / f"{name}-{key}-{i:05d}.npz" for i in range(json.loads(marker.read_text()))]
                if all(p.is_file() for p in done_paths):
                    paths += done_paths
                    continue
            first = len(paths)
            for index, docs in enumerate(_shards(_training_docs(source, val_every), shard_chars)):
                path = shard_dir / f"{name}-{key}-{index:05d}.npz"
                paths.append(path)
                if path.is_file():
                    continue
                if pool is None:
                    collect([_count_shard(docs, str(path))])
                    continue
                pending.add(pool.submit(_count_shard, docs, str(path)))
                if len(pending) >= 2 * workers:  # bounded in-flight work keeps memory flat
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    collect(f.result() for f in done)
            finished.append((marker, len(paths) - first))
        collect(f.result() for f in wait(pending).done)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    for marker, shards in finished:  # written only after all of the source's shards are on disk
        with atomic_file(marker) as handle:
            json.dump(shards, handle)
    seconds = time.perf_counter() - start

    counts = np.zeros(plan.vocab_size, dtype=np.int64)
    totals = {"documents": 0, "bytes": 0, "tokens": 0}
    for path in paths:
        shard_counts, stats = _read_shard(path, plan.vocab_size)
        counts += shard_counts
        for k in totals:
            totals[k] += stats[k]
    if totals["documents"] == 0:
        raise TinyLMError(f"corpus {[s.spec for s in sources]} has no non-blank document to count; give real text")
    record = {
        "format": "tinylm-frequencies-v1",
        "tokenizer": str(tokenizer.path),
        "tokenizer_sha256": tokenizer.sha256,
        "vocab_size": plan.vocab_size,
        "sources": [s.spec for s in sources],
        "val_every": val_every,
        **totals,
        "shards": len(paths),
        "shards_reused": len(paths) - encoded["shards"],
        "method": "segments" if plan.pattern else "documents",
        "seconds": round(seconds, 3),
        "encoded_mb_per_s": round(encoded["bytes"] / 1e6 / seconds, 3) if encoded["bytes"] else None,
        "counts": counts.tolist(),
    }
    with atomic_file(out / FREQ_FILE) as handle:
        json.dump(record, handle)
    return record


def read_frequencies(path: str | os.PathLike) -> dict[str, Any]:
    """A frequency file (or the folder ``count`` wrote) with ``counts`` as an int64 array."""
    path = Path(path)
    if path.is_dir():
        path = path / FREQ_FILE
    if not path.is_file():
        raise TinyLMError(f"frequency file not found: {path}; write one with `tinylm tokenizer count`")
    try:
        record = json.loads(path.read_text())
        if record.get("format") != "tinylm-frequencies-v1":
            raise ValueError("no tinylm-frequencies-v1 format tag")
        record["counts"] = np.asarray(record["counts"], dtype=np.int64)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise TinyLMError(f"{path} is not a tinylm frequency file ({err}); recount with `tinylm tokenizer count`") \
            from None
    return record
