"""Which source layers a small model inherits, and how much each span of layers matters (layer skipping).

Strategies for keeping k of L layers: ``first``, ``last``, ``both-ends`` (the first ⌈k/2⌉ and the last ⌊k/2⌋ —
the paper's advice, since the ends matter most), ``uniform`` (an even stride from the first to the last),
an explicit list such as ``0,1,5,7``, and ``learned`` (the k layers whose learned layer masks score highest).
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

from torch import Tensor

from tinylm.errors import TinyLMError
from tinylm.model import Transformer
from tinylm.model.scoring import block_nll

STRATEGIES = ("first", "last", "both-ends", "uniform", "learned")


def select_layers(strategy: str | Sequence[int], num_source: int, num_target: int,
                  scores: Tensor | None = None) -> list[int]:
    """Indices of the ``num_target`` source layers to keep, in increasing order."""
    if not 1 <= num_target <= num_source:
        raise TinyLMError(f"cannot keep {num_target} of {num_source} layers; the target needs 1..{num_source} layers")
    k, n = num_target, num_source
    if isinstance(strategy, str) and strategy not in STRATEGIES:
        try:
            strategy = [int(part) for part in strategy.split(",") if part.strip()]
        except ValueError:
            raise TinyLMError(f"unknown layer strategy {strategy!r}; use one of {', '.join(STRATEGIES)} "
                              "or a comma-separated list of layer indices such as 0,1,5") from None
    if not isinstance(strategy, str):
        layers = list(strategy)
        bad = [i for i in layers if not 0 <= i < n]
        if bad:
            raise TinyLMError(f"layer list {layers} has indices {bad} out of range 0..{n - 1}; the source has {n} layers")
        if len(set(layers)) != len(layers) or len(layers) != k:
            raise TinyLMError(f"layer list {layers} must name {k} distinct layers (the target's num_layers)")
        return sorted(layers)
    if strategy == "first":
        return list(range(k))
    if strategy == "last":
        return list(range(n - k, n))
    if strategy == "both-ends":
        head = math.ceil(k / 2)
        return list(range(head)) + list(range(n - (k - head), n))
    if strategy == "uniform":
        return [0] if k == 1 else sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})
    if scores is None or scores.numel() != n:
        raise TinyLMError("layer strategy 'learned' needs the layer scores of a mask learner run; pass --masks")
    return sorted(scores.topk(k).indices.tolist())


def bits_per_byte(model: Transformer, blocks: Iterable[Tensor], token_bytes: Tensor, **forward: object) -> float:
    """Held-out bits per byte of ``model`` on blocks of ``seq_len + 1`` tokens; ``forward`` goes to the model."""
    return block_nll(model, blocks, token_bytes, forward=forward).bits_per_byte


def layer_skip_scores(model: Transformer, blocks: Sequence[Tensor], token_bytes: Tensor,
                      spans: Sequence[int] = (1, 2, 3)) -> dict[int, list[float]]:
    """Held-out bpb with ``x`` adjacent layers skipped, for every x in ``spans`` and every start position.

    Returns ``{x: [bpb when skipping layers s..s+x-1 for s = 0 .. L-x]}``; ``{0: [bpb of the full model]}`` too.
    """
    n = model.config.num_layers
    scores = {0: [bits_per_byte(model, blocks, token_bytes)]}
    for x in spans:
        if not 1 <= x < n:
            raise TinyLMError(f"cannot skip {x} adjacent layers of a {n}-layer model; use 1..{n - 1}")
        scores[x] = [bits_per_byte(model, blocks, token_bytes, skip_layers=range(s, s + x)) for s in range(n - x + 1)]
    return scores
