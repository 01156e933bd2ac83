"""The architecture study: parameter-matched shapes, rank correlation with the score, and decoding speed.

The paper fixes a parameter budget, samples (depth, width, FFN expansion rate) configurations near it, trains
each one the same way, and reports the Spearman coefficient between each factor and the score. Under a fixed
budget the factors are tied together (deeper means narrower), so each correlation is read one factor at a time,
as the paper does.

* ``ShapeSpace`` — the budget (body only, or with embedding + head: ``embeddings``), its tolerance, and the
  ranges of depth, width (multiples of ``head_dim``, so heads always divide the width) and expansion rate
  (``intermediate_size / hidden_size``).
* ``sample`` — seeded random configurations inside the budget; ``grid`` — a fixed depth × expansion grid whose
  widths are solved to meet the budget (the depth/width variants of the speed table).
* ``spearman`` — rank correlation (``scipy.stats``) with its two-sided p-value (exact permutation p for
  small samples).
* ``decode_speeds`` / ``decode_throughput`` — generated tokens/s with the KV cache under the paper's speed
  protocol (every timed run / the best one).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.stats
import torch

from tinylm.errors import TinyLMError
from tinylm.model import ModelConfig, Transformer
from tinylm.model.generate import generate


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

    def widths(self) -> list[int]:
        first = math.ceil(self.width[0] / self.head_dim) * self.head_dim
        return list(range(first, self.width[1] + 1, self.head_dim))

    def depths(self) -> list[int]:
        return list(range(self.depth[0], self.depth[1] + 1))

    def config(self, depth: int, width: int, intermediate_size: int) -> ModelConfig:
        return ModelConfig(vocab_size=self.vocab_size, hidden_size=width, num_layers=depth,
                           num_heads=width // self.head_dim, intermediate_size=intermediate_size,
                           max_seq_len=self.max_seq_len)

    def params(self, config: ModelConfig) -> int:
        """The parameters the budget counts."""
        return config.num_params(embeddings=self.embeddings)

    def within(self, config: ModelConfig) -> bool:
        return abs(self.params(config) - self.budget) <= self.tolerance * self.budget

    def ffn_sizes(self, depth: int, width: int) -> list[int]:
        """FFN sizes that put (depth, width) inside the budget with an expansion rate inside its range."""
        low = math.ceil(self.expansion[0] * width / self.ffn_multiple) * self.ffn_multiple
        high = math.floor(self.expansion[1] * width / self.ffn_multiple) * self.ffn_multiple
        fixed = self.params(self.config(depth, width, self.ffn_multiple)) - 3 * depth * width * self.ffn_multiple
        per_unit = 3 * depth * width  # gate, up and down gain this many parameters per FFN neuron
        # the budget window solved for the FFN size, then clipped to the expansion range
        first = math.ceil((self.budget * (1 - self.tolerance) - fixed) / per_unit / self.ffn_multiple)
        last = math.floor((self.budget * (1 + self.tolerance) - fixed) / per_unit / self.ffn_multiple)
        sizes = range(max(low, first * self.ffn_multiple), min(high, last * self.ffn_multiple) + 1, self.ffn_multiple)
        return [size for size in sizes if size > 0 and self.within(self.config(depth, width, size))]


def expansion_rate(config: ModelConfig) -> float:
    return config.intermediate_size / config.hidden_size


def feasible_shapes(space: ShapeSpace) -> dict[tuple[int, int], list[int]]:
    """Every (depth, width) that can meet the budget, with the FFN sizes that do."""
    shapes = {}
    for depth in space.depths():
        for width in space.widths():
            sizes = space.ffn_sizes(depth, width)
            if sizes:
                shapes[(depth, width)] = sizes
    return shapes


def sample(space: ShapeSpace, n: int, seed: int = 0) -> list[ModelConfig]:
    """``n`` distinct (depth, width) shapes drawn uniformly from those that fit the budget, each with an FFN size
    drawn uniformly from those that keep it inside the budget and the expansion range.

    Drawing the (depth, width) pair first keeps shallow-narrow shapes, which fit many FFN sizes, from
    dominating the sample.
    """
    shapes = feasible_shapes(space)
    if n > len(shapes):
        raise TinyLMError(f"only {len(shapes)} (depth, width) shapes fit a budget of {space.budget:,} ±"
                          f"{space.tolerance:.0%}; ask for fewer configurations or widen the ranges or tolerance")
    rng = random.Random(seed)
    picked = rng.sample(sorted(shapes), n)
    return [space.config(depth, width, rng.choice(shapes[(depth, width)])) for depth, width in picked]


def grid(space: ShapeSpace, depths: Sequence[int], expansions: Sequence[float]) -> list[ModelConfig]:
    """One configuration per (depth, expansion): the width (multiple of ``head_dim``) that lands closest to the
    budget, with the FFN size ``expansion × width`` rounded to ``ffn_multiple``."""
    configs = []
    for depth in depths:
        for rate in expansions:
            def shaped(width: int) -> ModelConfig:
                ffn = max(space.ffn_multiple, round(rate * width / space.ffn_multiple) * space.ffn_multiple)
                return space.config(depth, width, ffn)

            best = min((shaped(width) for width in space.widths()), key=lambda c: abs(space.params(c) - space.budget))
            if not space.within(best):
                raise TinyLMError(
                    f"grid point depth={depth}, expansion={rate:g}: the closest width {best.hidden_size} gives "
                    f"{space.params(best):,} parameters, outside {space.budget:,} ±{space.tolerance:.0%}; "
                    "drop the point or widen the width range or tolerance"
                )
            configs.append(best)
    return configs


# ---- rank correlation ---------------------------------------------------------------------------------------
def rank(values: Sequence[float]) -> list[float]:
    """1-based ranks; tied values share the average of the ranks they span (``scipy.stats.rankdata``)."""
    return [float(r) for r in scipy.stats.rankdata(values)] if len(values) else []


EXACT_UP_TO = 9  # pairs; up to here the p-value enumerates all n! pairings (9! = 362,880)


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Spearman's rho and its two-sided p-value (``scipy.stats.spearmanr``).

    For up to ``EXACT_UP_TO`` pairs the p-value is exact, a permutation test over all n! pairings (the t
    approximation calls a perfect rank order of four points p = 0, while one in twelve random orders is as
    extreme); beyond that it is spearmanr's t approximation. Both are NaN when either input is constant or there
    are fewer than three pairs."""
    if len(x) != len(y):
        raise TinyLMError(f"spearman: inputs have different lengths ({len(x)} and {len(y)})")
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan, math.nan
    result = scipy.stats.spearmanr(x, y)
    rho = float(result.statistic)
    if len(x) > EXACT_UP_TO:
        return rho, float(result.pvalue)
    ry = scipy.stats.rankdata(y)
    ry = (ry - ry.mean()) / np.linalg.norm(ry - ry.mean())

    def rho_of(a, axis: int = -1):  # Pearson of the ranks, for every pairing at once
        ra = scipy.stats.rankdata(a, axis=axis)
        ra = ra - ra.mean(axis=axis, keepdims=True)
        return (ra @ ry) / np.linalg.norm(ra, axis=axis)

    exact = scipy.stats.permutation_test((list(x),), rho_of, permutation_type="pairings", n_resamples=math.inf,
                                         vectorized=True)
    return rho, float(exact.pvalue)


# ---- decoding speed -----------------------------------------------------------------------------------------
def decode_speeds(model: Transformer, batch_size: int = 20, prefix: int = 2, new_tokens: int = 510,
                  repeats: int = 1) -> list[float]:
    """Generated tokens per second (batch × new tokens ÷ wall time) of each of ``repeats`` timed runs of greedy
    decoding with the KV cache from a random ``prefix``-token prompt. The paper's protocol: batch 20, 2-token
    prefix, 510 new tokens. A short warm-up run comes first so one-off allocations are not timed."""
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(0)
    prompt = torch.randint(model.config.vocab_size, (batch_size, prefix), generator=generator).to(device)
    model.eval()
    generate(model, prompt, min(new_tokens, 8))
    speeds = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        generate(model, prompt, new_tokens)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        speeds.append(batch_size * new_tokens / (time.perf_counter() - start))
    return speeds


def decode_throughput(model: Transformer, batch_size: int = 20, prefix: int = 2, new_tokens: int = 510,
                      repeats: int = 1) -> float:
    """The best of ``decode_speeds`` (tokens/s): the least disturbed run."""
    return max(decode_speeds(model, batch_size, prefix, new_tokens, repeats))
