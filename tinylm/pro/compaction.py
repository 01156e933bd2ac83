"""Stage 1, the compact tokenizer: count the source tokenizer on ``--data``, keep the top-k pieces covering
``coverage`` of the counted tokens (the paper's 97.86%), and remap the source's embedding/head rows to them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable


def _command(group: str, name: str) -> Callable[..., Any]:
    """A ``tinylm`` subcommand's function, looked up the way the CLI does (it stays valid as modules move)."""
    import importlib

    from tinylm.cli import COMMANDS

    module, _, function = COMMANDS[group][name].partition(":")
    return getattr(importlib.import_module(module), function)


def compact_tokenizer(tmp: Path, source_dir: Path, specs: list[str], coverage: float, vocab_size: int | None,
                      val_every: int, text_field: str) -> dict[str, Any]:
    """Count, pick k by coverage, compact the tokenizer, remap the source: ``counts/``, ``tokenizer/``, ``source/``.

    The kept pieces always include the special and byte pieces (and pieces that keep BPE merges reachable), so k
    grows by the top pieces those displaced until the kept set covers ``coverage`` (at most six compactions).
    """
    import shutil

    import numpy as np

    _command("tokenizer", "count")(tokenizer=str(source_dir), input=specs, out=str(tmp / "counts"),
                                   val_every=val_every, text_field=text_field)
    frequencies = json.loads((tmp / "counts" / "frequencies.json").read_text())
    counts = np.asarray(frequencies["counts"], dtype=np.float64)
    ranked = np.argsort(-counts, kind="stable")
    curve = np.cumsum(counts[ranked]) / counts.sum()
    k = vocab_size or int(np.searchsorted(curve, coverage - 1e-12) + 1)
    for attempt in range(6):
        k = min(k, len(counts))
        trial = tmp / f"tokenizer-{k}"
        if not trial.exists():
            _command("tokenizer", "compact")(tokenizer=str(source_dir), freq=str(tmp / "counts"), vocab_size=k,
                                             out=str(trial), text_field=text_field)
        record = json.loads((trial / "compact.json").read_text())
        kept = np.asarray(record["id_map"])
        covered = float(counts[kept].sum() / counts.sum())
        if vocab_size or covered >= coverage - 1e-12 or k == len(counts):
            break
        needed = int(np.searchsorted(curve, coverage - 1e-12) + 1)
        # grow by twice the top pieces the kept set still lacks: pieces kept for reachability displace more
        k += 2 * max(1, needed - int(np.isin(ranked[:needed], kept).sum()))
    trial.rename(tmp / "tokenizer")
    for other in tmp.glob("tokenizer-*"):
        shutil.rmtree(other)
    _command("tokenizer", "remap")(model=str(source_dir), tokenizer=str(tmp / "tokenizer"), out=str(tmp / "source"))
    return {"source_vocab": len(counts), "vocab_size": int(len(kept)), "coverage_target": coverage,
            "counted_coverage": covered, "inflation": (record.get("verify") or {}).get("inflation"),
            "compactions": attempt + 1, "counted_tokens": frequencies["tokens"]}
