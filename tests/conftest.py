"""Shared fixtures: an isolated cache, a small real corpus, a tokenizer trained on it, and tiny model dirs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# Tests never touch the network: a Hugging Face hub load (lm-eval's hub-backed tasks, hf: corpora) fails at once
# instead of retrying. Set before datasets / huggingface_hub are imported, which read these once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# Tests never touch the user's cache; one cache per test session keeps the packed corpora shared between tests.
_SESSION_CACHE = Path(os.environ.setdefault("TINYLM_CACHE", str(Path(os.environ.get("TMPDIR", "/tmp")) /
                                                                f"tinylm-test-cache-{os.getpid()}")))

MIXED_TEXT = (
    "In the beginning God created the heaven and the earth.\n"
    "中华人民共和国成立于1949年。今天天气很好，我们去公园散步吧！\n"
    "def f(x):\n    return x  # code keeps its    spaces\n\n"
    "Emoji 😀🚀, rare scripts ᚠᚢᚦ ꦲꦏ, accents café naïve, tabs\tand trailing space "
)


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    """A small bilingual corpus of local .txt files cut from the built-in sources (real text)."""
    from tinylm.data.corpus import resolve

    folder = tmp_path_factory.mktemp("corpus")
    for source in resolve("builtin:kjv,peoples,lee"):
        for index, doc in enumerate(source.documents()):
            if index >= 60:
                break
            (folder / f"{source.spec.split(':')[1]}-{index:03d}.txt").write_text(doc, encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def tokenizer(corpus_dir, tmp_path_factory):
    from tinylm.tokenizer import train_tokenizer

    texts = [p.read_text(encoding="utf-8") for p in sorted(corpus_dir.glob("*.txt"))]
    return train_tokenizer(texts, tmp_path_factory.mktemp("tok") / "tok.model", vocab_size=4000)


@pytest.fixture(scope="session")
def model_dir_factory(tokenizer, tmp_path_factory):
    """Writes a randomly initialised model dir for a preset (seeded) and returns its path."""
    from tinylm.artifacts.model_dir import save_model_dir
    from tinylm.model import ModelConfig, Transformer

    made: dict[str, Path] = {}

    def make(preset: str = "debug", **overrides) -> Path:
        key = f"{preset}-{sorted(overrides.items())}"
        if key not in made:
            torch.manual_seed(0)
            config = ModelConfig.from_preset(preset, vocab_size=tokenizer.vocab_size, **overrides)
            model = Transformer(config)
            for norm in (m for m in model.modules() if m.__class__.__name__ == "RMSNorm"):
                torch.nn.init.normal_(norm.weight, 1.0, 0.1)  # non-trivial norm gains catch layout mistakes
            made[key] = save_model_dir(tmp_path_factory.mktemp(preset) / "model", model, tokenizer)
        return made[key]

    return make
