"""The shape of a LLaMA-style decoder, its Hugging Face config mapping, its parameter and FLOP counts (owned by
the config, as in torchtitan), and the named presets: the paper's models and tiny ones for tests and smoke runs."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from tinylm.errors import TinyLMError


@dataclass
class ModelConfig:
    """Shape of a LLaMA-style decoder. ``vocab_size=None`` means "take it from the tokenizer"."""

    vocab_size: int | None = None
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int | None = None  # None = num_heads (multi-head attention)
    head_dim: int | None = None  # None = hidden_size / num_heads; explicit when width pruning keeps head size
    intermediate_size: int | None = None  # None = 8/3 * hidden_size rounded up to `multiple_of`
    multiple_of: int = 256
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    max_seq_len: int = 2048
    tie_embeddings: bool = False
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        if self.num_kv_heads is None:
            self.num_kv_heads = self.num_heads
        if self.head_dim is None and self.num_heads > 0 and self.hidden_size % self.num_heads == 0:
            self.head_dim = self.hidden_size // self.num_heads
        if self.intermediate_size is None:
            self.intermediate_size = _round_up(int(8 * self.hidden_size / 3), self.multiple_of)
        for name in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size", "max_seq_len"):
            if getattr(self, name) <= 0:
                raise TinyLMError(f"model config: {name} must be positive, got {getattr(self, name)}")
        if self.vocab_size is not None and self.vocab_size <= 0:
            raise TinyLMError(f"model config: vocab_size must be positive, got {self.vocab_size}")
        if self.head_dim is None:
            raise TinyLMError(
                f"model config: num_heads={self.num_heads} does not divide hidden_size={self.hidden_size}; "
                f"pick a hidden_size that is a multiple of num_heads (or set head_dim explicitly)"
            )
        if self.num_heads % self.num_kv_heads:
            raise TinyLMError(
                f"model config: num_kv_heads={self.num_kv_heads} does not divide num_heads={self.num_heads}; "
                f"grouped-query attention needs whole groups"
            )
        if self.head_dim % 2:
            raise TinyLMError(f"model config: head_dim={self.head_dim} must be even for RoPE")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "ModelConfig":
        if name not in PRESET_ARGS:
            raise TinyLMError(f"unknown model preset {name!r}; choose one of: {', '.join(sorted(PRESET_ARGS))}")
        # derived fields (head_dim, num_kv_heads, intermediate_size) follow the overrides unless set explicitly
        return cls(**{**PRESET_ARGS[name], **overrides})

    def with_vocab(self, vocab_size: int) -> "ModelConfig":
        return replace(self, vocab_size=vocab_size)

    # ---- parameter and FLOP accounting (owned by the config, as in torchtitan) -------------------------
    def _vocab(self) -> int:
        if self.vocab_size is None:
            raise TinyLMError("model config: vocab_size is unset; give it or let the tokenizer set it")
        return self.vocab_size

    def num_params(self, embeddings: bool = True) -> int:
        """Parameter count. ``embeddings=False`` leaves out the token embedding and the output head."""
        d, f, layers, hd = self.hidden_size, self.intermediate_size, self.num_layers, self.head_dim
        per_layer = 2 * d * self.num_heads * hd + 2 * d * self.num_kv_heads * hd + 3 * d * f + 2 * d  # q,o k,v mlp norms
        body = layers * per_layer + d  # + final norm
        if not embeddings:
            return body
        return body + self.embedding_params()

    def embedding_params(self) -> int:
        """Token embedding plus output head (counted once when tied)."""
        return self._vocab() * self.hidden_size * (1 if self.tie_embeddings else 2)

    def embedding_share(self) -> float:
        """Fraction of all parameters spent on the embedding and the head (the paper's "tokenizer share")."""
        return self.embedding_params() / self.num_params()

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token: 6·N (matmul weights, head included, lookup excluded) + 12·L·d·T (attention)."""
        n = self.num_params(embeddings=False) + self._vocab() * self.hidden_size  # the head is a matmul
        return 6.0 * n + 12.0 * self.num_layers * self.hidden_size * seq_len

    # ---- Hugging Face LlamaConfig keys -----------------------------------------------------------------
    def to_hf(self) -> dict:
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self._vocab(),
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": self.max_seq_len,
            "rms_norm_eps": self.norm_eps,
            "rope_theta": self.rope_theta,  # transformers < 5 reads this key, 5 reads rope_parameters
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta},
            "tie_word_embeddings": self.tie_embeddings,
            "attention_bias": False,
            "mlp_bias": False,
            "initializer_range": self.initializer_range,
            "torch_dtype": "float32",
        }

    @classmethod
    def from_hf(cls, hf: dict) -> "ModelConfig":
        if hf.get("model_type", "llama") not in ("llama", "mistral"):
            raise TinyLMError(f"config.json: model_type {hf.get('model_type')!r} is not a LLaMA-style model")
        rope = hf.get("rope_parameters") or {}  # transformers 5 spells RoPE here; older configs at the top level
        if hf.get("rope_scaling") or rope.get("rope_type", "default") != "default":
            raise TinyLMError("config.json: RoPE scaling is not supported by tinylm; use a model without it")
        window, positions = hf.get("sliding_window"), hf.get("max_position_embeddings", 2048)
        if window is not None and (not isinstance(positions, int) or window < positions):
            raise TinyLMError(f"config.json: sliding_window={window} (attention over the last {window} tokens only) is "
                              "not implemented by tinylm, which attends over the whole context; use a model without "
                              "a sliding window, or set sliding_window to null if it was trained with full attention")
        for name in ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size", "vocab_size",
                     "num_key_value_heads", "max_position_embeddings", "head_dim"):
            value = hf.get(name, 1)
            if (value is not None or name != "head_dim") and (isinstance(value, bool) or not isinstance(value, int)
                                                               or value < 1):
                raise TinyLMError(f"config.json: {name}={value!r} is not a positive whole number; fix or re-save "
                                  "the model's config.json")
        hidden, heads = hf["hidden_size"], hf["num_attention_heads"]
        return cls(
            head_dim=hf.get("head_dim"),
            vocab_size=hf["vocab_size"],
            hidden_size=hidden,
            num_layers=hf["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=hf.get("num_key_value_heads", heads),
            intermediate_size=hf["intermediate_size"],
            rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
            norm_eps=float(hf.get("rms_norm_eps", 1e-5)),
            max_seq_len=hf.get("max_position_embeddings", 2048),
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            initializer_range=float(hf.get("initializer_range", 0.02)),
        )

    def to_dict(self) -> dict:
        return asdict(self)


def _round_up(x: int, multiple: int) -> int:
    return multiple * math.ceil(x / multiple)


# The paper's models (docs/paper.md §4) and small shapes for tests and smoke runs. The released PanGu-π-1B Pro
# config has 20 layers; the paper's table says 21 — the preset follows the table.
PRESET_ARGS: dict[str, dict] = {
    "pangu-pi-1b": dict(vocab_size=100883, hidden_size=2048, num_layers=12, num_heads=16),
    "pangu-pi-1b-pro": dict(vocab_size=48000, hidden_size=1792, num_layers=21, num_heads=14),
    "pangu-pi-1b-pro-released": dict(vocab_size=48000, hidden_size=1792, num_layers=20, num_heads=14),
    "pangu-pi-1.5b-pro": dict(vocab_size=48000, hidden_size=2048, num_layers=22, num_heads=16),
    "pangu-pi-7b": dict(vocab_size=100883, hidden_size=4096, num_layers=29, num_heads=32),
    # tiny shapes: vocab comes from the tokenizer
    "tiny": dict(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=688),
    "tiny-gqa": dict(hidden_size=256, num_layers=4, num_heads=8, num_kv_heads=2, intermediate_size=688),
    "small": dict(hidden_size=512, num_layers=8, num_heads=8, intermediate_size=1376),
    "debug": dict(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=160, max_seq_len=512),
}
PRESETS: dict[str, ModelConfig] = {name: ModelConfig(**args) for name, args in PRESET_ARGS.items()}
