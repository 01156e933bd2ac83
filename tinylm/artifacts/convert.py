"""``tinylm convert``: a GGUF file or a Hugging Face LLaMA folder -> a tinylm model dir (the HF layout).

GGUF (llama.cpp's format) stores quantized weights under its own names, q/k rows permuted for its RoPE
kernel, and the tokenizer as metadata. Conversion dequantizes every tensor to fp32 (``gguf``'s numpy
dequantizers), renames it, undoes the q/k permutation, and rebuilds ``tokenizer.json`` from the vocabulary
and merges, so transformers' ``AutoModelForCausalLM`` / ``AutoTokenizer`` load the dir unchanged.
transformers' own GGUF loader (``from_pretrained(folder, gguf_file=...)``) is the reference the tests hold us
to; it refuses ``save_pretrained``, so the state dict is written here (safetensors).

Built-in models (``builtin:smollm2-135m``) are found and converted once into the cache by
``tinylm.artifacts.builtin``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tinylm.artifacts.io import check_output_dir, sha256_file
from tinylm.artifacts.model_dir import (
    check_finite,
    check_tokenizer_files,
    load_config,
    load_state_dict,
    write_model_dir,
)
from tinylm.errors import TinyLMError
from tinylm.model import ModelConfig
from tinylm.tokenizer import load_tokenizer

# llama.cpp tensor names -> Hugging Face LLaMA names ({} is the layer index)
GGUF_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{}.attn_norm.weight": "model.layers.{}.input_layernorm.weight",
    "blk.{}.ffn_norm.weight": "model.layers.{}.post_attention_layernorm.weight",
    "blk.{}.attn_q.weight": "model.layers.{}.self_attn.q_proj.weight",
    "blk.{}.attn_k.weight": "model.layers.{}.self_attn.k_proj.weight",
    "blk.{}.attn_v.weight": "model.layers.{}.self_attn.v_proj.weight",
    "blk.{}.attn_output.weight": "model.layers.{}.self_attn.o_proj.weight",
    "blk.{}.ffn_gate.weight": "model.layers.{}.mlp.gate_proj.weight",
    "blk.{}.ffn_up.weight": "model.layers.{}.mlp.up_proj.weight",
    "blk.{}.ffn_down.weight": "model.layers.{}.mlp.down_proj.weight",
}

# How llama.cpp's ``tokenizer.ggml.pre`` splits text before byte-level BPE, as tokenizers pre-tokenizers.
# smollm: single digits, then GPT-2's split (as SmolLM2's own tokenizer.json).
_PRE_TOKENIZERS = {
    "default": [{"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}],
    "gpt-2": [{"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}],
    "smollm": [{"type": "Digits", "individual_digits": True},
               {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}],
}
_CONTROL, _USER_DEFINED = 3, 4  # llama.cpp token types


# ---- GGUF ------------------------------------------------------------------------------------------------
def gguf_reader(path: Path):
    """A ``gguf.GGUFReader`` of ``path`` (its header and tensors, read lazily); a one-line error when the gguf
    package is missing or the file is not a GGUF."""
    try:
        import gguf
    except ImportError:
        raise TinyLMError("reading GGUF needs the gguf package; pip install -e '.[pretrained]'") from None
    try:
        return gguf.GGUFReader(str(path))
    except Exception as err:  # noqa: BLE001 — any parse failure means the file is not a GGUF
        raise TinyLMError(f"{path} is not a readable GGUF file ({str(err)[:200]}); give a .gguf model file") \
            from None


def _field(reader, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def gguf_config(reader) -> ModelConfig:
    """The LLaMA shape a GGUF's metadata describes (only the llama architecture is supported)."""
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise TinyLMError(f"GGUF architecture {arch!r} is not supported; tinylm converts LLaMA-architecture models")
    if _field(reader, "llama.rope.scaling.type", "none") not in ("none", "linear") or \
            any(t.name == "rope_freqs.weight" for t in reader.tensors):
        raise TinyLMError("this GGUF uses RoPE scaling, which tinylm does not support; use a model without it")
    heads = int(_field(reader, "llama.attention.head_count"))
    hidden = int(_field(reader, "llama.embedding_length"))
    tokens = _field(reader, "tokenizer.ggml.tokens")
    return ModelConfig(
        vocab_size=int(_field(reader, "llama.vocab_size", len(tokens) if tokens else 0)),
        hidden_size=hidden,
        num_layers=int(_field(reader, "llama.block_count")),
        num_heads=heads,
        num_kv_heads=int(_field(reader, "llama.attention.head_count_kv", heads)),
        head_dim=int(_field(reader, "llama.attention.key_length", _field(reader, "llama.rope.dimension_count",
                                                                          hidden // heads))),
        intermediate_size=int(_field(reader, "llama.feed_forward_length")),
        rope_theta=float(_field(reader, "llama.rope.freq_base", 10000.0)),
        norm_eps=float(_field(reader, "llama.attention.layer_norm_rms_epsilon", 1e-5)),
        max_seq_len=int(_field(reader, "llama.context_length", 2048)),
        tie_embeddings=not any(t.name == "output.weight" for t in reader.tensors),
    )


def unpermute_qk(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Undo llama.cpp's q/k row order: within each head it stores the even rotary rows, then the odd ones;
    HF's rotate-half RoPE wants the first half, then the second half (rows (h, 2, d/2) -> (h, d/2, 2))."""
    rows = weight.shape[0]
    return weight.reshape(heads, rows // heads // 2, 2, -1).transpose(1, 2).reshape(weight.shape)


def gguf_state_dict(reader, config: ModelConfig) -> dict[str, torch.Tensor]:
    """Every tensor dequantized to fp32 under its HF name, q/k rows in HF order."""
    from gguf.quants import dequantize

    patterns = [(re.compile("^" + re.escape(g).replace(r"\{\}", r"(\d+)") + "$"), h) for g, h in GGUF_NAMES.items()]
    state = {}
    for tensor in reader.tensors:
        for pattern, hf_name in patterns:
            match = pattern.match(tensor.name)
            if match:
                break
        else:
            raise TinyLMError(f"GGUF tensor {tensor.name!r} has no LLaMA counterpart; this is not a plain LLaMA model")
        shape = tuple(int(n) for n in reversed(tensor.shape))  # ggml lists the fastest dimension first
        weight = torch.from_numpy(np.array(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
                                  .reshape(shape))  # np.array copies: the reader's memmap is read-only
        if ".attn_q." in tensor.name:
            weight = unpermute_qk(weight, config.num_heads)
        elif ".attn_k." in tensor.name:
            weight = unpermute_qk(weight, config.num_kv_heads)
        state[hf_name.format(*match.groups())] = weight
    return state


def gguf_tokenizer_files(reader, directory: Path) -> None:
    """Write tokenizer.json + tokenizer_config.json for a GGUF's byte-level BPE vocabulary into ``directory``."""
    kind = _field(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise TinyLMError(f"GGUF tokenizer {kind!r} is not supported (only byte-level BPE, 'gpt2'); convert the "
                          "model's Hugging Face folder instead")
    pre = _field(reader, "tokenizer.ggml.pre", "default")
    if pre not in _PRE_TOKENIZERS:
        raise TinyLMError(f"GGUF pre-tokenizer {pre!r} is not supported (known: {', '.join(_PRE_TOKENIZERS)}); "
                          "convert the model's Hugging Face folder instead")
    tokens = list(_field(reader, "tokenizer.ggml.tokens"))
    types = list(_field(reader, "tokenizer.ggml.token_type", [1] * len(tokens)))
    merges = [m.split(" ", 1) for m in _field(reader, "tokenizer.ggml.merges", [])]
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
              "special": token_type == _CONTROL} for i, (t, token_type) in enumerate(zip(tokens, types))
             if token_type in (_CONTROL, _USER_DEFINED)]
    spec = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": _PRE_TOKENIZERS[pre]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {t: i for i, t in enumerate(tokens)}, "merges": merges},
    }
    (directory / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False) + "\n")
    config = {"add_bos_token": bool(_field(reader, "tokenizer.ggml.add_bos_token", False))}
    for name, key in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"),
                      ("unk_token", "unknown_token_id"), ("pad_token", "padding_token_id")):
        token_id = _field(reader, f"tokenizer.ggml.{key}")
        if token_id is not None:
            config[name] = tokens[int(token_id)]
    template = _field(reader, "tokenizer.chat_template")
    if template:
        config["chat_template"] = template
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def convert_gguf(path: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False,
                 provenance: dict[str, Any] | None = None) -> Path:
    """Dequantize a LLaMA GGUF into a model dir with a Hugging Face tokenizer; returns the dir."""
    import tempfile

    path = Path(path)
    check_output_dir(out, overwrite, inputs=[path])
    reader = gguf_reader(path)
    config = gguf_config(reader)
    state = gguf_state_dict(reader, config)
    with tempfile.TemporaryDirectory() as tmp:
        gguf_tokenizer_files(reader, Path(tmp))
        tokenizer = load_tokenizer(Path(tmp) / "tokenizer.json")
        provenance = {"recipe": "convert", "source": str(path), "source_format": "gguf",
                      "source_sha256": sha256_file(path),
                      "source_quantization": sorted({t.tensor_type.name for t in reader.tensors}),
                      **(provenance or {})}
        return write_model_dir(out, config, state, tokenizer, provenance, overwrite, inputs=[path])


# ---- Hugging Face folders ----------------------------------------------------------------------------------
def convert_hf(folder: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Re-write any LLaMA-architecture Hugging Face folder as a tinylm model dir (fp32 safetensors, provenance)."""
    folder = Path(folder)
    check_output_dir(out, overwrite, inputs=[folder])
    config = load_config(folder)
    check_tokenizer_files(folder)  # a swapped tokenizer is refused, never copied with a fresh hash
    state = {name: tensor.float() for name, tensor in load_state_dict(folder).items()
             if not name.endswith("rotary_emb.inv_freq")}
    check_finite(state, str(folder))
    tokenizer = load_tokenizer(folder)
    weights = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin"))
    digest = hashlib.sha256("".join(sha256_file(p) for p in weights).encode()).hexdigest()
    provenance = {"recipe": "convert", "source": str(folder.resolve()), "source_format": "hf",
                  "source_sha256": digest}
    return write_model_dir(out, config, state, tokenizer, provenance, overwrite, inputs=[folder])
