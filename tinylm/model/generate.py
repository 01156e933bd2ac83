"""Greedy decoding with a KV cache (and the cache-free reference it must equal).

``generate`` decodes a (b, t) batch; ``pad`` marks rows that are left-padded. ``generate_ragged`` decodes prompts
of different lengths that way, in batches of similar length — one token at a time for one prompt leaves the
hardware waiting on weight reads, a batch reads the weights once for every row.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tinylm.errors import TinyLMError
from tinylm.model import KVCache, Transformer


@torch.no_grad()
def generate(
    model: Transformer,
    prompt: Tensor,
    max_new_tokens: int,
    use_cache: bool = True,
    eos_id: int | None = None,
    pad: Tensor | None = None,
) -> Tensor:
    """Greedy continuation of ``prompt`` (b, t) by up to ``max_new_tokens`` tokens; returns (b, new).

    With ``eos_id`` a row stops growing after EOS (later positions repeat EOS) and decoding ends once every
    row has stopped. ``pad`` (b,) counts the left pad tokens of each row (see ``Transformer.forward``).
    """
    if prompt.ndim != 2 or prompt.shape[1] == 0:
        raise TinyLMError("generate: prompt must be a non-empty (batch, length) tensor of token ids")
    total = prompt.shape[1] + max_new_tokens
    if total > model.config.max_seq_len:
        raise TinyLMError(f"generate: {total} tokens exceed max_seq_len={model.config.max_seq_len}; "
                          "shorten the prompt or max_new_tokens")
    batch = prompt.shape[0]
    dtype = next(model.parameters()).dtype
    cache = KVCache.empty(model.config, batch, total, prompt.device, dtype) if use_cache else None
    tokens, step_input = prompt, prompt
    done = torch.zeros(batch, dtype=torch.bool, device=prompt.device)
    new: list[Tensor] = []
    for _ in range(max_new_tokens):
        logits = model(step_input, cache=cache, pad=pad)[:, -1] if use_cache else model(tokens, pad=pad)[:, -1]
        next_token = logits.argmax(-1)
        if eos_id is not None:
            next_token = torch.where(done, torch.full_like(next_token, eos_id), next_token)
            done |= next_token == eos_id
        new.append(next_token)
        tokens = torch.cat([tokens, next_token[:, None]], dim=1)
        step_input = next_token[:, None]
        if eos_id is not None and bool(done.all()):
            break
    return torch.stack(new, dim=1) if new else prompt.new_zeros(batch, 0)


def generate_ragged(
    model: Transformer,
    prompts: list[list[int]],
    max_new_tokens: int,
    eos_id: int | None = None,
    batch_size: int = 16,
    use_cache: bool = True,
) -> list[list[int]]:
    """Greedy continuations of prompts of different lengths, each exactly what ``generate`` gives it alone.

    Prompts are sorted by length (longest first, so a batch too large shows at once) and left-padded into
    batches of ``batch_size``, so rows of a batch differ little in length and little compute goes to pads. With
    ``eos_id`` a row ends at its first EOS (kept), as a prompt decoded alone does.
    """
    if batch_size < 1:
        raise TinyLMError(f"generate_ragged: batch_size must be at least 1, got {batch_size}")
    if any(len(prompt) == 0 for prompt in prompts):
        raise TinyLMError("generate_ragged: every prompt needs at least one token; start empty prompts with BOS")
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    for start in range(0, len(order), batch_size):
        indices = order[start:start + batch_size]
        width = len(prompts[indices[0]])
        ids = torch.zeros(len(indices), width, dtype=torch.long)  # the pad id is never seen; any id will do
        for row, index in enumerate(indices):
            ids[row, width - len(prompts[index]):] = torch.tensor(prompts[index])
        pad = torch.tensor([width - len(prompts[i]) for i in indices], device=device)
        new = generate(model, ids.to(device), max_new_tokens, use_cache=use_cache, eos_id=eos_id,
                       pad=pad if bool(pad.any()) else None)  # equal lengths take the unpadded fast path
        for row, index in zip(new.tolist(), indices):
            out[index] = row[:row.index(eos_id) + 1] if eos_id in row else row
    return out
