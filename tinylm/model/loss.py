"""Next-token cross-entropy, and the fused head + loss that never holds the full (tokens x vocab) logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def cross_entropy(logits: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
    """Next-token loss in fp32; targets equal to -100 are ignored."""
    loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100, reduction=reduction)
    return loss if reduction != "none" else loss.view(targets.shape)


class _LinearCrossEntropy(torch.autograd.Function):
    """Output head + next-token loss in row chunks, gradients computed in the forward pass.

    The full (tokens × vocab) logits never exist at once and the softmax is read once, which saves memory
    traffic — the head is a large share of a tiny model's step. Same value and gradients as
    ``cross_entropy(hidden @ weight.T, targets)``.
    """

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, targets: Tensor, chunk: int) -> Tensor:
        valid = targets != -100
        count = valid.sum().clamp(min=1)
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        grad_hidden = torch.empty_like(hidden) if need_grad else None
        grad_weight = torch.zeros_like(weight) if need_grad else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk):
            h, t, keep = hidden[start : start + chunk], targets[start : start + chunk], valid[start : start + chunk]
            logits = (h @ weight.t()).float()
            lse = torch.logsumexp(logits, dim=-1)
            safe = t.clamp(min=0)
            total += ((lse - logits.gather(1, safe[:, None]).squeeze(1)) * keep).sum()
            if need_grad:  # d(mean loss)/d(logits) = (softmax − onehot) / count, in place over the logits
                probs = logits.sub_(lse[:, None]).exp_()
                probs[torch.arange(len(t), device=t.device), safe] -= 1.0
                grad = probs.mul_((keep / count)[:, None]).to(h.dtype)
                torch.matmul(grad, weight, out=grad_hidden[start : start + chunk])
                grad_weight.addmm_(grad.t(), h)
        ctx.save_for_backward(grad_hidden, grad_weight)
        return total / count

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_output, grad_weight * grad_output, None, None


def linear_cross_entropy(hidden: Tensor, weight: Tensor, targets: Tensor, chunk: int = 1024) -> Tensor:
    """Mean next-token loss of ``hidden @ weight.T`` against ``targets`` (-100 ignored), fused and chunked."""
    return _LinearCrossEntropy.apply(hidden.flatten(0, -2), weight, targets.flatten(), chunk)
