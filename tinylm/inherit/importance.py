"""Importance of heads, FFN neurons and hidden channels: L1, L2 magnitude and first-order Taylor (LLM-Pruner).

Each weight element gets a score — |w| (L1), w² (L2) or |w · ∂L/∂w| (Taylor, gradients of the mean next-token
loss over a calibration set) — and the scores are summed over the weights that are coupled, i.e. removed
together:

* a query head: its q rows and its o columns; a KV group: its k and v rows (a group is kept whole);
* an FFN neuron: its gate and up rows and its down column;
* a hidden channel: its embedding and lm_head columns, the final norm entry, and in every layer its q/k/v/gate/up
  columns, its o/down rows and its two norm entries. Hidden channels are chosen globally (one set for the
  whole model), summing only over the layers that are kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from tinylm.errors import TinyLMError
from tinylm.inherit.plan import Plan, select_heads, top_k
from tinylm.model import Masks, ModelConfig, Transformer
from tinylm.model.scoring import token_nll

CRITERIA = ("l1", "l2", "taylor")


@dataclass
class Importance:
    """Scores per prunable unit; larger means more important."""

    criterion: str
    embed: Tensor  # (d,)    hidden channels: embedding, lm_head and final-norm share
    hidden: Tensor  # (L, d) hidden channels: each layer's share
    heads: Tensor  # (L, H)  query heads: q rows + o columns
    kv: Tensor  # (L, KV)    KV groups: k + v rows
    ffn: Tensor  # (L, F)    FFN neurons: gate + up rows + down column
    layer_scores: Tensor | None = None  # (L,) learned layer gates, for the "learned" layer strategy
    scales: Masks | None = None  # learned gate values folded into the kept weights
    learned: tuple[str, ...] | None = None  # learned criterion: the mask types that have gates

    def plan(self, target: ModelConfig, layers: Sequence[int], keep_ids: Sequence[int] | None = None) -> Plan:
        """Keep the best units for ``target`` (a shape checked by ``resolve_target``) in the given source layers."""
        layers = list(layers)
        if len(layers) != target.num_layers:
            raise TinyLMError(f"{len(layers)} layers selected but the target has num_layers={target.num_layers}")
        if self.learned is not None:
            shrinks = {"hidden": target.hidden_size < self.embed.numel(), "heads": target.num_heads < self.heads.shape[1],
                       "ffn": target.intermediate_size < self.ffn.shape[1]}
            missing = [name for name, shrink in shrinks.items() if shrink and name not in self.learned]
            if missing:
                raise TinyLMError(f"the learned masks have no {', '.join(missing)} gates, so they cannot shrink "
                                  "those dimensions; use the mask learner's target or another criterion")
        hidden = self.embed + self.hidden[layers].sum(0)
        return Plan(
            layers=layers,
            hidden=top_k(hidden, target.hidden_size),
            heads=[select_heads(self.heads[i], self.kv[i], target.num_heads, target.num_kv_heads) for i in layers],
            ffn=[top_k(self.ffn[i], target.intermediate_size) for i in layers],
            keep_ids=None if keep_ids is None else list(keep_ids),
            scales=self.scales,
        )


def calibration_blocks(tokens, num_samples: int, seq_len: int, seed: int = 0) -> Tensor:
    """``num_samples`` random aligned blocks of ``seq_len + 1`` tokens (inputs and shifted targets).

    ``tokens`` is a 1-D token stream (numpy memmap or tensor) or a ``TextDataModule`` (its training stream).
    """
    if hasattr(tokens, "train_stream") or hasattr(tokens, "setup"):
        if getattr(tokens, "tokenizer", None) is None:
            tokens.prepare_data()
            tokens.setup("fit")
        tokens = tokens.train_stream
    if num_samples < 1 or seq_len < 1:
        raise TinyLMError(f"empty calibration set ({num_samples} samples of {seq_len} tokens); "
                          "use calibration_size >= 1 and seq_len >= 1")
    available = (len(tokens) - 1) // seq_len
    if available < 1:
        raise TinyLMError(f"empty calibration set: the token stream ({len(tokens)} tokens) is shorter than one "
                          f"block of {seq_len + 1}; use more text or a smaller seq_len")
    if num_samples > available:
        raise TinyLMError(f"calibration set of {num_samples} blocks asked for, the stream holds only {available} "
                          f"blocks of {seq_len}; lower calibration_size or seq_len")
    ids = torch.randperm(available, generator=torch.Generator().manual_seed(seed))[:num_samples].tolist()
    blocks = [np.asarray(tokens[i * seq_len: i * seq_len + seq_len + 1], dtype=np.int64) for i in ids]
    return torch.from_numpy(np.stack(blocks))


def importance(model: Transformer, criterion: str, calibration: Tensor | None = None,
               batch_size: int = 8) -> Importance:
    """Score every head, KV group, FFN neuron and hidden channel of ``model`` by ``criterion``.

    Taylor needs ``calibration`` (blocks from ``calibration_blocks``); L1 and L2 ignore it.
    """
    if criterion not in CRITERIA:
        raise TinyLMError(f"unknown importance criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    if criterion == "taylor":
        if calibration is None or calibration.numel() == 0 or calibration.shape[-1] < 2:
            raise TinyLMError("empty calibration set: Taylor importance needs calibration blocks of >= 2 tokens; "
                              "give calibration_size >= 1")
        grads = _loss_gradients(model, calibration, batch_size)
        scores = {name: (p.detach() * grads[name]).abs() for name, p in model.named_parameters()}
    else:
        power = 1 if criterion == "l1" else 2
        scores = {name: p.detach().abs().pow(power) for name, p in model.named_parameters()}
    return _couple(scores, model.config, criterion)


def _loss_gradients(model: Transformer, calibration: Tensor, batch_size: int) -> dict[str, Tensor]:
    """∂(mean next-token loss over all calibration tokens)/∂w, accumulated batch by batch."""
    device = next(model.parameters()).device
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    total = calibration[:, 1:].numel()
    try:
        with torch.enable_grad():
            for p in model.parameters():
                p.requires_grad_(True)
            for chunk in calibration.split(batch_size):
                chunk = chunk.to(device)
                loss = token_nll(model, chunk[:, :-1], chunk[:, 1:]).sum() / total
                loss.backward()
        return {name: p.grad.detach().clone() for name, p in model.named_parameters()}
    finally:
        model.zero_grad(set_to_none=True)
        for name, p in model.named_parameters():
            p.requires_grad_(flags[name])
        model.train(was_training)


def _couple(scores: dict[str, Tensor], config: ModelConfig, criterion: str) -> Importance:
    """Sum element scores over the coupled weights of each unit (see the module docstring)."""
    hd = config.head_dim
    layers = config.num_layers

    def s(name: str) -> Tensor:
        return scores[name].float().cpu()

    embed = s("model.embed_tokens.weight").sum(0) + s("model.norm.weight")
    if "lm_head.weight" in scores:  # absent when tied: the shared matrix is one parameter, counted once
        embed = embed + s("lm_head.weight").sum(0)
    hidden = torch.zeros(layers, config.hidden_size)
    heads = torch.zeros(layers, config.num_heads)
    kv = torch.zeros(layers, config.num_kv_heads)
    ffn = torch.zeros(layers, config.intermediate_size)
    for i in range(layers):
        p = f"model.layers.{i}."
        q, k, v, o = (s(p + f"self_attn.{n}_proj.weight") for n in "qkvo")
        gate, up, down = (s(p + f"mlp.{n}_proj.weight") for n in ("gate", "up", "down"))
        heads[i] = q.sum(1).view(-1, hd).sum(1) + o.sum(0).view(-1, hd).sum(1)
        kv[i] = (k.sum(1) + v.sum(1)).view(-1, hd).sum(1)
        ffn[i] = gate.sum(1) + up.sum(1) + down.sum(0)
        hidden[i] = (q.sum(0) + k.sum(0) + v.sum(0) + gate.sum(0) + up.sum(0) + o.sum(1) + down.sum(1)
                     + s(p + "input_layernorm.weight") + s(p + "post_attention_layernorm.weight"))
    return Importance(criterion=criterion, embed=embed, hidden=hidden, heads=heads, kv=kv, ffn=ffn)
