"""``tinylm tokenizer train | count | compact | remap | coverage``: the commands over ``tinylm.vocab`` (the compact
tokenizer pipeline) and ``tinylm.tokenizer`` (training). Each checks every input and output before any work."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tinylm.artifacts import builtin
from tinylm.artifacts.io import MARKER, atomic_dir, check_output_dir, check_output_file, is_tinylm_dir
from tinylm.data.corpus import resolve, split_documents
from tinylm.tokenizer import load_tokenizer, train_tokenizer
from tinylm.vocab.compact import compact_tokenizer, sample_documents
from tinylm.vocab.counting import FREQ_FILE, count_frequencies, read_frequencies
from tinylm.vocab.coverage import DEFAULT_KS, coverage_markdown, coverage_rows, pieces_for_coverage, plot_coverage
from tinylm.vocab.remap import remap_model


def train_command(
    input: list[str] | str = "builtin",
    out: str = "tokenizer.model",
    vocab_size: int = 8000,
    val_every: int = 50,
    text_field: str = "text",
    overwrite: bool = False,
) -> None:
    """Train a LLaMA-style SentencePiece BPE tokenizer (byte fallback) on text sources.

    Args:
        input: text sources: ``builtin``, files/dirs/globs of .txt/.jsonl/.parquet, or ``hf:<name>``.
        out: the .model file to write.
        vocab_size: number of pieces.
        val_every: leave out every val_every-th document (the validation split of ``tinylm fit``).
        text_field: the text column of jsonl/parquet sources.
        overwrite: replace an existing ``out`` file.
    """
    check_output_file(out, overwrite, "--out")
    specs = [input] if isinstance(input, str) else input
    sources = [s for spec in specs for s in resolve(spec, text_field)]
    train_docs, _ = split_documents(sources, val_every)
    tokenizer = train_tokenizer(train_docs, out, vocab_size=vocab_size)
    print(f"tinylm: wrote {out} ({tokenizer.vocab_size} pieces)")


def count_command(
    tokenizer: str,
    input: list[str] | str = "builtin",
    out: str = "freq",
    val_every: int = 50,
    text_field: str = "text",
    workers: int = 0,
    shard_chars: int = 4_000_000,
    overwrite: bool = False,
) -> None:
    """Count how often each piece of a tokenizer occurs on a corpus (parallel, streaming, resumable per shard).

    Args:
        tokenizer: a SentencePiece .model file, a tokenizer.json, a model dir or ``builtin:smollm2-135m``.
        input: text source(s): ``builtin``, files/dirs/globs of .txt/.jsonl/.parquet, or ``hf:<name>``.
        out: folder for frequencies.json and the per-shard counts a rerun reuses.
        val_every: leave out every val_every-th document (the validation split of ``tinylm fit``); 0 counts all.
        text_field: the text column of jsonl/parquet sources.
        workers: counting processes (0: one per CPU core).
        shard_chars: characters of text per shard (the unit of parallel work and of resuming).
        overwrite: recount from scratch into an ``out`` tinylm wrote (without it, an earlier count of this
            command in ``out`` is resumed; a killed fresh count restarts, since its shards were written aside).
    """
    specs = [input] if isinstance(input, str) else input
    out_dir = check_output_dir(out, overwrite or _resumable_count(out), inputs=[tokenizer, *specs])
    tok = load_tokenizer(builtin.resolve(tokenizer))  # every input is read before anything is written
    sources = [s for spec in specs for s in resolve(spec, text_field)]
    if _resumable_count(out_dir) and not overwrite:  # an earlier count's shards are reused
        record = count_frequencies(tok, sources, out_dir, val_every=val_every, workers=workers,
                                   shard_chars=shard_chars)
    else:  # a fresh count is built aside and replaces an old one only when complete
        with atomic_dir(out_dir, overwrite, inputs=[tokenizer, *specs]) as tmp:
            (tmp / MARKER).touch()
            record = count_frequencies(tok, sources, tmp, val_every=val_every, workers=workers,
                                       shard_chars=shard_chars)
    speed = f", encoded at {record['encoded_mb_per_s']:.1f} MB/s" if record["encoded_mb_per_s"] else ""
    print(f"tinylm: counted {record['tokens']:,} tokens in {record['bytes'] / 1e6:.1f} MB "
          f"({record['shards']} shards, {record['shards_reused']} reused{speed}) -> {Path(out) / FREQ_FILE}")


def _resumable_count(out: str | os.PathLike) -> bool:
    """A folder an earlier ``tokenizer count`` wrote (its marker and its shards), which a rerun continues."""
    return is_tinylm_dir(out) and (Path(out) / "shards").is_dir()


def compact_command(
    tokenizer: str,
    freq: str,
    vocab_size: int,
    out: str,
    verify_input: list[str] | str | None = None,
    verify_chars: int = 2_000_000,
    keep_reachable: bool = True,
    text_field: str = "text",
    overwrite: bool = False,
) -> None:
    """Keep the special and byte pieces plus the most frequent pieces up to vocab_size; write the new tokenizer.

    SentencePiece (tokenizer.model) and Hugging Face BPE (tokenizer.json, e.g. SmolLM2's byte-level BPE) alike.

    Args:
        tokenizer: the tokenizer (file, model dir or builtin:<name>) the frequencies were counted with.
        freq: the frequency file or folder written by ``tinylm tokenizer count``.
        vocab_size: pieces to keep, special and byte pieces included.
        out: folder for tokenizer.model, the Hugging Face tokenizer files and compact.json (the id map).
        verify_input: text sources for the round-trip and inflation check (default: the counted sources).
        verify_chars: characters of text to verify on, spread over the sources (0 skips the check).
        keep_reachable: swap kept BPE pieces that no kept merge can produce for the next most frequent ones
            (SentencePiece; a tokenizer.json is always closed under merges).
        text_field: the text column of jsonl/parquet sources.
        overwrite: replace an ``out`` that tinylm wrote.
    """
    verify = [verify_input] if isinstance(verify_input, str) else list(verify_input or [])
    inputs = [tokenizer, freq, *verify]
    check_output_dir(out, overwrite, inputs=inputs)
    tok = load_tokenizer(builtin.resolve(tokenizer))
    frequencies = read_frequencies(freq)
    specs = frequencies.get("sources", []) if verify_input is None else verify
    specs = [specs] if isinstance(specs, str) else specs
    docs = sample_documents(specs, verify_chars, text_field) if verify_chars > 0 and specs else []
    record = compact_tokenizer(tok, frequencies, vocab_size, out, docs, keep_reachable, overwrite, inputs)
    check = record["verify"]
    summary = (f"; round trip lossless on {check['lossless']}/{check['documents']} documents, "
               f"{check['new_tokens']:,} tokens vs {check['old_tokens']:,} ({check['inflation']:.4f}x)"
               if check else "")
    closure = (f"{record['replaced_unreachable']} unreachable pieces swapped" if "replaced_unreachable" in record
               else f"{record['kept_as_merge_parts']} kept as merge parts, {record['passed_over']} passed over")
    print(f"tinylm: kept {record['vocab_size']} of {record['parent_vocab_size']} pieces covering "
          f"{100 * record['counted_coverage']:.2f}% of counted tokens ({closure}){summary} -> {out}")


def remap_command(model: str, tokenizer: str, out: str, overwrite: bool = False) -> None:
    """Write a copy of a model dir whose embedding and output-head rows follow a compact tokenizer.

    Args:
        model: the model dir (with the tokenizer it was trained with).
        tokenizer: the compact tokenizer: a folder written by ``tinylm tokenizer compact`` or its .model file.
        out: the new model dir.
        overwrite: replace an ``out`` that tinylm wrote.
    """
    check_output_dir(out, overwrite, inputs=[model, tokenizer])
    path = remap_model(builtin.resolve(model), builtin.resolve(tokenizer), out, overwrite)
    print(f"tinylm: wrote {path} ({load_tokenizer(path).vocab_size} embedding rows)")


def coverage_command(freq: str, out: str = "coverage", ks: list[int] = list(DEFAULT_KS),  # noqa: B006
                     overwrite: bool = False) -> None:
    """Cumulative share of corpus tokens covered by the top-k pieces: coverage.png, coverage.md, coverage.json.

    Args:
        freq: the frequency file or folder written by ``tinylm tokenizer count``.
        out: the output folder.
        ks: the k values of the table (the full vocabulary is always added).
        overwrite: replace an ``out`` that tinylm wrote.
    """
    check_output_dir(out, overwrite, inputs=[freq])
    frequencies = read_frequencies(freq)
    counts = frequencies["counts"]
    rows = coverage_rows(counts, ks)
    targets = {f"{100 * s:g}%": pieces_for_coverage(counts, s) for s in (0.9, 0.95, 0.9786, 0.99, 0.999)}
    table = coverage_markdown(rows) + "\n\n| coverage | pieces needed |\n|---|---|\n" + "\n".join(
        f"| {name} | {k} |" for name, k in targets.items())
    with atomic_dir(out, overwrite, inputs=[freq]) as tmp:
        plot_coverage({Path(frequencies["tokenizer"]).name: counts}, tmp / "coverage.png")
        (tmp / "coverage.md").write_text(table + "\n")
        (tmp / "coverage.json").write_text(json.dumps({"tokenizer": frequencies["tokenizer"], "rows": rows,
                                                       "pieces_for": targets}, indent=2))
    print(table)
