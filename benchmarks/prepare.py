"""Preparation speed and memory, and training speed from a prepared dataset (the goals of issue 25).

On the same text with the same tokenizer, each repeat runs every case once, in turn (interleaved, so machine
noise hits all alike); medians are reported:

1. the raw tokenizer: batched encode of the corpus's documents held in memory, one process, one thread — the
   ceiling of one worker;
2. ``tinylm data prepare`` at 1 and 2 workers (a fresh process each): MB/s of text through the pipeline (from the
   first document read to the last chunk written, as its manifest records) and wall-clock; peak RSS of the largest
   process;
3. the engine's own preparation, as litgpt prepares a corpus: litdata ``optimize`` over the corpus files, a
   generator yielding each document's tokens, ``TokensLoader``, at 1 and 2 workers;
4. peak RSS of ``tinylm data prepare`` on a larger corpus (``--large``, e.g. 1 GB against 100 MB);
5. training tokens/s reading the prepared dataset against the memmap cache (same text, tokenizer, blocks, order
   and model), as full training steps and for the data loader alone.

Goals: prepare ≥ 0.8× the raw tokenizer per worker, ≥ 1.8× from 1 to 2 workers, peak RSS on ``--large`` within
+20%, training tokens/s within 5% of the memmap cache. The corpus comes from ``benchmarks/corpora.py``.

    python benchmarks/prepare.py --corpus corpora/real [--large corpora/real-1g] [--tokenizer T] [--repeats 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import datasets
import lightning as L
import numpy as np
from litdata import optimize
from litdata.streaming.item_loader import TokensLoader

from tinylm.artifacts.io import atomic_file
from tinylm.artifacts.provenance import git_state
from tinylm.data.corpus import resolve
from tinylm.data.datamodule import TextDataModule
from tinylm.data.packing import token_dtype
from tinylm.model import ModelConfig
from tinylm.tokenizer import SentencePieceTokenizer, Tokenizer, load_tokenizer
from tinylm.training.lm import LanguageModel

RSS_WRAPPER = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
               "print('peak_rss_kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)")
PROJECTED_TOKENS = 1.6e12  # the paper's PanGu-π-1B Pro budget


def mistral_tokenizer() -> str:
    return str(Path(importlib.util.find_spec("mistral_common").submodule_search_locations[0]) / "data" /
               "tokenizer.model.v1")


def encode(tokenizer: Tokenizer, docs: list[str]) -> list[list[int]]:
    threads = {"num_threads": 1} if isinstance(tokenizer, SentencePieceTokenizer) else {}
    return tokenizer.encode(docs, eos=True, **threads)


def raw_encode(tokenizer: Tokenizer, docs: list[str], nbytes: int) -> float:
    """MB/s of the tokenizer's own batched encode over the documents, 512 at a time."""
    start = time.perf_counter()
    for first in range(0, len(docs), 512):
        encode(tokenizer, docs[first : first + 512])
    return nbytes / 1e6 / (time.perf_counter() - start)


def tinylm_prepare(corpus: str, tokenizer: str, out: Path, workers: int) -> dict:
    """One ``tinylm data prepare`` in a fresh process: its manifest, wall-clock and the peak RSS of its tree."""
    command = [sys.executable, "-c", RSS_WRAPPER, sys.executable, "-m", "tinylm.cli", "data", "prepare",
               "--sources", corpus, "--tokenizer", tokenizer, "--out", str(out), "--workers", str(workers)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"tinylm data prepare failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    rss = int(done.stdout.split("peak_rss_kb")[-1].split()[0])
    shutil.rmtree(out)
    return {"manifest": manifest, "wall": wall, "rss_mb": rss / 1024}


def _litgpt_tokenize(tokenizer: Tokenizer, path: str):
    """litgpt's prepare function shape: read one input file, yield each document's tokens."""
    dtype = token_dtype(tokenizer.vocab_size)
    for row in datasets.load_dataset("json", data_files=path, split="train").iter(batch_size=512):
        for ids in encode(tokenizer, [t for t in row["text"] if t and t.strip()]):
            yield np.asarray(ids, dtype=dtype)


def litgpt_prepare(corpus: str, tokenizer: Tokenizer, out: Path, workers: int) -> float:
    """Seconds of litdata's ``optimize`` preparing the corpus files as litgpt does (file-level work split)."""
    files = sorted(str(p) for p in Path(corpus).rglob("*.jsonl"))
    start = time.perf_counter()
    optimize(fn=partial(_litgpt_tokenize, tokenizer), inputs=files, output_dir=str(out), num_workers=workers,
             chunk_bytes="64MB", item_loader=TokensLoader(), start_method="fork", verbose=False)
    seconds = time.perf_counter() - start
    shutil.rmtree(out)
    return seconds


class StepTimer(L.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.times.append(time.perf_counter() - self.start)


def train_tokens_per_s(data: TextDataModule, steps: int, root: Path) -> tuple[float, float]:
    """(full training steps, loader alone) tokens/s of a small model over ``data``; the first step is a warm-up."""
    config = ModelConfig(vocab_size=data.tokenizer.vocab_size, hidden_size=256, num_layers=4, num_heads=4,
                         intermediate_size=688, max_seq_len=data.seq_len)
    timer = StepTimer()
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps + 1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        default_root_dir=str(root), callbacks=[timer])
    trainer.fit(LanguageModel(config, lr=1e-3), datamodule=data)
    tokens = data.batch_size * data.seq_len
    steps_per_s = 1 / statistics.median(timer.times[1:])
    start, count = time.perf_counter(), 0
    for count, _ in enumerate(data.train_dataloader(), 1):
        if count == steps * 20:
            break
    return tokens * steps_per_s, tokens * count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", required=True, help="a folder of .jsonl text (benchmarks/corpora.py)")
    parser.add_argument("--large", default=None, help="a larger corpus for the peak-RSS comparison (e.g. 1 GB)")
    parser.add_argument("--tokenizer", default=None, help="default: mistral-common's 32k SentencePiece model")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per repeat")
    parser.add_argument("--seq_len", type=int, default=256)
    parser.add_argument("--out", default="results/benchmarks/prepare.md")
    args = parser.parse_args()
    tokenizer_path = args.tokenizer or mistral_tokenizer()
    tokenizer = load_tokenizer(tokenizer_path)
    docs = [d for s in resolve(args.corpus) for d in s.documents() if d.strip()]
    nbytes = sum(len(d.encode()) for d in docs)
    work = Path(tempfile.mkdtemp(prefix="tinylm-prepare-bench."))
    results: dict[str, list[float]] = {}

    def record(name: str, value: float) -> None:
        results.setdefault(name, []).append(value)
        print(f"  {name}: {value:.2f}", flush=True)

    try:
        for repeat in range(args.repeats):
            print(f"repeat {repeat + 1}/{args.repeats}", flush=True)
            record("raw tokenizer MB/s", raw_encode(tokenizer, docs, nbytes))
            for workers in (1, 2):
                run = tinylm_prepare(args.corpus, tokenizer_path, work / f"prepared-{workers}", workers)
                record(f"prepare {workers}w MB/s", run["manifest"]["encoded_mb_per_s"])
                record(f"prepare {workers}w wall MB/s", nbytes / 1e6 / run["wall"])
                record(f"prepare {workers}w peak RSS MB", run["rss_mb"])
                record(f"litgpt-style optimize {workers}w MB/s",
                       nbytes / 1e6 / litgpt_prepare(args.corpus, tokenizer, work / "litgpt", workers))
            if args.large:
                record("prepare 2w peak RSS MB (large)",
                       tinylm_prepare(args.large, tokenizer_path, work / "large", 2)["rss_mb"])
        bytes_per_token = run["manifest"]["train"]["bytes"] / run["manifest"]["train"]["tokens"]
        prepared = work / "prepared"
        subprocess.run([sys.executable, "-m", "tinylm.cli", "data", "prepare", "--sources", args.corpus,
                        "--tokenizer", tokenizer_path, "--out", str(prepared), "--workers", "2"], check=True,
                       capture_output=True)
        settings = dict(seq_len=args.seq_len, batch_size=8, cache_dir=str(work / "cache"))
        loaders = {"memmap": TextDataModule(sources=args.corpus, tokenizer=tokenizer_path, **settings),
                   "prepared": TextDataModule(prepared=str(prepared), **settings)}
        for data in loaders.values():
            data.prepare_data()
            data.setup("fit")
        for repeat in range(args.repeats):
            for name, data in loaders.items():
                steps, loader = train_tokens_per_s(data, args.steps, work / f"fit-{name}-{repeat}")
                record(f"train tok/s ({name})", steps)
                record(f"loader tok/s ({name})", loader)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_report(args, results, nbytes, bytes_per_token)


def write_report(args, results: dict[str, list[float]], nbytes: int, bytes_per_token: float) -> None:
    med = {name: statistics.median(values) for name, values in results.items()}
    raw, one, two = med["raw tokenizer MB/s"], med["prepare 1w MB/s"], med["prepare 2w MB/s"]
    goals = [
        ("prepare per worker ≥ 0.8× raw tokenizer", f"{one / raw:.2f}×", one / raw >= 0.8),
        ("1 → 2 workers ≥ 1.8×", f"{two / one:.2f}×", two / one >= 1.8),
        ("train tok/s prepared vs memmap within 5%",
         f"{med['train tok/s (prepared)'] / med['train tok/s (memmap)']:.3f}×",
         abs(med["train tok/s (prepared)"] / med["train tok/s (memmap)"] - 1) <= 0.05),
    ]
    if "prepare 2w peak RSS MB (large)" in med:
        ratio = med["prepare 2w peak RSS MB (large)"] / med["prepare 2w peak RSS MB"]
        goals.append(("peak RSS, large corpus vs corpus ≤ +20%", f"{ratio:.2f}×", ratio <= 1.2))
    text_bytes = PROJECTED_TOKENS * bytes_per_token
    # the corpus folders by name (benchmarks/corpora.py writes them): no machine's paths in the committed report
    command = f"python benchmarks/prepare.py --corpus {Path(args.corpus).name}" + \
        (f" --large {Path(args.large).name}" if args.large else "") + f" --repeats {args.repeats}"
    commit, dirty = git_state(outside=(Path(args.out).parent,))
    header = (f"# Data preparation benchmark\n\n`{command}` — {nbytes / 1e6:.1f} MB of text, tokenizer "
              f"{Path(args.tokenizer or mistral_tokenizer()).name}, {os.cpu_count()} CPUs, medians of "
              f"{args.repeats} interleaved repeats; commit {(commit or 'unknown')[:10]}"
              f"{' (uncommitted changes)' if dirty else ''}.\n")
    lines = [header, "| measure | median | runs |", "|---|---|---|"]
    lines += [f"| {name} | {med[name]:.2f} | {', '.join(f'{v:.2f}' for v in values)} |"
              for name, values in results.items()]
    lines += ["", "| goal | measured | met |", "|---|---|---|"]
    lines += [f"| {goal} | {value} | {'yes' if met else 'no'} |" for goal, value, met in goals]
    projection = (f"Projected for {PROJECTED_TOKENS:.1e} tokens ({text_bytes / 1e12:.1f} TB of text at "
                  f"{bytes_per_token:.2f} bytes per token), at the measured per-worker speed and 1 → 2 scaling:")
    lines += ["", projection, ""]
    efficiency = min(1.0, two / (2 * one))
    for workers in (16, 64, 256, 1024):
        hours = text_bytes / 1e6 / (one * workers * efficiency) / 3600
        lines.append(f"- {workers} workers: " + (f"{hours:,.0f} h" if hours >= 1 else f"{60 * hours:.0f} min"))
    report = "\n".join(lines) + "\n"
    with atomic_file(args.out) as handle:
        handle.write(report)
    print(report)


if __name__ == "__main__":
    main()
