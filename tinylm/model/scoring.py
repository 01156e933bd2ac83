"""Next-token loss of a model on packed blocks: the one loop behind validation, held-out bits per byte (``tinylm
pro``'s report, the layer-skip study), multi-round scoring, layer skipping, Taylor calibration and forgetting probes.

A *block* is ``seq_len + 1`` consecutive tokens of a packed stream: the model reads the first ``seq_len`` and
is scored on the last ``seq_len`` (the shifted targets). Packed blocks have no padding, so every target counts.
Bits per byte divide the summed loss by the UTF-8 bytes the scored targets stand for (``token_bytes``), so models
with different tokenizers compare on the same text.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterable, Mapping

import torch
from torch import Tensor

from tinylm.errors import TinyLMError
from tinylm.model import cross_entropy


@dataclass(frozen=True)
class BlockNLL:
    """What ``block_nll`` measured: summed loss, the tokens and bytes it covers, and each block's mean loss."""

    nll: float  # summed next-token loss, nats
    tokens: int  # targets scored
    bytes: float  # UTF-8 bytes of the targets (0 when no token_bytes were given)
    block_loss: Tensor  # (blocks,) mean loss of each block, float32 on CPU

    @property
    def loss(self) -> float:
        """Mean next-token loss per token, nats."""
        return self.nll / self.tokens

    @property
    def bits_per_byte(self) -> float:
        if self.bytes == 0:
            raise TinyLMError("no held-out bytes to score; give at least one validation block")
        return self.nll / (math.log(2) * self.bytes)


def token_nll(model: Callable[..., Tensor], inputs: Tensor, targets: Tensor,
              context: Callable[[], ContextManager] | None = None,
              forward: Mapping[str, Any] | None = None) -> Tensor:
    """Per-token next-token loss ``(batch, seq_len)`` in fp32; gradients flow when enabled (Taylor calibration).

    ``model(inputs, **forward)`` must return logits; ``context`` is an optional autocast-like context factory.
    """
    with (context or nullcontext)():
        logits = model(inputs, **(forward or {}))
    return cross_entropy(logits, targets, reduction="none")


@torch.no_grad()
def block_nll(model: Callable[..., Tensor], blocks: Tensor | Iterable[Tensor], token_bytes: Tensor | None = None,
              batch_size: int | None = None, device: torch.device | str | None = None,
              context: Callable[[], ContextManager] | None = None,
              forward: Mapping[str, Any] | None = None) -> BlockNLL:
    """Score ``blocks`` — one ``(n, seq_len + 1)`` tensor or an iterable of them — without gradients.

    Args:
        model: returns logits for ``model(input_ids, **forward)`` (a ``Transformer`` or a LightningModule).
        blocks: token blocks; each tensor is one forward pass unless ``batch_size`` splits it further.
        token_bytes: bytes per token id, for bits per byte.
        batch_size: at most this many blocks per forward pass (None: the tensors as given).
        device: where the forward runs (default: the model's parameters' device).
        context: autocast-like context factory around each forward (e.g. Lightning's precision context).
        forward: keyword arguments of the forward pass, e.g. ``skip_layers`` or ``masks``.
    """
    if device is None:
        device = next(model.parameters()).device
    if isinstance(blocks, Tensor):
        blocks = [blocks]
    byte_table = None if token_bytes is None else token_bytes.to(device)
    nll, tokens, num_bytes, per_block = 0.0, 0, 0, []
    for batch in blocks:
        for chunk in batch.split(batch_size) if batch_size else (batch,):
            chunk = chunk.to(device)
            targets = chunk[:, 1:]
            losses = token_nll(model, chunk[:, :-1], targets, context, forward)
            nll += losses.sum().item()
            tokens += targets.numel()
            if byte_table is not None:
                num_bytes += byte_table[targets].sum().item()
            per_block.append(losses.mean(dim=1).float().cpu())
    return BlockNLL(nll, tokens, num_bytes, torch.cat(per_block) if per_block else torch.zeros(0))


def stream_blocks(tokens: Tensor, seq_len: int) -> list[Tensor]:
    """A token stream as blocks of ``seq_len + 1`` tokens, each starting at the previous one's last token (the
    packed layout), so every token after the first is a target exactly once: the whole blocks as one
    ``(n, seq_len + 1)`` tensor, then the shorter rest, if any, as a ``(1, k)`` block of its own."""
    whole = max(0, len(tokens) - 1) // seq_len
    blocks = [tokens[: whole * seq_len + 1].unfold(0, seq_len + 1, seq_len)] if whole else []
    if len(tokens) - 1 > whole * seq_len:
        blocks.append(tokens[whole * seq_len:][None])
    return blocks
