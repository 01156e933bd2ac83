"""Stage 1, the compact tokenizer: count the source tokenizer on ``--data``, keep the fewest pieces whose kept set
covers ``coverage`` of the counted tokens (the paper's 97.86%), and remap the source's embedding/head rows to them,
through the library's one pipeline (``tinylm.vocab.compact.compact_model``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tinylm.vocab.compact import compact_model


def compact_stage(tmp: Path, source_dir: Path, specs: list[str], coverage: float, vocab_size: int | None,
                      val_every: int, text_field: str) -> dict[str, Any]:
    """Count, pick k, compact the tokenizer, remap the source: ``counts/``, ``tokenizer/``, ``source/``."""
    record = compact_model(source_dir, specs, tmp, None if vocab_size else coverage, vocab_size, val_every,
                           text_field)
    return {"source_vocab": record["parent_vocab_size"], "vocab_size": record["vocab_size"],
            "coverage_target": coverage, "counted_coverage": record["counted_coverage"],
            "inflation": (record.get("verify") or {}).get("inflation"), "counted_tokens": record["counted_tokens"]}
