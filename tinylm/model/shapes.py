"""Which shapes fit a parameter budget: the one solver behind ``tinylm pro``'s budget targets and the architecture
study's sampled and grid shapes (``reproduce.shapes``). Parameters are counted by the config (``num_params``).

* ``ShapeSpace`` — the budget (body only, or with embedding + head: ``embeddings``), its tolerance, and the
  ranges of depth, width (whole heads of ``head_dim``) and FFN expansion rate (``intermediate_size /
  hidden_size``). ``SourceShapeSpace`` holds only the shapes a source model can be cut to (inheritance): its KV
  grouping, at most its FFN size, its other fields.
* ``ShapeSpace.ffn_sizes`` / ``feasible_shapes`` — every (depth, width) that meets the budget, with the FFN sizes
  that do, solved rather than searched.
* ``ShapeSpace.closest`` — at a fixed depth and expansion rate, the width whose count lands closest to the budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from tinylm.errors import TinyLMError
from tinylm.model.config import ModelConfig


def kv_heads_for(num_heads: int, source: ModelConfig) -> int | None:
    """The fewest KV heads that keep whole groups no larger than the source's (inheritance keeps heads whole)."""
    group = source.num_heads // source.num_kv_heads
    for kv in range(1, source.num_kv_heads + 1):
        if num_heads % kv == 0 and num_heads // kv <= group:
            return kv
    return None


def expansion_rate(config: ModelConfig) -> float:
    return config.intermediate_size / config.hidden_size


@dataclass(frozen=True)
class ShapeSpace:
    """Where shapes may be drawn from.

    Args:
        budget: target parameter count.
        tolerance: accepted relative distance from the budget (0.05 = ±5%).
        embeddings: whether the budget counts the token embedding and the output head (needs ``vocab_size``).
        vocab_size: the vocabulary the configurations get (None: taken later from the tokenizer).
        depth: inclusive range of layer counts.
        width: inclusive range of hidden sizes; only multiples of ``head_dim`` are used.
        expansion: inclusive range of FFN expansion rates ``intermediate_size / hidden_size``.
        head_dim: channels per attention head.
        ffn_multiple: the FFN size is a multiple of this (hardware-friendly sizes).
        max_seq_len: context length of the configurations.
    """

    budget: int
    tolerance: float = 0.05
    embeddings: bool = False
    vocab_size: int | None = None
    depth: tuple[int, int] = (2, 32)
    width: tuple[int, int] = (64, 4096)
    expansion: tuple[float, float] = (1.0, 4.0)
    head_dim: int = 64
    ffn_multiple: int = 16
    max_seq_len: int = 2048

    def __post_init__(self) -> None:
        if self.budget <= 0 or not 0 < self.tolerance < 1:
            raise TinyLMError(f"shape space: budget={self.budget} must be positive and tolerance={self.tolerance} "
                              "a fraction in (0, 1)")
        if self.embeddings and self.vocab_size is None:
            raise TinyLMError("shape space: a budget with embeddings needs vocab_size; give it or set embeddings=False")
        for name in ("depth", "width", "expansion"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise TinyLMError(f"shape space: {name} range ({low}, {high}) must be positive and ordered (low, high)")
        if self.head_dim <= 0 or self.head_dim % 2 or self.ffn_multiple <= 0:
            raise TinyLMError(f"shape space: head_dim={self.head_dim} must be positive and even (RoPE), "
                              f"ffn_multiple={self.ffn_multiple} positive")
        if not self.widths():
            raise TinyLMError(f"shape space: no multiple of head_dim={self.head_dim} lies in width range {self.width}")

    def kv_heads(self, num_heads: int) -> int | None:
        """KV heads of a shape with ``num_heads`` heads (None: no such shape); multi-head attention here."""
        return num_heads

    def widths(self) -> list[int]:
        first = math.ceil(self.width[0] / self.head_dim) * self.head_dim
        return [width for width in range(first, self.width[1] + 1, self.head_dim)
                if self.kv_heads(width // self.head_dim) is not None]

    def depths(self) -> list[int]:
        return list(range(self.depth[0], self.depth[1] + 1))

    def shape_fields(self, depth: int, width: int, intermediate_size: int) -> dict[str, Any]:
        """The ``ModelConfig`` fields the space decides."""
        heads = width // self.head_dim
        return {"vocab_size": self.vocab_size, "hidden_size": width, "num_layers": depth, "num_heads": heads,
                "num_kv_heads": self.kv_heads(heads), "head_dim": self.head_dim,
                "intermediate_size": intermediate_size, "max_seq_len": self.max_seq_len}

    def config(self, depth: int, width: int, intermediate_size: int) -> ModelConfig:
        return ModelConfig(**self.shape_fields(depth, width, intermediate_size))

    def params(self, config: ModelConfig) -> int:
        """The parameters the budget counts."""
        return config.num_params(embeddings=self.embeddings)

    def within(self, config: ModelConfig) -> bool:
        return abs(self.params(config) - self.budget) <= self.tolerance * self.budget

    def capped(self, intermediate_size: int) -> int:
        """The FFN size a shape gets when ``intermediate_size`` is asked for (no ceiling here)."""
        return intermediate_size

    def ffn_sizes(self, depth: int, width: int) -> list[int]:
        """FFN sizes that put (depth, width) inside the budget with an expansion rate inside its range."""
        low = math.ceil(self.expansion[0] * width / self.ffn_multiple) * self.ffn_multiple
        high = self.capped(math.floor(self.expansion[1] * width / self.ffn_multiple) * self.ffn_multiple)
        fixed = self.params(self.config(depth, width, self.ffn_multiple)) - 3 * depth * width * self.ffn_multiple
        per_unit = 3 * depth * width  # gate, up and down gain this many parameters per FFN neuron
        # the budget window solved for the FFN size, then clipped to the expansion range
        first = math.ceil((self.budget * (1 - self.tolerance) - fixed) / per_unit / self.ffn_multiple)
        last = math.floor((self.budget * (1 + self.tolerance) - fixed) / per_unit / self.ffn_multiple)
        sizes = range(max(low, first * self.ffn_multiple), min(high, last * self.ffn_multiple) + 1, self.ffn_multiple)
        return [size for size in sizes if size > 0 and self.within(self.config(depth, width, size))]

    def at_every_width(self, depth: int, rate: float) -> list[ModelConfig]:
        """One shape per width, narrowest first, with the FFN size ``rate × width`` rounded to ``ffn_multiple``
        (at least one multiple)."""
        shapes = []
        for width in self.widths():
            ffn = max(self.ffn_multiple, round(rate * width / self.ffn_multiple) * self.ffn_multiple)
            shapes.append(self.config(depth, width, self.capped(ffn)))
        return shapes

    def closest(self, depth: int, rate: float) -> ModelConfig:
        """The shape of ``at_every_width`` whose count lands closest to the budget (the narrower one on a tie); it
        may lie outside the tolerance: callers check ``within`` and say what to change."""
        return min(self.at_every_width(depth, rate), key=lambda config: abs(self.params(config) - self.budget))


@dataclass(frozen=True, kw_only=True)
class SourceShapeSpace(ShapeSpace):
    """The shapes ``source`` can be cut to by inheritance, which keeps heads and neurons whole: each head count gets
    the fewest KV heads in the source's grouping (head counts it cannot group are left out), the FFN is at most
    the source's, and every field not set here (RoPE, norms, tied embeddings ...) is the source's own."""

    source: ModelConfig

    def kv_heads(self, num_heads: int) -> int | None:
        return kv_heads_for(num_heads, self.source)

    def config(self, depth: int, width: int, intermediate_size: int) -> ModelConfig:
        return replace(self.source, **self.shape_fields(depth, width, intermediate_size))

    def capped(self, intermediate_size: int) -> int:
        return min(intermediate_size, self.source.intermediate_size)


def feasible_shapes(space: ShapeSpace) -> dict[tuple[int, int], list[int]]:
    """Every (depth, width) that can meet the budget, with the FFN sizes that do."""
    shapes = {}
    for depth in space.depths():
        for width in space.widths():
            sizes = space.ffn_sizes(depth, width)
            if sizes:
                shapes[(depth, width)] = sizes
    return shapes
