"""Coverage of the top-k pieces (docs/paper.md §1): the 48k most frequent of PanGu's 100,883 pieces cover 97.86% of the
pre-training corpus [P].

Counts mistral-common's 32,000-piece tokenizer (trained on other text: the paper's inherited tokenizer) and a
tinylm BPE tokenizer trained on the built-in bilingual corpus, on its training documents: the share of corpus
tokens the top-k pieces account for, at fixed k and at the paper's fraction of the vocabulary. Deterministic:
counting uses no seed, so the one finding is a threshold on a measurement.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reproduce.experiment import Experiment, Measured, Options
from reproduce.tables import fmt, markdown
from reproduce.verdict import Finding
from tinylm.artifacts.cache import cache_key
from tinylm.artifacts.io import default_cache_dir
from tinylm.data.corpus import resolve
from tinylm.data.datamodule import TextDataModule
from tinylm.errors import TinyLMError
from tinylm.tokenizer import Tokenizer, load_tokenizer
from tinylm.vocab.compact import count_frequencies, coverage_curve, pieces_for_coverage, plot_coverage, read_frequencies

PAPER_VOCAB, PAPER_K, PAPER_COVERAGE = 100_883, 48_000, 0.9786  # [P]
KS = (1000, 2000, 4000, 8000, 12000, 16000, 24000, 32000)


@dataclass(frozen=True)
class Scale:
    """What is counted: nothing is trained but tinylm's own tokenizer."""

    sources: str  # the corpus counted (and, for tinylm's own tokenizer, trained on)
    own_vocab: int  # the size of tinylm's own tokenizer


SCALES = {
    "smoke": Scale(sources="builtin", own_vocab=8000),
    "small": Scale(sources="builtin", own_vocab=32000),
    "paper": Scale(sources="builtin", own_vocab=100_000),  # a 100k tokenizer needs a far larger corpus
}
FINDINGS = (
    Finding("coverage", f"the top {100 * PAPER_K / PAPER_VOCAB:.1f}% of an inherited tokenizer's pieces (mistral-32k) "
            f"cover at least {100 * PAPER_COVERAGE:.2f}% of the corpus", "P", "share of corpus tokens",
            kind="threshold", at_least=PAPER_COVERAGE),
)


def mistral_tokenizer() -> Tokenizer:
    spec = importlib.util.find_spec("mistral_common")
    if spec is None:
        raise TinyLMError("mistral-common is not installed; pip install --no-deps mistral-common")
    return load_tokenizer(Path(spec.submodule_search_locations[0]) / "data" / "tokenizer.model.v1")


def own_tokenizer(sources: str, vocab_size: int) -> Tokenizer:
    """tinylm's BPE tokenizer of ``vocab_size`` trained on the training documents (cached like ``tinylm fit``)."""
    return TextDataModule(sources, vocab_size=vocab_size).resolve_tokenizer()


def counted(tokenizer: Tokenizer, sources: str, val_every: int = 50) -> dict[str, Any]:
    """Token frequencies on the training documents of ``sources``, counted once into the tinylm cache."""
    key = cache_key(tokenizer.sha256, sources, val_every, modules=["tinylm.vocab.counting"])
    folder = Path(default_cache_dir()) / "frequencies" / key
    if not (folder / "frequencies.json").is_file():
        count_frequencies(tokenizer, resolve(sources), folder, val_every=val_every)
    return read_frequencies(folder)


def measure(setting: Scale, options: Options, folder: Path) -> Measured:
    sources = setting.sources
    tokenizers = {"mistral-32k": mistral_tokenizer(), f"tinylm-{setting.own_vocab // 1000}k":
                  own_tokenizer(sources, setting.own_vocab)}
    freqs = {name: counted(tok, sources) for name, tok in tokenizers.items()}
    curves = {name: coverage_curve(f["counts"]) for name, f in freqs.items()}
    paper_fraction, names = PAPER_K / PAPER_VOCAB, list(curves)
    tokens = ", ".join(f"{n}: {freqs[n]['tokens']:,} tokens" for n in names)
    rows = [{"k": k, **{n: float(c[k - 1]) if k <= len(c) else None for n, c in curves.items()}} for k in KS]
    at_fraction = {n: float(c[max(1, round(paper_fraction * len(c))) - 1]) for n, c in curves.items()}
    needed = {n: pieces_for_coverage(freqs[n]["counts"], PAPER_COVERAGE) for n in names}
    lines = [f"Corpus: {sources} training documents ({tokens}, {freqs[names[0]]['bytes'] / 1e6:.1f} MB).", "",
             *markdown(("k", *names, "paper (100,883-piece tokenizer)"), [
                 *((f"{r['k']:,}", *(fmt(None if r[n] is None else 100 * r[n]) + ("%" if r[n] else "") for n in names),
                    "n/a") for r in rows),
                 (f"{100 * paper_fraction:.1f}% of the vocabulary",
                  *(f"{100 * v:.2f}% (k={round(paper_fraction * len(curves[n])):,})" for n, v in at_fraction.items()),
                  f"{100 * PAPER_COVERAGE:.2f}% (k=48,000) [P]"),
                 (f"pieces for {100 * PAPER_COVERAGE:.2f}%",
                  *(f"{k:,} ({100 * k / len(curves[n]):.1f}%)" for n, k in needed.items()), "48,000 (47.6%) [P]")])]
    rows.append({"k": "paper fraction", **at_fraction})
    unused = {n: int((f["counts"] == 0).sum()) for n, f in freqs.items()}
    notes = [*(f"{n}: {100 * at_fraction[n]:.2f}% of the corpus at the paper's fraction of the vocabulary (paper "
               f"{100 * PAPER_COVERAGE:.2f}% [P]); {unused[n]:,} of {len(curves[n]):,} pieces never occur"
               for n in names), "a tokenizer trained on this very corpus has a much thinner tail than an inherited one"]
    figure = "coverage.png"
    plot_coverage({n: freqs[n]["counts"] for n in names}, folder / figure, relative=True,
                  paper_point=(paper_fraction, 100 * PAPER_COVERAGE))
    return Measured(
        table="\n".join(lines) + "\n\n" + "\n".join(f"- {v}" for v in notes), rows=rows,
        findings={"coverage": {"value": at_fraction["mistral-32k"]}}, figures=[figure],
        extra={"pieces_for_paper_coverage": needed, "never_used": unused,
               "counting": {n: {k: f[k] for k in ("tokens", "bytes", "documents", "method")} for n, f in freqs.items()}})


EXPERIMENT = Experiment("coverage", "Token coverage of the top-k pieces (§1, compact tokenizer)", SCALES, FINDINGS,
                        measure, deterministic=True,
                        paper={"vocab": PAPER_VOCAB, "k": PAPER_K, "coverage": PAPER_COVERAGE, "tag": "P"},
                        core_hours={"small": 0.01})
