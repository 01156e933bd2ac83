"""AdamW, warmup + cosine, and the paper's batch-size learning-rate rule."""

from __future__ import annotations

import math

import torch
from torch import nn

PAPER_BS0_TOKENS = 1_048_576  # bs0 = 1M tokens (docs/paper.md §3)
PAPER_LR0 = 1e-4


def scaled_lr(batch_tokens: int, r: float, lr0: float = PAPER_LR0, bs0_tokens: int = PAPER_BS0_TOKENS) -> float:
    """The paper's rule lr = (bs / bs0)^r × lr0, with bs in tokens per optimizer step (all devices)."""
    if batch_tokens <= 0 or bs0_tokens <= 0:
        raise ValueError("batch sizes must be positive")
    return (batch_tokens / bs0_tokens) ** r * lr0


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, lr: float, min_lr: float) -> float:
    """Linear warmup from 0 to ``lr`` over ``warmup_steps``, then cosine decay to ``min_lr`` at ``total_steps``."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def adamw(model: nn.Module, lr: float, betas: tuple[float, float], eps: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and embeddings only (norm gains are not decayed)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)
