"""Stage 2, the target shape: a preset, a shape file, or a parameter budget solved by the paper's depth rule
(deeper and narrower: about 20 layers at 1B, fewer below)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from tinylm.errors import TinyLMError
from tinylm.inherit.plan import SHAPE_FIELDS, check_shape_fields, resolve_target
from tinylm.model import PRESET_ARGS, PRESETS, ModelConfig
from tinylm.model.shapes import SourceShapeSpace, expansion_rate, kv_heads_for

PAPER_DEPTH, PAPER_BUDGET = 20, 1e9  # about 20 layers is the paper's choice at 1B [P]
DEPTH_EXPONENT = 0.2  # depth = 20 × (budget / 1B)^0.2: 8 layers at 10M, 13 at 100M


def paper_depth(budget: float) -> int:
    """Layers for a parameter budget: 20 at 1B (the paper's deeper-and-narrower choice), fewer below."""
    return max(2, round(PAPER_DEPTH * (budget / PAPER_BUDGET) ** DEPTH_EXPONENT))


def parse_budget(text: str) -> int | None:
    """``10M``, ``1.5B``, ``500k``, ``10e6`` or ``10000000`` as a parameter count; None if it is no number."""
    text = str(text).strip().replace("_", "").replace(",", "")
    scale = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9}.get(text[-1:].lower(), 1.0)
    number = text[:-1] if scale != 1.0 else text
    try:
        value = float(number) * scale
    except ValueError:
        return None
    return int(value) if math.isfinite(value) and value > 0 else None


def shape_for_budget(budget: int, source: ModelConfig, vocab_size: int) -> ModelConfig:
    """The paper's rule at any budget: depth from ``paper_depth``, then the width (whole heads of the source's
    size and grouping, FFN at the source's expansion rate) whose total parameter count lands closest to the budget;
    within half the budget, or an error."""
    depth, rate = min(paper_depth(budget), source.num_layers), expansion_rate(source)
    space = SourceShapeSpace(budget=budget, tolerance=0.5, embeddings=True, vocab_size=vocab_size,
                             depth=(depth, depth), width=(source.head_dim, source.num_heads * source.head_dim),
                             expansion=(rate, rate), head_dim=source.head_dim, max_seq_len=source.max_seq_len,
                             source=source)
    best = space.closest(depth, rate)
    if not space.within(best):
        smallest = min(space.params(shape) for shape in space.at_every_width(depth, rate))
        raise TinyLMError(f"no shape of the source's heads lands near a budget of {budget:,} parameters with a "
                          f"{vocab_size:,}-piece vocabulary (the smallest {depth}-layer shape has {smallest:,}); "
                          "give a larger budget, a lower --coverage or a smaller --vocab_size")
    return best


def read_target(target: str, source: ModelConfig, vocab_size: int) -> tuple[ModelConfig, str]:
    """The target shape (checked against the compact source) and how it was chosen."""
    text = str(target).strip()
    budget = parse_budget(text)
    if budget is not None:
        return shape_for_budget(budget, source, vocab_size), f"budget {budget:,}: {paper_depth(budget)} layers " \
            f"by depth = {PAPER_DEPTH} × (budget / 1B)^{DEPTH_EXPONENT}, width closest to the budget"
    if text in PRESETS:
        # KV heads only where the preset names them: otherwise they follow the source's grouping, below
        fields = {name: getattr(PRESETS[text], name) for name in SHAPE_FIELDS
                  if name != "num_kv_heads" or name in PRESET_ARGS[text]}
        how = f"preset {text}"
    elif text.startswith("{") or Path(text).suffix in (".yaml", ".yml", ".json"):
        if not text.startswith("{") and not Path(text).is_file():
            raise TinyLMError(f"--target shape file {text} does not exist; give a preset, a shape file or a "
                              "parameter budget such as 10M")
        try:
            fields = yaml.safe_load(text if text.startswith("{") else Path(text).read_text())
        except yaml.YAMLError as err:
            raise TinyLMError(f"--target {text} is not valid YAML ({str(err).splitlines()[0]})") from None
        if not isinstance(fields, dict):
            raise TinyLMError(f"--target {text} holds no mapping of shape fields ({', '.join(SHAPE_FIELDS)})")
        how = f"shape {text}"
    else:
        raise TinyLMError(f"--target {text!r} is neither a parameter budget (e.g. 10M), a preset "
                          f"({', '.join(sorted(PRESETS))}) nor a shape file (.yaml/.json)")
    check_shape_fields(fields)
    shape = dict(fields)
    if "num_heads" in shape and "num_kv_heads" not in shape:
        kv = kv_heads_for(int(shape["num_heads"]), source)
        if kv is not None:
            shape["num_kv_heads"] = kv
    return resolve_target(shape, source), how


def describe(config: ModelConfig) -> str:
    return (f"{config.num_layers} layers × {config.hidden_size} wide, {config.num_heads} heads "
            f"({config.num_kv_heads} KV), FFN {config.intermediate_size}, vocab {config.vocab_size:,}: "
            f"{config.num_params() / 1e6:.2f}M parameters, {100 * config.embedding_share():.1f}% in embedding + head")


def write_shape(tmp: Path, target: str, source: ModelConfig) -> dict[str, Any]:
    shape, how = read_target(target, source, source.vocab_size)
    result = {"config": asdict(shape), "how": how, "params": shape.num_params(),
              "body_params": shape.num_params(embeddings=False), "embedding_share": shape.embedding_share(),
              "source_params": source.num_params(), "source_embedding_share": source.embedding_share()}
    (tmp / "shape.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
