"""Minitron-style retraining: a ``LanguageModel`` whose loss adds a logit-KL term towards a frozen teacher
(the compact source), for the optional distilled arm of ``tinylm pro``."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from tinylm.artifacts.model_dir import load_model_dir
from tinylm.errors import TinyLMError
from tinylm.model import Transformer, cross_entropy
from tinylm.training.lm import LanguageModel


class DistilledLanguageModel(LanguageModel):
    """``LanguageModel`` whose loss adds a logit-KL term towards a frozen teacher (Minitron's retraining):
    loss = (1 − distill) · CE + distill · KL(teacher ‖ student). ``train/loss`` stays the CE, comparable with
    undistilled runs; the optimized mix is logged as ``train/objective``.

    Args:
        teacher: the teacher's model dir (same vocabulary as the student).
        distill: weight of the KL term in (0, 1].
        **kwargs: ``LanguageModel``'s arguments.
    """

    def __init__(self, teacher: str, distill: float = 0.5, **kwargs: Any) -> None:
        if not 0 < distill <= 1:
            raise TinyLMError(f"--distill {distill} must be a weight in (0, 1] (0 turns distillation off)")
        super().__init__(**kwargs)
        self._teacher: list[Transformer] = []  # a list keeps it out of the state dict and the optimizer

    def configure_model(self) -> None:
        super().configure_model()
        if not self._teacher:
            teacher, _ = load_model_dir(self.hparams.teacher, with_tokenizer=False)
            if teacher.config.vocab_size != self.config.vocab_size:
                raise TinyLMError(f"the teacher {self.hparams.teacher} has {teacher.config.vocab_size} vocabulary "
                                  f"rows, the student {self.config.vocab_size}; distill from the compact source")
            self._teacher.append(teacher.requires_grad_(False).eval())

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        teacher = self._teacher[0].to(self.device)
        logits = self.net(batch["input_ids"]).float()
        ce = cross_entropy(logits, batch["labels"])
        with torch.no_grad():
            target = F.log_softmax(teacher(batch["input_ids"]).float(), dim=-1)
        kl = F.kl_div(F.log_softmax(logits, dim=-1).flatten(0, 1), target.flatten(0, 1), log_target=True,
                      reduction="batchmean")
        loss = (1 - self.hparams.distill) * ce + self.hparams.distill * kl
        if not torch.isfinite(loss):
            raise TinyLMError(f"training loss became {loss.item()} at step {self.global_step}; lower --lr")
        self.tokens_seen += batch["input_ids"].numel() * self.trainer.world_size
        self.log("train/loss", ce, prog_bar=True)
        self.log("train/kl", kl)
        self.log("train/objective", loss)
        self.log("train/tokens", float(self.tokens_seen))
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], prog_bar=True)
        return loss
