"""The architecture study: parameter-matched shapes, rank correlation with the score, and decoding speed.

The paper fixes a parameter budget, samples (depth, width, FFN expansion rate) configurations near it, trains
each one the same way, and reports the Spearman coefficient between each factor and the score. Under a fixed
budget the factors are tied together (deeper means narrower), so each correlation is read one factor at a time,
as the paper does.

* ``sample`` — seeded random configurations inside a budget; ``grid`` — a fixed depth × expansion grid whose
  widths are solved to meet the budget (the depth/width variants of the speed table). Which shapes fit a budget
  is solved once, in ``tinylm.model.shapes`` (``ShapeSpace``), which ``tinylm pro`` shares.
* ``spearman`` — rank correlation (``scipy.stats``) with its two-sided p-value (exact permutation p for
  small samples).
* ``decode_speeds`` / ``decode_throughput`` — generated tokens/s with the KV cache under the paper's speed
  protocol (every timed run / the best one).
"""

from __future__ import annotations

import math
import random
import time
from typing import Sequence

import numpy as np
import scipy.stats
import torch

from tinylm.errors import TinyLMError
from tinylm.model import ModelConfig, Transformer
from tinylm.model.generate import generate
from tinylm.model.shapes import ShapeSpace, feasible_shapes


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
            best = space.closest(depth, rate)
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
