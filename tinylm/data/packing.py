"""Tokenize-and-pack: documents → one flat token stream (EOS after each document) in a ``numpy.memmap``.

The cache is keyed by a hash of (sources, tokenizer, split rule) and built once. It stores the *stream*, not
blocks, so one cache serves every ``seq_len``: block ``i`` is ``stream[i*L : i*L + L + 1]`` (inputs and
shifted targets), which gives every block a stable sample id for a given ``seq_len``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset

from tinylm.artifacts.io import atomic_dir
from tinylm.data.corpus import Source, split_documents
from tinylm.errors import TinyLMError
from tinylm.tokenizer import Tokenizer

FORMAT_VERSION = 1
_DOCS_PER_CHUNK = 512


def cache_key(sources: list[Source], tokenizer: Tokenizer, val_every: int) -> str:
    spec = {"v": FORMAT_VERSION, "sources": [s.fingerprint for s in sources], "tokenizer": tokenizer.sha256,
            "val_every": val_every}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32)


def pack(sources: list[Source], tokenizer: Tokenizer, cache_dir: str | os.PathLike, val_every: int = 50) -> Path:
    """Build (or reuse) the packed cache; returns its folder holding train.bin, val.bin and meta.json."""
    folder = Path(cache_dir) / cache_key(sources, tokenizer, val_every)
    if (folder / "meta.json").is_file():
        return folder
    dtype = token_dtype(tokenizer.vocab_size)
    train_docs, val_docs = split_documents(sources, val_every)
    with atomic_dir(folder, overwrite=True, what="cache folder") as tmp:  # our own cache, incomplete
        meta = {"sources": [s.spec for s in sources], "tokenizer": str(tokenizer.path),
                "tokenizer_sha256": tokenizer.sha256, "vocab_size": tokenizer.vocab_size, "dtype": dtype.name,
                "val_every": val_every}
        for split, docs in (("train", train_docs), ("val", val_docs)):
            counts = _write_stream(docs, tokenizer, tmp / f"{split}.bin", dtype)
            meta[split] = counts
        if meta["train"]["documents"] == 0:
            raise TinyLMError(f"corpus {meta['sources']} is empty: no non-blank document found; give real text")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def _write_stream(docs: Iterator[str], tokenizer: Tokenizer, path: Path, dtype: np.dtype) -> dict:
    """Append tokenized chunks of documents to ``path``; memory stays flat in the corpus size."""
    counts = {"documents": 0, "tokens": 0, "bytes": 0}
    with open(path, "wb") as handle:
        for chunk in _chunks(docs, _DOCS_PER_CHUNK):
            for ids in tokenizer.encode(chunk, eos=True):
                np.asarray(ids, dtype=dtype).tofile(handle)
                counts["tokens"] += len(ids)
            counts["documents"] += len(chunk)
            counts["bytes"] += sum(len(d.encode()) for d in chunk)
    return counts


def _chunks(docs: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for doc in docs:
        if doc.strip():
            chunk.append(doc)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def open_stream(folder: str | os.PathLike, split: str) -> np.memmap:
    meta = json.loads((Path(folder) / "meta.json").read_text())
    path = Path(folder) / f"{split}.bin"
    if meta[split]["tokens"] == 0:
        return np.zeros(0, dtype=meta["dtype"])  # memmap cannot map an empty file
    return np.memmap(path, dtype=meta["dtype"], mode="r")


class PackedBlocks(Dataset):
    """Fixed-length blocks of a token stream; item ``i`` is block ``ids[i]`` (the sample id)."""

    def __init__(self, stream: np.ndarray, seq_len: int, ids: np.ndarray | None = None) -> None:
        self.stream, self.seq_len = stream, seq_len
        self.num_blocks = max(0, (len(stream) - 1) // seq_len)
        self.ids = np.arange(self.num_blocks) if ids is None else np.asarray(ids, dtype=np.int64)
        if len(self.ids) and (self.ids.min() < 0 or self.ids.max() >= self.num_blocks):
            raise TinyLMError(f"sample ids out of range [0, {self.num_blocks}); the round plan does not fit this data")

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample_id = int(self.ids[index])
        start = sample_id * self.seq_len
        block = torch.from_numpy(self.stream[start : start + self.seq_len + 1].astype(np.int64))
        return {"input_ids": block[:-1], "labels": block[1:], "sample_id": torch.tensor(sample_id)}
