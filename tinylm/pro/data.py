"""The run's text: a seeded training sample of ``--data`` (also Taylor's calibration text), the held-out
documents the report scores, and the packed token stream both are read as."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch

from tinylm.data.corpus import resolve
from tinylm.errors import TinyLMError
from tinylm.tokenizer import load_tokenizer


def sample_documents(specs: list[str], text_field: str, val_every: int, train_chars: int, heldout_chars: int,
                     seed: int) -> tuple[list[str], list[str]]:
    """A seeded sample of the training documents (at least ``train_chars``, in the drawn order) and the first
    held-out documents of each source (about ``heldout_chars`` in all); held-out documents are every
    ``val_every``-th, as in fit."""
    sources = [s for spec in specs for s in resolve(spec, text_field)]
    sizes, heldout = [], []
    for number, source in enumerate(sources):
        taken = 0
        for index, doc in enumerate(source.documents()):
            if not doc.strip():
                continue
            if index % val_every == val_every - 1:
                if taken < heldout_chars / len(sources):
                    heldout.append(doc)
                    taken += len(doc)
            else:
                sizes.append((number, index, len(doc)))
    total = sum(size for *_, size in sizes)
    if total == 0 or not heldout:
        raise TinyLMError(f"--data {specs} has too few documents for a training sample and a held-out set (every "
                          f"{val_every}th document); give more text")
    order = list(range(len(sizes)))
    random.Random(seed).shuffle(order)
    chosen, chars = set(), 0
    for position in order:
        if chars >= train_chars:
            break
        chosen.add(sizes[position][:2])
        chars += sizes[position][2]
    picked = {(number, index): doc for number, source in enumerate(sources)
              for index, doc in enumerate(source.documents()) if (number, index) in chosen}
    return [picked[sizes[p][:2]] for p in order if sizes[p][:2] in picked], heldout  # in the drawn order


def write_jsonl(path: Path, docs: list[str]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for doc in docs:
            handle.write(json.dumps({"text": doc}, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle if line.strip()]


def token_stream(tokenizer, docs: list[str]) -> torch.Tensor:
    """Documents as one stream, each followed by EOS (the packed training layout), after a leading EOS."""
    stream = [tokenizer.eos_id]
    for ids in tokenizer.encode(docs):
        stream += ids + [tokenizer.eos_id]
    return torch.tensor(stream, dtype=torch.long)


def write_sample(tmp: Path, specs: list[str], text_field: str, val_every: int, compact: Path, train_tokens: int,
                 heldout_chars: int, seed: int) -> dict[str, Any]:
    """``sample.jsonl``: drawn training documents up to ``train_tokens`` compact-tokenizer tokens (Taylor's
    calibration text too); ``train.jsonl``: the sample with held-out documents interleaved so that the
    DataModule's own split (every ``fit_val_every``-th document) holds out exactly those; ``heldout.jsonl``: the
    text the report scores."""
    tokenizer = load_tokenizer(compact)
    counted = json.loads((compact.parent / "counts" / "frequencies.json").read_text())
    # characters to draw: bytes per source token over-estimates characters per compact token, plus a margin
    chars = round(1.2 * train_tokens * counted["bytes"] / max(1, counted["tokens"]))
    drawn, heldout = sample_documents(specs, text_field, val_every, chars, heldout_chars, seed)
    train, total = [], 0
    for doc, ids in zip(drawn, tokenizer.encode(drawn)):
        if total >= train_tokens:
            break
        train.append(doc)
        total += len(ids) + 1  # and its EOS
    docs, every, shared = interleave(train, heldout)
    write_jsonl(tmp / "sample.jsonl", train)
    write_jsonl(tmp / "train.jsonl", docs)
    write_jsonl(tmp / "heldout.jsonl", heldout)
    return {"train_documents": len(train), "train_tokens": total, "train_chars": sum(map(len, train)),
            "heldout_documents": len(heldout), "heldout_bytes": sum(len(d.encode()) for d in heldout),
            "fit_val_every": every, "fit_val_documents": shared}


def interleave(train: list[str], heldout: list[str]) -> tuple[list[str], int, int]:
    """One document list whose every ``every``-th entry is a held-out document and no other is: returns the
    list, ``every`` and how many held-out documents it holds (as many as an exact period allows)."""
    for count in range(len(heldout), 0, -1):
        total = len(train) + count
        every = next((k for k in range(2, total + 1) if total // k == count), None)
        if every is not None:
            rest, held = iter(train), iter(heldout[:count])
            return [next(held) if i % every == every - 1 else next(rest) for i in range(total)], every, count
    raise TinyLMError("no held-out documents to validate on; give more text in --data")
