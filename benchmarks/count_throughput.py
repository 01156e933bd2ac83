"""Token-frequency counting throughput: ``tinylm tokenizer count`` against the official approach.

The official scripts (RethinkTinyLM ``src/step1_token_frequency_stat.py``) count a corpus that was tokenized
beforehand and stored as JSON lines of token ids, adding one token at a time to a Python dict, one process per
file. Here both run on the same text (the built-in corpus, held in memory so that reading it is not measured)
with the same number of processes, and must give the same counts.

    python benchmarks/count_throughput.py [--tokenizer T] [--workers 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from tinylm.data.corpus import Source, resolve
from tinylm.tokenizer import load_tokenizer
from tinylm.vocab.compact import count_frequencies


def mistral_tokenizer() -> str:
    return str(Path(importlib.util.find_spec("mistral_common").submodule_search_locations[0]) / "data" /
               "tokenizer.model.v1")


def official_count(path: str) -> dict:
    """The official per-token dict counting of one JSON-lines file of pre-tokenized documents."""
    res: dict = {}
    with open(path) as handle:
        for line in handle:
            for token in json.loads(line)["tokens"]:
                res[token] = res.get(token, 0) + 1
    return res


def official_tokenize(args: tuple[str, list[str], str]) -> None:
    """The pre-tokenization the official counting needs: one JSON line of token ids per document."""
    model, docs, path = args
    tokenizer = load_tokenizer(model)
    with open(path, "w") as handle:
        for ids in tokenizer.sp.encode(docs, num_threads=1):
            handle.write(json.dumps({"tokens": ids}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokenizer", default=None, help="SentencePiece model (default: mistral-common's 32k)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shard_chars", type=int, default=1_000_000)
    args = parser.parse_args()
    model = args.tokenizer or mistral_tokenizer()
    tokenizer = load_tokenizer(model)

    start = time.perf_counter()
    docs = [d for s in resolve("builtin") for d in s.documents() if d.strip()]
    read_s = time.perf_counter() - start
    mb = sum(len(d.encode()) for d in docs) / 1e6
    print(f"corpus: builtin, {len(docs)} documents, {mb:.2f} MB (reading it took {read_s:.1f} s, not counted below)")
    source = Source("memory:builtin", lambda: iter(docs), f"memory:{time.time()}")

    with tempfile.TemporaryDirectory() as tmp:
        start, cpu = time.perf_counter(), cpu_seconds()
        record = count_frequencies(tokenizer, [source], Path(tmp) / "freq", val_every=0, workers=args.workers,
                                   shard_chars=args.shard_chars)
        ours_s, ours_cpu = time.perf_counter() - start, cpu_seconds() - cpu
        ours = record["counts"]

        parts = [docs[i :: args.workers] for i in range(args.workers)]
        files = [str(Path(tmp) / f"part{i}.jsonl") for i in range(args.workers)]
        start, cpu = time.perf_counter(), cpu_seconds()
        with multiprocessing.Pool(args.workers) as pool:
            pool.map(official_tokenize, [(model, part, f) for part, f in zip(parts, files)])
        tokenize_s, tokenize_cpu = time.perf_counter() - start, cpu_seconds() - cpu
        start, cpu = time.perf_counter(), cpu_seconds()
        with multiprocessing.Pool(args.workers) as pool:
            results = pool.map(official_count, files)
        count_s, count_cpu = time.perf_counter() - start, cpu_seconds() - cpu
    official = np.zeros(tokenizer.vocab_size, dtype=np.int64)
    for res in results:
        for token, n in res.items():
            official[token] += n

    same = bool(np.array_equal(np.asarray(ours), official))
    # wall-clock speed depends on what else runs on the machine; MB per CPU-second does not
    print(f"tinylm count ({record['method']}, {args.workers} workers): {ours_s:.2f} s wall, {ours_cpu:.2f} CPU-s: "
          f"{mb / ours_s:.1f} MB/s wall, {mb / ours_cpu:.1f} MB per CPU-s, from raw text")
    print(f"official: pre-tokenize to JSON lines {tokenize_s:.2f} s wall / {tokenize_cpu:.2f} CPU-s + per-token "
          f"dict counting {count_s:.2f} s / {count_cpu:.2f} CPU-s: {mb / (tokenize_s + count_s):.1f} MB/s wall, "
          f"{mb / (tokenize_cpu + count_cpu):.1f} MB per CPU-s from raw text "
          f"({mb / count_cpu:.1f} MB per CPU-s counting alone)")
    print(f"same counts: {same}; speed-up {(tokenize_s + count_s) / ours_s:.1f}x wall, "
          f"{(tokenize_cpu + count_cpu) / ours_cpu:.1f}x CPU")


def cpu_seconds() -> float:
    """CPU time of this process and of its finished child processes."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


if __name__ == "__main__":
    main()
