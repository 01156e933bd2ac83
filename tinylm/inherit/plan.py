"""An inheritance plan: which source layers, hidden channels, heads and FFN neurons the small model keeps.

The plan is the one object every criterion (L1, L2, Taylor, learned masks) produces and ``materialize``
consumes. It is uniform across layers (the same number of heads and FFN neurons in every kept layer), so the
result is a standard LLaMA config. Heads are kept whole; under grouped-query attention a kept layer keeps the
same number of query heads in each of its kept KV groups, so the small model is GQA with whole groups.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from tinylm.artifacts.model_dir import load_config
from tinylm.errors import TinyLMError
from tinylm.model import PRESETS, Masks, ModelConfig

SHAPE_FIELDS = ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size")


@dataclass
class Plan:
    """Kept indices of the source model; ``heads``/``ffn`` hold one list per kept layer (parallel to ``layers``).

    ``scales`` (source-shaped, optional) are soft mask values folded into the kept weights; ``keep_ids`` (optional)
    are the vocabulary rows kept for a compact tokenizer.
    """

    layers: list[int]
    hidden: list[int]
    heads: list[list[int]]
    ffn: list[list[int]]
    keep_ids: list[int] | None = None
    scales: Masks | None = None

    def validate(self, config: ModelConfig) -> None:
        """Raise ``TinyLMError`` unless the plan fits ``config`` and yields a uniform dense shape."""
        _check_indices("layers", self.layers, config.num_layers)
        _check_indices("hidden channels", self.hidden, config.hidden_size)
        if len(self.heads) != len(self.layers) or len(self.ffn) != len(self.layers):
            raise TinyLMError("plan: heads and ffn need one index list per kept layer")
        group = config.num_heads // config.num_kv_heads
        shapes = set()
        for layer, heads, ffn in zip(self.layers, self.heads, self.ffn):
            _check_indices(f"heads of layer {layer}", heads, config.num_heads)
            _check_indices(f"FFN neurons of layer {layer}", ffn, config.intermediate_size)
            groups = kv_groups(heads, group)
            if len(heads) % len(groups) or any(sum(h // group == g for h in heads) != len(heads) // len(groups)
                                               for g in groups):
                raise TinyLMError(
                    f"plan: layer {layer} keeps heads {heads}, an unequal number per KV group of {group}; "
                    "keep the same number of query heads in every kept KV group"
                )
            shapes.add((len(heads), len(groups), len(ffn)))
        if len(shapes) > 1:
            raise TinyLMError(f"plan: kept layers differ in shape {sorted(shapes)}; keep the same number of heads, "
                              "KV groups and FFN neurons in every layer")
        if self.keep_ids is not None:
            _check_indices("vocabulary ids", self.keep_ids, config.vocab_size, ordered=False)

    def config(self, source: ModelConfig) -> ModelConfig:
        """The small model's config: the source's settings with the kept shape (head size unchanged)."""
        self.validate(source)
        group = source.num_heads // source.num_kv_heads
        return replace(
            source,
            vocab_size=len(self.keep_ids) if self.keep_ids is not None else source.vocab_size,
            hidden_size=len(self.hidden),
            num_layers=len(self.layers),
            num_heads=len(self.heads[0]),
            num_kv_heads=len(kv_groups(self.heads[0], group)),
            head_dim=source.head_dim,
            intermediate_size=len(self.ffn[0]),
        )

    def masks(self, config: ModelConfig) -> Masks:
        """Source-shaped masks (0 where pruned, the scale or 1 where kept): the masked big model ≡ the small one."""
        hidden = torch.zeros(config.hidden_size)
        hidden[self.hidden] = 1.0
        layers = torch.zeros(config.num_layers)
        layers[self.layers] = 1.0
        heads = torch.zeros(config.num_layers, config.num_heads)
        ffn = torch.zeros(config.num_layers, config.intermediate_size)
        for layer, kept_heads, kept_ffn in zip(self.layers, self.heads, self.ffn):
            heads[layer, kept_heads] = 1.0
            ffn[layer, kept_ffn] = 1.0
        masks = Masks(hidden=hidden, heads=heads, ffn=ffn, layers=layers)
        if self.scales is not None:
            for field in fields(Masks):
                scale = getattr(self.scales, field.name)
                if scale is not None:
                    setattr(masks, field.name, getattr(masks, field.name) * scale.detach().float().cpu())
        return masks

    @classmethod
    def from_masks(cls, masks: Masks, config: ModelConfig, keep_ids: Sequence[int] | None = None) -> "Plan":
        """Keep every nonzero entry; non-binary values become ``scales`` to fold into the weights."""
        def kept(values: Tensor | None, size: int) -> list[int]:
            return list(range(size)) if values is None else torch.nonzero(values).flatten().tolist()

        layers = kept(masks.layers, config.num_layers)
        soft = any(m is not None and bool(((m != 0) & (m != 1)).any()) for m in
                   (masks.hidden, masks.heads, masks.ffn, masks.layers))
        plan = cls(
            layers=layers,
            hidden=kept(masks.hidden, config.hidden_size),
            heads=[kept(None if masks.heads is None else masks.heads[i], config.num_heads) for i in layers],
            ffn=[kept(None if masks.ffn is None else masks.ffn[i], config.intermediate_size) for i in layers],
            keep_ids=None if keep_ids is None else list(keep_ids),
            scales=masks if soft else None,
        )
        plan.validate(config)
        return plan

    def to_json(self) -> dict[str, Any]:
        """What tinylm.json records (the soft scales are recorded as present or not; the weights hold them)."""
        return {"layers": self.layers, "hidden": self.hidden, "heads": self.heads, "ffn": self.ffn,
                "keep_ids": self.keep_ids, "folded_scales": self.scales is not None}


def kv_groups(heads: Sequence[int], group: int) -> list[int]:
    """The KV groups that the given query heads use (``group`` query heads per KV head)."""
    return sorted({h // group for h in heads})


def select_heads(head_scores: Tensor, kv_scores: Tensor, num_heads: int, num_kv_heads: int) -> list[int]:
    """Keep ``num_heads`` query heads in ``num_kv_heads`` whole KV groups, by score.

    Inside each group the best ``num_heads / num_kv_heads`` heads are kept; a group's score is its own (k, v)
    score plus those heads' scores, and the best groups win.
    """
    group = head_scores.numel() // kv_scores.numel()
    per_group = num_heads // num_kv_heads
    by_group = head_scores.view(-1, group)
    best = by_group.topk(per_group, dim=1)
    group_scores = kv_scores + best.values.sum(1)
    chosen = group_scores.topk(num_kv_heads).indices.tolist()
    return sorted(g * group + i for g in chosen for i in best.indices[g].tolist())


def top_k(scores: Tensor, k: int) -> list[int]:
    """Indices of the ``k`` largest scores, in increasing index order (the small model keeps source order)."""
    return sorted(scores.topk(k).indices.tolist())


def check_shape_fields(fields: dict) -> None:
    """Refuse a mapping whose keys are not shape fields or whose values are not positive integers."""
    unknown = set(fields) - set(SHAPE_FIELDS)
    if unknown:
        raise TinyLMError(f"target fields {sorted(unknown)} are not shape fields; use {', '.join(SHAPE_FIELDS)}")
    for name, value in fields.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TinyLMError(f"target {name}={value!r} is not a positive whole number; give every shape field "
                              "as an integer, e.g. '{\"num_layers\": 2}'")


def resolve_target(target: ModelConfig | str | dict, source: ModelConfig) -> ModelConfig:
    """Turn a preset name, a model dir, a mapping of shape fields, or a config into the target shape, checked.

    Only the shape comes from ``target``; everything else (vocab, RoPE, norm eps, tying) is inherited from the
    source. A mapping may name just the fields that change, e.g. ``{"num_layers": 2}``.
    """
    if isinstance(target, str):
        if (Path(target) / "config.json").is_file():
            target = load_config(target)
        elif target.lstrip().startswith("{"):
            try:
                target = json.loads(target)
            except json.JSONDecodeError as err:
                raise TinyLMError(f"--target is not valid JSON ({err.msg} at character {err.pos}); write a mapping "
                                  "such as '{\"hidden_size\": 128, \"num_heads\": 2}'") from None
        elif target in PRESETS:
            target = PRESETS[target]
        else:
            raise TinyLMError(f"target {target!r} is neither a preset ({', '.join(sorted(PRESETS))}), a model dir, "
                              "nor a mapping of shape fields such as '{\"hidden_size\": 128, \"num_heads\": 2}'")
    if not isinstance(target, (ModelConfig, dict)):
        raise TinyLMError(f"target {target!r} is not a mapping of shape fields; give e.g. '{{\"num_layers\": 2}}'")
    if isinstance(target, ModelConfig):
        shape = {name: getattr(target, name) for name in SHAPE_FIELDS}
    else:
        check_shape_fields(target)
        shape = {name: target.get(name, getattr(source, name)) for name in SHAPE_FIELDS}
        if "num_kv_heads" not in target and "num_heads" in target:  # keep the source's query heads per KV head
            group = source.num_heads // source.num_kv_heads
            shape["num_kv_heads"] = max(1, shape["num_heads"] // group)
    if shape["num_heads"] <= 0 or shape["hidden_size"] % shape["num_heads"]:
        raise TinyLMError(f"target num_heads={shape['num_heads']} does not divide target hidden_size="
                          f"{shape['hidden_size']}; pick a hidden_size that is a multiple of num_heads")
    for name in SHAPE_FIELDS:
        if shape[name] > getattr(source, name):
            raise TinyLMError(f"target {name}={shape[name]} is larger than the source's {getattr(source, name)}; "
                              "inheritance only shrinks a model, pick a smaller target")
    if shape["hidden_size"] // shape["num_heads"] != source.head_dim:
        raise TinyLMError(
            f"target head size {shape['hidden_size']}/{shape['num_heads']} = {shape['hidden_size'] // shape['num_heads']}"
            f" differs from the source's {source.head_dim}; heads are kept whole, so use num_heads = "
            f"hidden_size / {source.head_dim}"
        )
    result = replace(source, head_dim=source.head_dim, **shape)
    group, new_group = source.num_heads // source.num_kv_heads, result.num_heads // result.num_kv_heads
    if new_group > group:
        raise TinyLMError(f"target has {new_group} query heads per KV head, the source only {group}; "
                          f"use num_kv_heads >= {-(-result.num_heads // group)}")
    return result


def _check_indices(what: str, indices: Sequence[int], size: int, ordered: bool = True) -> None:
    if len(indices) == 0:
        raise TinyLMError(f"plan keeps no {what}; keep at least one")
    if min(indices) < 0 or max(indices) >= size:
        raise TinyLMError(f"plan: {what} {list(indices)[:8]}... out of range 0..{size - 1}")
    if len(set(indices)) != len(indices) or (ordered and list(indices) != sorted(indices)):
        raise TinyLMError(f"plan: {what} must be distinct and in increasing order")
