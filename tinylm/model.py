"""The tinylm decoder: a LLaMA-style transformer in one file.

Module names match Hugging Face's ``LlamaForCausalLM`` (``model.layers.N.self_attn.q_proj`` ...), and RoPE uses
HF's rotate-half convention, so a state dict is a valid ``model.safetensors`` as it stands.

Structured masks (``Masks``) multiply at fixed points of the forward pass, the way Sheared-LLaMA does it, so
a masked big model computes exactly what the sliced small model computes:

* ``hidden`` (d,)      — the embedding output and every residual branch output; RMSNorm averages over the
                         kept channels only.
* ``heads``  (L, H)    — each query head's attention output before ``o_proj``.
* ``ffn``    (L, F)    — each FFN neuron, ``act(gate) * up``, before ``down_proj``.
* ``layers`` (L,)      — the whole residual contribution of a layer (attention and MLP).

``skip_layers`` drops layers outright (the layer-skip study). ``pad`` describes a left-padded batch (prompts of
different lengths decoded together): each row's positions start at its first real token and no query sees a pad.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tinylm.errors import TinyLMError

ATTENTION_BACKENDS = ("sdpa", "eager", "xformers")


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


# The paper's models (PAPER.md §4) and small shapes for tests and smoke runs. The released PanGu-π-1B Pro
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


@dataclass
class Masks:
    """Structured multiplicative masks; any field may be None. Values are usually 0/1 but may be soft."""

    hidden: Tensor | None = None  # (hidden_size,)
    heads: Tensor | None = None  # (num_layers, num_heads)
    ffn: Tensor | None = None  # (num_layers, intermediate_size)
    layers: Tensor | None = None  # (num_layers,)


@dataclass
class KVCache:
    """Pre-allocated keys/values for incremental decoding; ``length`` tokens are filled."""

    keys: list[Tensor]
    values: list[Tensor]
    length: int = 0

    @classmethod
    def empty(cls, config: ModelConfig, batch_size: int, max_len: int, device, dtype) -> "KVCache":
        shape = (batch_size, config.num_kv_heads, max_len, config.head_dim)
        return cls(
            keys=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_layers)],
            values=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_layers)],
        )


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor, hidden_mask: Tensor | None = None) -> Tensor:
        x32 = x.float()
        if hidden_mask is None:
            variance = x32.pow(2).mean(-1, keepdim=True)
        else:  # average over the kept channels only, so masked ≡ sliced
            kept = (hidden_mask != 0).sum().clamp(min=1)
            variance = x32.pow(2).sum(-1, keepdim=True) / kept
        return self.weight * (x32 * torch.rsqrt(variance + self.eps)).to(x.dtype)


class RotaryEmbedding(nn.Module):
    """HF rotate-half RoPE: q·cos + rotate_half(q)·sin with frequencies repeated over both halves."""

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """cos and sin for positions of any shape: (t,), or (b, 1, t) for one row per sequence."""
        freqs = positions.float()[..., None] * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    return x * cos + rotate_half(x) * sin


class Attention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d, hd = config.hidden_size, config.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, hd
        self.q_proj = nn.Linear(d, config.num_heads * hd, bias=False)
        self.k_proj = nn.Linear(d, config.num_kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(d, config.num_kv_heads * hd, bias=False)
        self.o_proj = nn.Linear(config.num_heads * hd, d, bias=False)
        self.backend = "sdpa"

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        head_mask: Tensor | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
        attn_mask: Tensor | None = None,
    ) -> Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        past = 0
        if cache is not None:
            past = cache.length
            cache.keys[layer][:b, :, past : past + t] = k
            cache.values[layer][:b, :, past : past + t] = v
            k, v = cache.keys[layer][:b, :, : past + t], cache.values[layer][:b, :, : past + t]
        y = attend(q, k, v, past, self.backend, attn_mask)  # (b, h, t, hd)
        if head_mask is not None:
            y = y * head_mask.view(1, -1, 1, 1).to(y.dtype)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, -1))


def attend(q: Tensor, k: Tensor, v: Tensor, past: int, backend: str, mask: Tensor | None = None) -> Tensor:
    """Causal attention of t new queries over past + t keys. Shapes (b, heads, len, head_dim).

    ``mask`` (b, 1, t, past + t), True where a query may see a key, replaces the causal mask (a padded batch)."""
    t, groups = q.shape[2], q.shape[1] // k.shape[1]
    if backend == "sdpa":
        if mask is not None:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=groups > 1)
        if past == 0:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=groups > 1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=_causal_mask(t, past, q.device), enable_gqa=groups > 1)
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    if backend == "eager":
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
        scores = scores.masked_fill(~(mask if mask is not None else _causal_mask(t, past, q.device)), float("-inf"))
        return torch.softmax(scores.float(), dim=-1).to(q.dtype) @ v
    if backend == "xformers":
        if mask is not None:
            raise TinyLMError("attention backend 'xformers' does not take padded batches; use attention='sdpa' "
                              "for batched generation of prompts of different lengths")
        return _xformers_attention(q, k, v, past)
    raise TinyLMError(f"unknown attention backend {backend!r}; choose one of {', '.join(ATTENTION_BACKENDS)}")


def _causal_mask(t: int, past: int, device) -> Tensor:
    """Boolean (t, past + t) mask, True where query i may attend key j."""
    return torch.ones(t, past + t, dtype=torch.bool, device=device).tril(diagonal=past)


def _padded_causal_mask(t: int, past: int, pad: Tensor) -> Tensor:
    """Boolean (b, 1, t, past + t) mask for a batch left-padded by ``pad`` (b,) tokens: causal, and no real query
    sees a pad key. A pad query sees itself only, so its row stays finite (an all-masked row would be NaN, and a
    NaN value times a zero weight still poisons later layers)."""
    queries = torch.arange(past, past + t, device=pad.device)[:, None]
    keys = torch.arange(past + t, device=pad.device)
    first = torch.minimum(pad[:, None, None], queries)  # (b, t, 1): the first key each query may see
    return ((keys >= first) & (keys <= queries))[:, None]


def _xformers_attention(q: Tensor, k: Tensor, v: Tensor, past: int) -> Tensor:
    if not q.is_cuda:
        raise TinyLMError("attention backend 'xformers' needs a CUDA device; use attention='sdpa' on CPU")
    try:
        from xformers.ops import LowerTriangularFromBottomRightMask, memory_efficient_attention
    except ImportError as err:
        raise TinyLMError("attention backend 'xformers' is not installed; pip install 'tinylm[xformers]'") from err
    bias = LowerTriangularFromBottomRightMask()  # causal, aligned to the last key, so it also covers the KV cache
    y = memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_bias=bias)
    return y.transpose(1, 2)


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d, f = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(d, f, bias=False)
        self.up_proj = nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)

    def forward(self, x: Tensor, ffn_mask: Tensor | None = None) -> Tensor:
        h = F.silu(self.gate_proj(x)) * self.up_proj(x)
        if ffn_mask is not None:
            h = h * ffn_mask.to(h.dtype)
        return self.down_proj(h)


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, masks: Masks, index: int, cache: KVCache | None,
                attn_mask: Tensor | None = None) -> Tensor:
        hidden = masks.hidden
        head_mask = masks.heads[index] if masks.heads is not None else None
        ffn_mask = masks.ffn[index] if masks.ffn is not None else None
        attn = self.self_attn(self.input_layernorm(x, hidden), cos, sin, head_mask, cache, index, attn_mask)
        attn = _scale(attn, hidden, masks.layers, index)
        x = x + attn
        mlp = _scale(self.mlp(self.post_attention_layernorm(x, hidden), ffn_mask), hidden, masks.layers, index)
        return x + mlp


def _scale(branch: Tensor, hidden: Tensor | None, layers: Tensor | None, index: int) -> Tensor:
    if hidden is not None:
        branch = branch * hidden.to(branch.dtype)
    if layers is not None:
        branch = branch * layers[index].to(branch.dtype)
    return branch


class DecoderBody(nn.Module):
    """HF's ``LlamaModel``: embeddings, layers and the final norm (named ``model`` inside the LM)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.norm_eps)


class Transformer(nn.Module):
    """A LLaMA causal LM. ``forward`` returns logits (b, t, vocab)."""

    def __init__(self, config: ModelConfig, attention: str = "sdpa") -> None:
        super().__init__()
        if config.vocab_size is None:
            raise TinyLMError("model config: vocab_size is unset; give it or let the tokenizer set it")
        self.config = config
        self.model = DecoderBody(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.rope = RotaryEmbedding(config.head_dim, config.rope_theta)
        self.set_attention(attention)
        self.reset_parameters()

    def set_attention(self, backend: str) -> None:
        if backend not in ATTENTION_BACKENDS:
            raise TinyLMError(f"unknown attention backend {backend!r}; choose one of {', '.join(ATTENTION_BACKENDS)}")
        for layer in self.model.layers:
            layer.self_attn.backend = backend

    def reset_parameters(self, seed: int | None = None) -> None:
        """LLaMA init: normal(0, initializer_range) for weights, ones for norms."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        std = self.config.initializer_range
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, (nn.Linear, nn.Embedding)) and module.weight.device.type != "meta":
                    w = torch.empty(module.weight.shape).normal_(0.0, std, generator=gen)
                    module.weight.copy_(w)
                elif isinstance(module, RMSNorm):
                    module.weight.fill_(1.0)

    def forward(
        self,
        input_ids: Tensor,
        masks: Masks | None = None,
        skip_layers: Iterable[int] = (),
        cache: KVCache | None = None,
        return_hidden: bool = False,
        pad: Tensor | None = None,
    ) -> Tensor:
        """``pad`` (b,): left pad tokens per row of a left-padded batch, the same for every call on one cache."""
        masks = masks or Masks()
        t = input_ids.shape[1]
        past = cache.length if cache is not None else 0
        if past + t > self.config.max_seq_len:
            raise TinyLMError(
                f"sequence of {past + t} tokens exceeds max_seq_len={self.config.max_seq_len}; shorten the input"
            )
        x = self.model.embed_tokens(input_ids)
        if masks.hidden is not None:
            x = x * masks.hidden.to(x.dtype)
        positions = torch.arange(past, past + t, device=input_ids.device)
        attn_mask = None
        if pad is not None:  # pads are never attended; positions count from each row's first real token as the
            # prompt alone counts them (RoPE scores depend on distances only, so this is for rounding, not meaning)
            positions = (positions - pad[:, None, None]).clamp(min=0)  # (b, 1, t): cos/sin broadcast over heads
            attn_mask = _padded_causal_mask(t, past, pad)
        cos, sin = self.rope(positions, x.dtype)
        skip = set(skip_layers)
        for index, layer in enumerate(self.model.layers):
            if index not in skip:
                x = layer(x, cos, sin, masks, index, cache, attn_mask)
        if cache is not None:
            cache.length += t
        x = self.model.norm(x, masks.hidden)
        return x if return_hidden else self.lm_head(x)

    def num_params(self, embeddings: bool = True) -> int:
        return self.config.num_params(embeddings)


def cross_entropy(logits: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
    """Next-token loss in fp32; targets equal to -100 are ignored."""
    loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100, reduction=reduction)
    return loss if reduction != "none" else loss.view(targets.shape)


class _LinearCrossEntropy(torch.autograd.Function):
    """Output head + next-token loss in row chunks, gradients computed in the forward pass.

    The full (tokens × vocab) logits never exist at once and the softmax is read once, which saves memory
    traffic — the head is a large share of a tiny model's step. Same value and gradients as
    ``cross_entropy(hidden @ weight.T, targets)``.
    """

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, targets: Tensor, chunk: int) -> Tensor:
        valid = targets != -100
        count = valid.sum().clamp(min=1)
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        grad_hidden = torch.empty_like(hidden) if need_grad else None
        grad_weight = torch.zeros_like(weight) if need_grad else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk):
            h, t, keep = hidden[start : start + chunk], targets[start : start + chunk], valid[start : start + chunk]
            logits = (h @ weight.t()).float()
            lse = torch.logsumexp(logits, dim=-1)
            safe = t.clamp(min=0)
            total += ((lse - logits.gather(1, safe[:, None]).squeeze(1)) * keep).sum()
            if need_grad:  # d(mean loss)/d(logits) = (softmax − onehot) / count, in place over the logits
                probs = logits.sub_(lse[:, None]).exp_()
                probs[torch.arange(len(t), device=t.device), safe] -= 1.0
                grad = probs.mul_((keep / count)[:, None]).to(h.dtype)
                torch.matmul(grad, weight, out=grad_hidden[start : start + chunk])
                grad_weight.addmm_(grad.t(), h)
        ctx.save_for_backward(grad_hidden, grad_weight)
        return total / count

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_output, grad_weight * grad_output, None, None


def linear_cross_entropy(hidden: Tensor, weight: Tensor, targets: Tensor, chunk: int = 1024) -> Tensor:
    """Mean next-token loss of ``hidden @ weight.T`` against ``targets`` (-100 ignored), fused and chunked."""
    return _LinearCrossEntropy.apply(hidden.flatten(0, -2), weight, targets.flatten(), chunk)


__all__ = ["ModelConfig", "PRESETS", "Masks", "KVCache", "Transformer", "cross_entropy", "linear_cross_entropy",
           "ATTENTION_BACKENDS"]
