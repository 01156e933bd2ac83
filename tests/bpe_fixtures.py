"""Helpers for tests with a byte-level BPE tokenizer (the SmolLM2 kind) and tiny GGUF files, built offline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2 as in SmolLM2


def train_bpe_dir(texts: list[str], folder: Path, vocab_size: int = 600) -> Path:
    """A byte-level BPE tokenizer.json (+ tokenizer_config.json) trained with HF tokenizers, SmolLM2's layout."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    config = {"add_bos_token": False, "bos_token": SPECIALS[1], "eos_token": SPECIALS[2],
              "unk_token": SPECIALS[0], "pad_token": SPECIALS[2]}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def llama_cpp_permute(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """llama.cpp's q/k row order (what convert_hf_to_gguf.py writes): the inverse of tinylm.artifacts.convert.unpermute_qk."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, -1).transpose(1, 2).reshape(weight.shape)


def write_tiny_gguf(path: Path, tokenizer_dir: Path, config, state: dict[str, torch.Tensor],
                    quantize: bool = True) -> Path:
    """A GGUF as llama.cpp writes a LLaMA: its names, permuted q/k, byte-level BPE metadata; Q8_0 matrices."""
    import gguf

    spec = json.loads((tokenizer_dir / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(config.num_layers)
    writer.add_context_length(config.max_seq_len)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_heads)
    writer.add_head_count_kv(config.num_kv_heads)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_layer_norm_rms_eps(config.norm_eps)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in SPECIALS else 1 for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_pad_token_id(2)
    writer.add_add_bos_token(False)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    parts = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
             "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for name, tensor in state.items():
        if name == "lm_head.weight" and config.tie_embeddings:
            continue
        if name in names:
            gguf_name = names[name]
        else:
            layer, part = name.removeprefix("model.layers.").removesuffix(".weight").split(".", 1)
            gguf_name = f"blk.{layer}.{parts[part]}.weight"
        if "q_proj" in name:
            tensor = llama_cpp_permute(tensor, config.num_heads)
        elif "k_proj" in name:
            tensor = llama_cpp_permute(tensor, config.num_kv_heads)
        array = tensor.detach().float().numpy()
        if quantize and array.ndim == 2:
            writer.add_tensor(gguf_name, gguf.quants.quantize(array, gguf.GGMLQuantizationType.Q8_0),
                              raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(gguf_name, np.ascontiguousarray(array))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def bpe_texts(corpus_dir: Path) -> list[str]:
    return [p.read_text(encoding="utf-8") for p in sorted(corpus_dir.glob("*.txt"))]


def random_model_dir(tokenizer, folder: Path, preset: str = "debug", seed: int = 0, **overrides) -> Path:
    """A seeded random model dir for ``tokenizer`` with non-trivial norm gains (they catch layout mistakes)."""
    from tinylm.artifacts.model_dir import save_model_dir
    from tinylm.model import ModelConfig, Transformer

    torch.manual_seed(seed)
    model = Transformer(ModelConfig.from_preset(preset, vocab_size=tokenizer.vocab_size, **overrides))
    for norm in (m for m in model.modules() if m.__class__.__name__ == "RMSNorm"):
        torch.nn.init.normal_(norm.weight, 1.0, 0.1)
    return save_model_dir(folder, model, tokenizer)
