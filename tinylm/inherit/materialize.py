"""Fold-and-slice: turn a big model plus a ``Plan`` into the small dense model it stands for.

Soft mask values are folded into the kept weights where the masks multiply (hidden: embedding columns and the
o/down rows that write the residual stream; heads: o columns; FFN neurons: down columns; layers: o/down rows),
then rows and columns are sliced and the kept layers renumbered. With tied embeddings the hidden scale cannot
go into the shared matrix twice, so the final norm divides it back out before the head.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from tinylm.artifacts.model_dir import write_model_dir
from tinylm.inherit.plan import Plan, kv_groups
from tinylm.model import ModelConfig, Transformer
from tinylm.tokenizer import Tokenizer
from tinylm.vocab.remap import select_vocab_rows


def materialize_state(state: dict[str, Tensor], config: ModelConfig, plan: Plan) -> tuple[ModelConfig,
                                                                                          dict[str, Tensor]]:
    """The small model's config and state dict (HF names) for ``plan`` applied to a source state dict."""
    small = plan.config(config)
    scales = plan.scales
    hd, group = config.head_dim, config.num_heads // config.num_kv_heads
    hidden = torch.tensor(plan.hidden)

    def scale(values: Tensor | None, index) -> Tensor | float:
        if values is None:
            return 1.0
        picked = values.detach().float().cpu()[index]
        return picked.item() if picked.ndim == 0 else picked

    z_hidden = scale(scales.hidden if scales else None, hidden)
    out: dict[str, Tensor] = {}
    embed = state["model.embed_tokens.weight"]
    out["model.embed_tokens.weight"] = _fold(embed[:, hidden], cols=z_hidden)
    for new, (layer, heads, ffn) in enumerate(zip(plan.layers, plan.heads, plan.ffn)):
        src, dst = f"model.layers.{layer}.", f"model.layers.{new}."
        q_rows, kv_rows = _rows(heads, hd), _rows(kv_groups(heads, group), hd)
        neurons = torch.tensor(ffn)
        z_layer = scale(scales.layers if scales else None, layer)
        z_out = z_hidden * z_layer  # what multiplies a branch's output before it joins the residual stream
        z_heads = scale(scales.heads if scales else None, (layer, torch.tensor(heads)))
        z_heads = z_heads.repeat_interleave(hd) if isinstance(z_heads, Tensor) else z_heads
        z_ffn = scale(scales.ffn if scales else None, (layer, neurons))
        get = lambda name: state[src + name]  # noqa: E731
        out[dst + "input_layernorm.weight"] = get("input_layernorm.weight")[hidden]
        out[dst + "post_attention_layernorm.weight"] = get("post_attention_layernorm.weight")[hidden]
        out[dst + "self_attn.q_proj.weight"] = get("self_attn.q_proj.weight")[q_rows][:, hidden]
        out[dst + "self_attn.k_proj.weight"] = get("self_attn.k_proj.weight")[kv_rows][:, hidden]
        out[dst + "self_attn.v_proj.weight"] = get("self_attn.v_proj.weight")[kv_rows][:, hidden]
        out[dst + "self_attn.o_proj.weight"] = _fold(get("self_attn.o_proj.weight")[hidden][:, q_rows], z_out, z_heads)
        out[dst + "mlp.gate_proj.weight"] = get("mlp.gate_proj.weight")[neurons][:, hidden]
        out[dst + "mlp.up_proj.weight"] = get("mlp.up_proj.weight")[neurons][:, hidden]
        out[dst + "mlp.down_proj.weight"] = _fold(get("mlp.down_proj.weight")[hidden][:, neurons], z_out, z_ffn)
    norm = state["model.norm.weight"][hidden]
    if config.tie_embeddings:
        out["model.norm.weight"] = _fold(norm, rows=1.0 / z_hidden if isinstance(z_hidden, Tensor) else 1.0)
    else:
        out["model.norm.weight"] = norm
        out["lm_head.weight"] = state["lm_head.weight"][:, hidden]
    if plan.keep_ids is not None:
        out = select_vocab_rows(out, plan.keep_ids)
    if config.tie_embeddings:
        out["lm_head.weight"] = out["model.embed_tokens.weight"]
    return small, {name: tensor.contiguous() for name, tensor in out.items()}


def materialize(model: Transformer, plan: Plan) -> Transformer:
    """The small dense ``Transformer`` that computes what ``model(..., masks=plan.masks(config))`` computes."""
    config, state = materialize_state(model.state_dict(), model.config, plan)
    small = Transformer(config, attention=model.model.layers[0].self_attn.backend)
    small.load_state_dict(state)
    return small.to(next(model.parameters()).device).eval()


def save_inherited(
    out: str | os.PathLike,
    state: dict[str, Tensor],
    config: ModelConfig,
    plan: Plan,
    tokenizer: Tokenizer | None,
    provenance: dict[str, Any],
    overwrite: bool = False,
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Materialize and write the small model dir atomically; tinylm.json records the plan and ``provenance``;
    ``extra(folder)`` adds files inside the same atomic write (``write_model_dir``)."""
    small, small_state = materialize_state(state, config, plan)
    record = {**provenance, "plan": plan.to_json(), "source_shape": {
        "hidden_size": config.hidden_size, "num_layers": config.num_layers, "num_heads": config.num_heads,
        "num_kv_heads": config.num_kv_heads, "intermediate_size": config.intermediate_size,
        "vocab_size": config.vocab_size}}
    return write_model_dir(out, small, small_state, tokenizer, record, overwrite=overwrite, extra=extra)


def _rows(heads: list[int], head_dim: int) -> Tensor:
    """Weight rows of whole heads (each head owns ``head_dim`` consecutive rows)."""
    return torch.tensor([h * head_dim + i for h in heads for i in range(head_dim)], dtype=torch.long)


def _fold(weight: Tensor, rows: Tensor | float = 1.0, cols: Tensor | float = 1.0) -> Tensor:
    """Multiply rows and/or columns of ``weight`` by scales (a 1-D weight takes ``rows`` only)."""
    if isinstance(rows, Tensor):
        weight = weight * (rows.to(weight.dtype)[:, None] if weight.ndim == 2 else rows.to(weight.dtype))
    elif rows != 1.0:
        weight = weight * rows
    if isinstance(cols, Tensor):
        weight = weight * cols.to(weight.dtype)[None, :]
    elif cols != 1.0:
        weight = weight * cols
    return weight
