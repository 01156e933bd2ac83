"""Prepare a corpus once, train on it from many nodes.

``prepare`` tokenizes text sources in parallel worker processes through litdata's ``optimize`` into sharded token
chunks; ``open_prepared`` reads such a folder back — local, or a copy in object storage (``s3://…``) — as the
DataModule's token streams (``tinylm.data.chunks``). A prepared folder holds:

    manifest.json    sources and their fingerprints, tokenizer sha256, split rule, counts, speed
    tokenizer.model  (or tokenizer.json + tokenizer_config.json) the tokenizer the ids belong to
    train/  val/     one litdata dataset per split: index.json + chunk-*.bin (TokensLoader layout, as litgpt's)
    .tinylm          the marker: tinylm wrote this folder

**The same stream as the memmap cache.** Documents are split by the same rule (``tag_documents``: every
``val_every``-th document of each source is held out), blank ones dropped, each encoded with EOS, and the tokens
concatenated in document order — what ``packing.pack`` writes, so block ``i`` is the same tokens. The number of
workers never changes the result: documents are cut, in order, into *units* of about ``unit_chars`` characters;
each worker encodes one contiguous run of units (``keep_data_ordered``), and litdata lists the chunks in input order.

**Balanced workers.** The runs are cut by estimated cost, not by count: a unit's cost is the time its tokenizer
takes on a sample of its documents (every 256th), since text of different scripts encodes at very
different speeds (SentencePiece reads Chinese poetry at ~9.5 M characters/s and English prose at ~4: a run of
poetry beside a run of prose left one of two workers idle a third of the time).

**Resumable.** The folder is built beside ``out`` (``.<out>.tinylm-prepare``) in segments of units; after each
segment ``progress.json`` records the units and chunks done. A rerun after a kill re-reads the text, skips the
units done (no tokenizing), drops the chunks of the unfinished segment and goes on; only a complete folder is
renamed to ``out``, so ``out`` is never half-written.
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import json
import os
import queue
import re
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from filelock import FileLock, Timeout
from litdata import optimize
from litdata.streaming.item_loader import TokensLoader

from tinylm.artifacts.io import MARKER, atomic_dir, atomic_file, check_output_dir, is_tinylm_dir
from tinylm.data.chunks import INDEX, TokenChunks, cache_folder, fetch, is_remote
from tinylm.data.corpus import Source, tag_documents
from tinylm.data.packing import token_dtype
from tinylm.errors import TinyLMError
from tinylm.tokenizer import HF_FILE, SP_FILE, SentencePieceTokenizer, Tokenizer, load_tokenizer

FORMAT = "tinylm-prepared-v1"
MANIFEST, PROGRESS, PLAN = "manifest.json", "progress.json", "plan.json"
SPLITS = ("train", "val")
UNITS_PER_WORKER = 32  # units each worker encodes per segment: the most work a kill can lose
HF_CONFIG = "tokenizer_config.json"  # the special tokens and BOS setting beside a tokenizer.json


# ---- the worker's side ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Unit:
    """Documents one worker encodes in a row, and the estimated seconds it takes. A wrapper, not a bare list of
    strings: litdata looks for file paths among the strings of its inputs, and a document may well read like one."""

    docs: list[str]
    cost: float = 1.0


@dataclass(frozen=True)
class _Run:
    """One worker's share of a segment: consecutive units."""

    units: list[_Unit]


_encoder: tuple[Tokenizer, np.dtype] | None = None  # set before optimize forks its workers, who inherit it
SAMPLE_EVERY = 256  # a unit's cost is timed on every 256th of its documents


def _encode(docs: list[str]) -> list[list[int]]:
    tokenizer, _ = _encoder
    threads = {"num_threads": 1} if isinstance(tokenizer, SentencePieceTokenizer) else {}  # one core per worker
    return tokenizer.encode(docs, eos=True, **threads)


def _encode_run(run: _Run) -> Iterator[np.ndarray]:
    """Each unit of the run as one token array (its documents, each encoded with EOS), which litdata writes into
    chunks in order."""
    dtype = _encoder[1]
    for unit in run.units:
        ids = _encode(unit.docs)
        yield np.fromiter(chain.from_iterable(ids), dtype=dtype, count=sum(map(len, ids)))


def _timed_unit(docs: list[str]) -> _Unit:
    """``docs`` as a unit, its cost estimated by encoding every ``SAMPLE_EVERY``-th document (CPU time of this
    thread, so other processes do not blur it), scaled by characters."""
    tokenizer, _ = _encoder
    sample = docs[::SAMPLE_EVERY]
    start = time.thread_time()
    for doc in sample:  # one at a time: a batched encode may run on threads this clock does not see
        tokenizer.encode_one(doc, eos=True)
    seconds = time.thread_time() - start
    return _Unit(docs, max(seconds, 1e-6) * sum(map(len, docs)) / max(1, sum(map(len, sample))))


def _runs(units: list[_Unit], workers: int) -> list[_Run]:
    """``units`` cut, in order, into at most ``workers`` runs of about equal cost (each cut where the running cost
    first reaches its share)."""
    total = sum(u.cost for u in units)
    runs: list[_Run] = []
    start, done = 0, 0.0
    for index, unit in enumerate(units):
        done += unit.cost
        left = len(units) - index - 1
        if len(runs) < workers - 1 and left and done >= total * (len(runs) + 1) / workers:
            runs.append(_Run(units[start:index + 1]))
            start = index + 1
    runs.append(_Run(units[start:]))
    return runs


# ---- reading the text in order ----------------------------------------------------------------------------------
def _units(sources: list[Source], val_every: int, unit_chars: int,
           counts: dict) -> Iterator[tuple[str, list[str], int]]:
    """``(split, a unit's documents, bytes)`` in document order; counts each split's documents and bytes."""
    docs: dict[str, list[str]] = {s: [] for s in SPLITS}
    chars, nbytes = dict.fromkeys(SPLITS, 0), dict.fromkeys(SPLITS, 0)
    for held_out, doc in tag_documents(sources, val_every):
        if not doc.strip():
            continue  # packing drops blank documents too
        split = SPLITS[held_out]
        size = len(doc.encode())
        docs[split].append(doc)
        chars[split] += len(doc)
        nbytes[split] += size
        counts[split]["documents"] += 1
        counts[split]["bytes"] += size
        if chars[split] >= unit_chars:
            yield split, docs[split], nbytes[split]
            docs[split], chars[split], nbytes[split] = [], 0, 0
    for split in SPLITS:
        if docs[split]:
            yield split, docs[split], nbytes[split]


def _segments(units: Iterable[tuple[str, list[str], int]], done: dict[str, int], size: int) -> Iterator[dict]:
    """Batches of about ``size`` units still to encode, per split, each unit timed on a sample (read ahead, in the
    prefetch thread); the first ``done[split]`` units are skipped."""
    seen = dict.fromkeys(SPLITS, 0)
    batch: dict[str, list] = {s: [] for s in SPLITS}
    for split, docs, nbytes in units:
        seen[split] += 1
        if seen[split] <= done[split]:
            continue  # encoded before the kill
        batch[split].append((_timed_unit(docs), nbytes))
        if sum(map(len, batch.values())) >= size:
            yield batch
            batch = {s: [] for s in SPLITS}
    if any(batch.values()):
        yield batch


def _prefetched(items: Iterator) -> Iterator:
    """``items``, each produced in a thread while the consumer works on the one before: the next segment's text is
    read while workers encode this one. Never more than one ahead, so the text in memory is two segments at most,
    whatever the corpus size."""
    handoff: queue.Queue = queue.Queue()
    taken = threading.Semaphore(1)  # the producer starts an item only once the consumer took the one before
    end = object()

    def produce() -> None:
        try:
            for item in items:
                handoff.put(item)
                taken.acquire()
        except BaseException as err:  # noqa: BLE001 — handed to the consumer, raised there
            handoff.put(err)
        handoff.put(end)

    taken.acquire()
    threading.Thread(target=produce, daemon=True).start()
    while (item := handoff.get()) is not end:
        if isinstance(item, BaseException):
            raise item
        taken.release()
        yield item


# ---- the work folder: what a rerun continues -------------------------------------------------------------------
def _plan(sources: list[Source], tokenizer: Tokenizer, val_every: int, unit_chars: int) -> dict[str, Any]:
    """What decides the tokens: a kill may resume only a prepare with the same plan."""
    return {"format": FORMAT, "sources": [s.spec for s in sources], "fingerprints": [s.fingerprint for s in sources],
            "tokenizer_sha256": tokenizer.sha256, "vocab_size": tokenizer.vocab_size,
            "dtype": token_dtype(tokenizer.vocab_size).name, "val_every": val_every, "unit_chars": unit_chars}


def _write_json(path: Path, record: dict) -> None:
    with atomic_file(path) as handle:
        json.dump(record, handle, indent=2)
        handle.write("\n")


def _start_or_resume(work: Path, plan: dict, tokenizer: Tokenizer) -> dict[str, dict[str, int]]:
    """The progress of an earlier, killed prepare with the same plan in ``work``, or a fresh work folder."""
    if work.exists():
        if not is_tinylm_dir(work):
            raise TinyLMError(f"{work} exists and was not written by tinylm; move it away and rerun")
        if (work / PLAN).is_file() and json.loads((work / PLAN).read_text()) == plan and (work / PROGRESS).is_file():
            progress = json.loads((work / PROGRESS).read_text())
            for split in SPLITS:
                _trim(work / split, progress[split]["chunks"])
            return progress
        shutil.rmtree(work)  # an unfinished prepare with other settings: nothing of it can be reused
    work.mkdir(parents=True)
    (work / MARKER).write_text("written by tinylm; an unfinished `tinylm data prepare` (rerun it to continue)\n")
    # the ids belong to this tokenizer: the dataset carries it
    if isinstance(tokenizer, SentencePieceTokenizer):
        shutil.copyfile(tokenizer.path, work / SP_FILE)
    else:
        shutil.copyfile(tokenizer.path, work / HF_FILE)
        config = tokenizer.path.with_name(HF_CONFIG)
        if config.is_file():
            shutil.copyfile(config, work / HF_CONFIG)
    progress = {s: {"units": 0, "chunks": 0} for s in SPLITS}
    _write_json(work / PLAN, plan)
    _write_json(work / PROGRESS, progress)
    return progress


def _trim(folder: Path, chunks: int) -> None:
    """Keep a split's first ``chunks`` chunks (those ``progress.json`` counts); drop what a killed segment wrote."""
    if not folder.is_dir():
        return
    keep: set[str] = set()
    if (folder / INDEX).is_file():
        index = json.loads((folder / INDEX).read_text())
        index["chunks"] = index["chunks"][:chunks]
        keep = {c["filename"] for c in index["chunks"]}
        if keep:
            _write_json(folder / INDEX, index)
            keep.add(INDEX)
    for path in folder.iterdir():
        if path.name not in keep:
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def _encode_segment(units: list[_Unit], folder: Path, workers: int, chunk_bytes: int) -> int:
    """Encode ``units`` in ``workers`` processes (one run of about equal cost each) and append their chunks to the
    split's litdata dataset; returns the dataset's chunk count."""
    folder.mkdir(exist_ok=True)
    runs = _runs(units, workers)
    interrupt = signal.getsignal(signal.SIGINT)
    try:
        optimize(fn=_encode_run, inputs=runs, output_dir=str(folder), num_workers=len(runs),
                 chunk_bytes=chunk_bytes, item_loader=TokensLoader(), keep_data_ordered=True, reorder_files=False,
                 start_method="fork", mode="append" if (folder / INDEX).is_file() else None, verbose=False)
    finally:
        signal.signal(signal.SIGINT, interrupt)  # optimize installs its own Ctrl-C handler and leaves it
        # litdata's recipe sits in a reference cycle (a bound method of itself) that holds the segment's text
        # until a full collection: without this the parent grew ~50 MB a segment (1.6 GB RSS on 1 GB of text)
        del runs
        gc.collect()
        _release_free_memory()
    return len(json.loads((folder / INDEX).read_text())["chunks"])


def _release_free_memory() -> None:
    """Give the heap's free pages back to the system (glibc's ``malloc_trim``; nothing elsewhere): a segment's
    millions of small strings leave free memory scattered through the heap, which the next segment's forked
    workers would otherwise carry in their resident size too."""
    if _libc is not None:
        _libc.malloc_trim(0)


try:
    _libc = ctypes.CDLL("libc.so.6")
    _libc.malloc_trim  # noqa: B018 — glibc only
except (OSError, AttributeError):
    _libc = None


# ---- the pipeline -----------------------------------------------------------------------------------------------
_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)b?\s*$", re.IGNORECASE)


def parse_bytes(size: int | str) -> int:
    """A byte count given as a number or as ``64MB`` / ``512KB`` / ``1G`` (decimal units, as litdata reads them)."""
    match = _SIZE.match(str(size))
    value = int(match.group(1)) * 1000 ** " kmgt".index(match.group(2).lower() or " ") if match else 0
    if value < 1:
        raise TinyLMError(f"chunk_bytes={size!r} is not a positive size; give e.g. 64MB or 1000000")
    return value


def prepare(
    sources: list[Source],
    tokenizer: Tokenizer,
    out: str | os.PathLike,
    workers: int = 1,
    chunk_bytes: int | str = "64MB",
    val_every: int = 50,
    unit_chars: int = 1_000_000,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike | None] = (),
) -> dict[str, Any]:
    """Tokenize ``sources`` into the prepared folder ``out`` (see the module docstring); returns its manifest.

    A killed prepare into the same ``out`` with the same sources, tokenizer, ``val_every`` and ``unit_chars``
    continues where it stopped (``workers`` and ``chunk_bytes`` may change). ``inputs`` are the command's inputs,
    which ``out`` may not overlap.
    """
    if workers < 1:
        raise TinyLMError(f"workers={workers} must be at least 1")
    if val_every < 2:
        raise TinyLMError(f"val_every={val_every} must be at least 2 (1 would hold out every document)")
    if unit_chars < 1:
        raise TinyLMError(f"unit_chars={unit_chars} must be positive")
    chunk_bytes = parse_bytes(chunk_bytes)
    target = check_output_dir(out, overwrite, inputs=inputs)
    work = target.with_name(f".{target.name}.tinylm-prepare")
    plan = _plan(sources, tokenizer, val_every, unit_chars)
    lock = FileLock(f"{work}.lock", timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise TinyLMError(f"another `tinylm data prepare` is writing {target}; wait for it to finish") from None
    global _encoder
    try:
        progress = _start_or_resume(work, plan, tokenizer)
        reused = {s: progress[s]["units"] for s in SPLITS}
        _encoder = (tokenizer, np.dtype(plan["dtype"]))
        counts = {s: {"documents": 0, "bytes": 0} for s in SPLITS}
        encoded, start = 0, time.perf_counter()
        units = _units(sources, val_every, unit_chars, counts)
        for segment in _prefetched(_segments(units, reused, workers * UNITS_PER_WORKER)):
            for split, batch in segment.items():
                if batch:
                    progress[split]["chunks"] = _encode_segment([u for u, _ in batch], work / split, workers,
                                                                chunk_bytes)
                    progress[split]["units"] += len(batch)
                    encoded += sum(nbytes for _, nbytes in batch)
            _write_json(work / PROGRESS, progress)
        seconds = time.perf_counter() - start
        if counts["train"]["documents"] == 0:
            raise TinyLMError(f"corpus {plan['sources']} is empty: no non-blank document found; give real text")
        manifest = {**plan, "workers": workers, "chunk_bytes": chunk_bytes, "seconds": round(seconds, 3),
                    "encoded_mb_per_s": round(encoded / 1e6 / seconds, 3) if encoded else None,
                    "units_reused": sum(reused.values())}
        for split in SPLITS:
            tokens = len(TokenChunks(work / split, work)) if (work / split / INDEX).is_file() else 0
            manifest[split] = {**counts[split], "tokens": tokens, **progress[split]}
        manifest["id"] = dataset_id(manifest)
        _write_json(work / MANIFEST, manifest)
        with atomic_dir(target, overwrite, inputs=inputs) as tmp:  # out appears complete, or not at all
            for path in work.iterdir():
                if path.name not in (MARKER, PROGRESS, PLAN):
                    os.replace(path, tmp / path.name)
        shutil.rmtree(work)
    except TinyLMError:
        shutil.rmtree(work, ignore_errors=True)  # bad input: nothing worth resuming
        raise
    finally:
        _encoder = None
        lock.release()
        Path(f"{work}.lock").unlink(missing_ok=True)
    return manifest


def dataset_id(manifest: dict[str, Any]) -> str:
    """A short id of a prepared dataset's content (plan and counts), the same wherever the folder is copied."""
    keys = ("format", "fingerprints", "tokenizer_sha256", "val_every", "unit_chars", "train", "val")
    content = {k: manifest[k] for k in keys}
    content["train"], content["val"] = (manifest[s]["tokens"] for s in SPLITS)
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:20]


# ---- reading it back --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PreparedData:
    """A prepared dataset opened for training: its manifest, tokenizer and one token stream per split."""

    root: str  # the folder or URI it was opened from
    folder: Path  # a local folder holding manifest.json and the tokenizer (a cache copy for a URI)
    manifest: dict[str, Any]
    tokenizer: Tokenizer
    streams: dict[str, TokenChunks | np.ndarray]


def open_prepared(root: str | os.PathLike, cache_dir: str | os.PathLike,
                  storage_options: dict | None = None) -> PreparedData:
    """Open a folder written by ``prepare`` (or its copy at a URI: files fetched into ``cache_dir``)."""
    root = os.fspath(root)
    if not is_remote(root) and not Path(root, MANIFEST).is_file():
        hint = " (an unfinished prepare: rerun it to continue)" if Path(root).with_name(
            f".{Path(root).name}.tinylm-prepare").is_dir() else ""
        raise TinyLMError(f"{root} is not a prepared dataset (no {MANIFEST}){hint}; write one with "
                          "`tinylm data prepare`")
    manifest = json.loads(fetch(root, MANIFEST, cache_dir, storage_options).read_text())
    if manifest.get("format") != FORMAT:
        raise TinyLMError(f"{root} is a prepared dataset of format {manifest.get('format')!r}, this tinylm reads "
                          f"{FORMAT!r}; prepare it again with this version")
    tokenizer = load_tokenizer(_tokenizer_file(root, cache_dir, storage_options))
    if tokenizer.sha256 != manifest["tokenizer_sha256"]:
        raise TinyLMError(f"the tokenizer in {root} is not the one its tokens were made with (sha256 differs); "
                          "prepare the dataset again")
    streams: dict[str, TokenChunks | np.ndarray] = {}
    for split in SPLITS:
        expected = manifest[split]["tokens"]
        stream = TokenChunks(f"{root.rstrip('/')}/{split}", cache_dir, storage_options) if expected else \
            np.zeros(0, dtype=manifest["dtype"])
        if len(stream) != expected:
            raise TinyLMError(f"{root}/{split} holds {len(stream)} tokens, its manifest says {expected}; the copy "
                              "is incomplete or was changed — copy or prepare it again")
        streams[split] = stream
    folder = cache_folder(root, cache_dir) if is_remote(root) else Path(root)
    return PreparedData(root, folder, manifest, tokenizer, streams)


def _tokenizer_file(root: str, cache_dir: str | os.PathLike, storage_options: dict | None) -> Path:
    """The dataset's tokenizer as a local file: tokenizer.model, else tokenizer.json (with its config)."""
    if not is_remote(root):
        folder = Path(root)
        return folder / SP_FILE if (folder / SP_FILE).is_file() else folder / HF_FILE
    try:
        return fetch(root, SP_FILE, cache_dir, storage_options)
    except TinyLMError:
        path = fetch(root, HF_FILE, cache_dir, storage_options)
        try:
            fetch(root, HF_CONFIG, cache_dir, storage_options)
        except TinyLMError:
            pass  # optional: a tokenizer.json alone is complete
        return path
