"""The tinylm decoder network: a LLaMA-style transformer, read top to bottom.

Module names match Hugging Face's ``LlamaForCausalLM`` (``model.layers.N.self_attn.q_proj`` ...), and RoPE uses
HF's rotate-half convention, so a state dict is a valid ``model.safetensors`` as it stands.

Structured masks (``Masks``) multiply at fixed points of the forward pass, the way Sheared-LLaMA does it, so
a masked big model computes exactly what the sliced small model computes:

* ``hidden`` (d,)      — the embedding output and every residual branch output; RMSNorm averages over the
                         kept channels only.
* ``heads``  (L, H)    — each query head's attention output before ``o_proj``.
* ``ffn``    (L, F)    — each FFN neuron, ``act(gate) * up``, before ``down_proj``.
* ``layers`` (L,)      — the whole residual contribution of a layer (attention and MLP).

``skip_layers`` drops layers outright (the layer-skip study; ``streams`` and ``start`` let it run the layers before
a span once for every span). ``pad`` describes a left-padded batch (prompts of different lengths decoded
together): each row's positions start at its first real token and no query sees a pad.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tinylm.errors import TinyLMError
from tinylm.model.config import ModelConfig

ATTENTION_BACKENDS = ("sdpa", "eager", "xformers")


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
        streams: list[Tensor] | None = None,
        start: tuple[int, Tensor] | None = None,
    ) -> Tensor:
        """``pad`` (b,): left pad tokens per row of a left-padded batch, the same for every call on one cache.

        ``streams``: a list the pass appends the residual stream to, entering each layer it runs and at the end.
        ``start=(layer, stream)``: run from ``layer`` on, with ``stream`` (a recorded stream of these
        ``input_ids``) as its input — the layer-skip sweep pays for the layers before a span once, not per span."""
        masks = masks or Masks()
        t = input_ids.shape[1]
        past = cache.length if cache is not None else 0
        if past + t > self.config.max_seq_len:
            raise TinyLMError(
                f"sequence of {past + t} tokens exceeds max_seq_len={self.config.max_seq_len}; shorten the input"
            )
        if start is None:
            first, x = 0, self.model.embed_tokens(input_ids)
            if masks.hidden is not None:
                x = x * masks.hidden.to(x.dtype)
        else:
            first, x = start
        positions = torch.arange(past, past + t, device=input_ids.device)
        attn_mask = None
        if pad is not None:  # pads are never attended; positions count from each row's first real token as the
            # prompt alone counts them (RoPE scores depend on distances only, so this is for rounding, not meaning)
            positions = (positions - pad[:, None, None]).clamp(min=0)  # (b, 1, t): cos/sin broadcast over heads
            attn_mask = _padded_causal_mask(t, past, pad)
        cos, sin = self.rope(positions, x.dtype)
        skip = set(skip_layers)
        for index, layer in enumerate(self.model.layers):
            if index >= first and index not in skip:
                if streams is not None:
                    streams.append(x)
                x = layer(x, cos, sin, masks, index, cache, attn_mask)
        if streams is not None:
            streams.append(x)
        if cache is not None:
            cache.length += t
        x = self.model.norm(x, masks.hidden)
        return x if return_hidden else self.lm_head(x)

    def num_params(self, embeddings: bool = True) -> int:
        return self.config.num_params(embeddings)
