"""``LanguageModel``: the LightningModule that trains a tinylm ``Transformer`` on a ``TextDataModule``.

The network is built in ``configure_model`` (so FSDP can shard it and so its vocabulary can come from the
DataModule's tokenizer). At the end of ``fit`` it writes a model dir (HF LLaMA layout) with provenance.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch
from torchmetrics import SumMetric

from tinylm.artifacts import builtin
from tinylm.artifacts.io import check_output_dir
from tinylm.artifacts.model_dir import check_same_tokenizer, load_model_dir, write_model_dir
from tinylm.data.datamodule import TrainingData
from tinylm.errors import TinyLMError
from tinylm.model import ModelConfig, Transformer, linear_cross_entropy
from tinylm.model.scoring import token_nll
from tinylm.tokenizer import Tokenizer
from tinylm.training.optim import PAPER_BS0_TOKENS, scaled_lr, warmup_cosine
from tinylm.training.runs import SaveOnSigterm
from tinylm.training.throughput import SpeedMonitor


class LanguageModel(L.LightningModule):
    """Next-token pre-training with AdamW, warmup + cosine, and the paper's lr scaling rule.

    Args:
        config: the model shape, or a preset name (``tiny``, ``pangu-pi-1b-pro`` ...); ``vocab_size`` left
            unset is taken from the DataModule's tokenizer.
        init_from: a model dir to start from (its shape wins over ``config``).
        lr: peak learning rate; with ``lr_scaling_r`` set it is lr0 of the rule lr = (bs/bs0)^r × lr0.
        min_lr: the cosine schedule's floor.
        warmup: fraction of the total optimizer steps spent in linear warmup.
        betas, eps, weight_decay: AdamW settings (defaults from the released PanGu-π config).
        lr_scaling_r: the increment rate r of the paper's rule; None uses ``lr`` as is.
        lr_scaling_bs0: bs0 of the rule, in tokens per optimizer step (the paper: 1M).
        attention: ``sdpa`` | ``eager`` | ``xformers``.
        compile: wrap the network in ``torch.compile``.
        model_dir: where the trained model dir goes (default: ``<log dir>/model``); refused up front when it
            exists and is not empty, unless ``overwrite`` and tinylm wrote it.
        overwrite: replace an existing ``model_dir`` that tinylm wrote (``tinylm fit --overwrite true``).
    """

    # a caller that writes into a temp folder (a `tinylm pro` stage) names the final path itself instead
    announce_model_dir = True
    zero_lr_allowed = False  # a learning rate of 0 trains nothing here; MaskLearner still trains its masks

    def __init__(
        self,
        config: ModelConfig | str = "tiny",
        init_from: str | None = None,
        lr: float = 1e-4,
        min_lr: float = 1e-5,
        warmup: float = 0.03,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        weight_decay: float = 0.1,
        lr_scaling_r: float | None = None,
        lr_scaling_bs0: int = PAPER_BS0_TOKENS,
        attention: str = "sdpa",
        compile: bool = False,
        model_dir: str | None = None,
        overwrite: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["overwrite"])
        self.overwrite = overwrite
        if lr < 0 or (lr == 0 and not self.zero_lr_allowed) or not 0 <= min_lr:
            raise TinyLMError(f"model.lr={lr} / model.min_lr={min_lr}: the learning rate must be positive and the "
                              "floor non-negative (e.g. --model.lr 1e-3)")
        if isinstance(config, dict):  # from a checkpoint's hyperparameters
            config = ModelConfig(**config)
        self.config = ModelConfig.from_preset(config) if isinstance(config, str) else config
        if not isinstance(config, str):  # checkpoints are loaded with weights_only=True: store plain data
            self.hparams["config"] = asdict(config)
        if not 0 <= warmup < 1:
            raise TinyLMError(f"model.warmup={warmup} must be a fraction of training in [0, 1)")
        self.net: Transformer | None = None
        self.tokens_seen = 0
        self.schedule_steps: int | None = None  # the lr schedule's length, fixed at the run's first start
        self.resumed_schedule_steps: int | None = None
        self.val_nll, self.val_tokens, self.val_bytes = SumMetric(), SumMetric(), SumMetric()

    # ---- the network -----------------------------------------------------------------------------------
    @property
    def datamodule(self) -> TrainingData | None:
        """The trainer's DataModule (the members this class reads are declared by ``TrainingData``)."""
        return getattr(self.trainer, "datamodule", None) if self._trainer is not None else None

    @property
    def tokenizer(self) -> Tokenizer | None:
        return getattr(self.datamodule, "tokenizer", None)

    def configure_model(self) -> None:
        if self.net is not None:
            return
        tokenizer = self.tokenizer
        if self.hparams.init_from:
            start = builtin.resolve(self.hparams.init_from)
            net, _ = load_model_dir(start, attention=self.hparams.attention, with_tokenizer=False)
            if tokenizer is not None:
                check_same_tokenizer(start, tokenizer)
            self.config = net.config
        else:
            config = self.config
            if config.vocab_size is None:
                if tokenizer is None:
                    raise TinyLMError("model vocab_size is unset and there is no tokenizer to take it from")
                config = config.with_vocab(tokenizer.vocab_size)
            self.config = config
            net = Transformer(config, attention=self.hparams.attention)
        if tokenizer is not None and tokenizer.vocab_size != self.config.vocab_size:
            raise TinyLMError(
                f"tokenizer/model vocab mismatch: tokenizer has {tokenizer.vocab_size} pieces, model "
                f"{self.config.vocab_size} rows; leave model.config.vocab_size unset or pass the matching "
                "data.tokenizer"
            )
        self.net = torch.compile(net) if self.hparams.compile else net
        if tokenizer is not None:
            self.register_buffer("token_bytes", torch.from_numpy(tokenizer.token_bytes), persistent=False)

    @property
    def head_weight(self) -> torch.Tensor:
        return getattr(self.net, "_orig_mod", self.net).lm_head.weight  # through a torch.compile wrapper

    def forward(self, input_ids: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.net(input_ids, **kwargs)

    # ---- hooks a subclass changes (MaskLearner: masks in the forward, a Lagrangian, its own groups) ------
    divergence_advice = "lower model.lr or check the data"

    def forward_kwargs(self, training: bool) -> dict[str, Any]:
        """Extra keyword arguments of the network's forward in training (``True``) or evaluation steps."""
        return {}

    def extra_loss(self) -> torch.Tensor | None:
        """A term added to the training loss after the forward (logged by the subclass), or None."""
        return None

    # ---- steps -----------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        hidden = self.net(batch["input_ids"], return_hidden=True, **self.forward_kwargs(training=True))
        loss = linear_cross_entropy(hidden, self.head_weight, batch["labels"])  # head + loss fused, chunked
        if not torch.isfinite(loss):
            raise TinyLMError(f"training loss became {loss.item()} at step {self.global_step}; "
                              f"{self.divergence_advice}")
        self.tokens_seen += batch["input_ids"].numel() * self.trainer.world_size
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/tokens", float(self.tokens_seen))
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], prog_bar=True)
        extra = self.extra_loss()
        return loss if extra is None else loss + extra

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        forward = self.forward_kwargs(training=False)
        nll = token_nll(self.net, batch["input_ids"], batch["labels"], forward=forward).sum()
        self.val_nll.update(nll)
        self.val_tokens.update(batch["labels"].numel())
        self.val_bytes.update(self.token_bytes[batch["labels"]].sum())

    def on_validation_epoch_end(self) -> None:
        nll, tokens, num_bytes = self.val_nll.compute(), self.val_tokens.compute(), self.val_bytes.compute()
        self.log_dict({"val/loss": nll / tokens, "val/bpb": nll / (math.log(2) * num_bytes)}, prog_bar=True)
        for metric in (self.val_nll, self.val_tokens, self.val_bytes):
            metric.reset()

    test_step = validation_step
    on_test_epoch_end = on_validation_epoch_end

    # ---- optimisation ----------------------------------------------------------------------------------
    def batch_tokens(self) -> int:
        """Tokens per optimizer step across devices and gradient accumulation."""
        datamodule = self.datamodule
        return datamodule.batch_size * datamodule.seq_len * self.trainer.accumulate_grad_batches * \
            self.trainer.world_size

    def peak_lr(self) -> float:
        # .get: a subclass run by LightningCLI records only its own arguments (MaskLearner has no scaling rule)
        if self.hparams.get("lr_scaling_r") is None:
            return self.hparams.lr
        return scaled_lr(self.batch_tokens(), self.hparams.lr_scaling_r, self.hparams.lr, self.hparams.lr_scaling_bs0)

    def param_groups(self, total_steps: int) -> list[tuple[dict[str, Any], Callable[[int], float]]]:
        """AdamW parameter groups, each with its lr multiplier per step: warmup + cosine on the weights, weight
        decay on matrices and embeddings only (norm gains are not decayed)."""
        lr = self.peak_lr()
        min_lr = min(self.hparams.min_lr, lr)  # the floor can never be above the peak (small lr from the scaling rule)
        warmup = max(1, math.ceil(self.hparams.warmup * total_steps)) if self.hparams.warmup > 0 else 0

        def schedule(step: int) -> float:
            return warmup_cosine(step, total_steps, warmup, lr, min_lr) / lr if lr > 0 else 0.0

        weights = [p for p in self.net.parameters() if p.requires_grad]
        return [({"params": [p for p in weights if p.ndim >= 2], "lr": lr, "weight_decay": self.hparams.weight_decay},
                 schedule),
                ({"params": [p for p in weights if p.ndim < 2], "lr": lr, "weight_decay": 0.0}, schedule)]

    def configure_optimizers(self) -> dict[str, Any]:
        planned = max(1, int(self.trainer.estimated_stepping_batches))
        # A resumed run keeps the schedule it started with: asked for more steps ("train longer"), it finishes the
        # cosine where it was headed and trains the extra steps at the floor lr, so the lr never jumps back up.
        self.schedule_steps = self.resumed_schedule_steps or planned
        if planned > self.schedule_steps and self.trainer.is_global_zero:
            print(f"tinylm: training longer than the run's schedule of {self.schedule_steps} steps: steps "
                  f"{self.schedule_steps}-{planned} train at the floor lr ({self.hparams.min_lr:g})", flush=True)
        groups = self.param_groups(self.schedule_steps)
        optimizer = torch.optim.AdamW([group for group, _ in groups], lr=self.hparams.lr,
                                      betas=tuple(self.hparams.betas), eps=self.hparams.eps)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, [multiplier for _, multiplier in groups])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def configure_callbacks(self) -> list[L.Callback]:
        return [SpeedMonitor(), SaveOnSigterm()]

    # ---- state and output ------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        bad = [name for name, p in self.named_parameters() if not torch.isfinite(p).all()]
        # a checkpoint is what a resume starts from: never store a diverged model. Every rank saves, and under FSDP
        # each holds a shard, so all ranks decide together (else one raises while the others wait for it)
        if self.trainer.strategy.reduce_boolean_decision(bool(bad), all=False):
            raise TinyLMError(f"weights became non-finite ({bad[0] if bad else 'on another rank'}) at step "
                              f"{self.global_step}; no checkpoint was written; lower model.lr, keep gradient "
                              "clipping, or resume from an earlier checkpoint")
        checkpoint["tokens_seen"] = self.tokens_seen
        checkpoint["model_config"] = asdict(self.config)
        checkpoint["schedule"] = {"steps": self.schedule_steps, **self.schedule_settings()}
        checkpoint["batch_layout"] = self.batch_layout()

    SCHEDULE_KEYS = ("lr", "min_lr", "warmup", "betas", "eps", "weight_decay", "lr_scaling_r", "lr_scaling_bs0")

    def schedule_settings(self) -> dict[str, Any]:
        """What shapes the optimizer and lr schedule: a resume must keep it (lists: checkpoints hold plain data)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.hparams.items() if k in self.SCHEDULE_KEYS}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        schedule = checkpoint.get("schedule") or {}
        for name, value in self.schedule_settings().items():
            if name in schedule and schedule[name] != value:
                raise TinyLMError(
                    f"the checkpoint was trained with {name}={schedule[name]}, this run asks for {name}={value}; a "
                    "resume continues the optimizer and schedule it saved, so resume with the same setting, or start "
                    "a new run from the weights (--model.init_from a model dir)")
        self.resumed_schedule_steps = schedule.get("steps")
        saved = checkpoint.get("model_config")
        if saved is not None:
            for name, value in asdict(self.config).items():
                if saved.get(name, value) != value:
                    raise TinyLMError(
                        f"the checkpoint was trained with {name}={saved[name]}, this run asks for {name}={value}; "
                        f"resume with the checkpoint's {name}, or start a new run without --ckpt_path")
        layout = checkpoint.get("batch_layout")
        if layout is not None and self._trainer is not None and layout != self.batch_layout():
            raise TinyLMError(
                f"the checkpoint was trained on {layout['world_size']} process(es) with accumulate_grad_batches="
                f"{layout['accumulate']}, this run has {self.trainer.world_size} and "
                f"{self.trainer.accumulate_grad_batches}; the data order and step count depend on them, so resume "
                "with the same --trainer.devices × --trainer.num_nodes and accumulation, or start a new run")
        self.tokens_seen = checkpoint.get("tokens_seen", 0)

    def batch_layout(self) -> dict[str, int]:
        """What splits the global batch: a resume must keep it to continue the same data order and plan."""
        return {"world_size": self.trainer.world_size, "accumulate": self.trainer.accumulate_grad_batches}

    def setup(self, stage: str) -> None:
        if stage != "fit":
            return
        if self.trainer.max_steps == 0:
            raise TinyLMError("trainer.max_steps=0 trains nothing; give a positive number of steps")
        # Paths are resolved here, on every rank: trainer.log_dir is a collective, so it must never be called
        # from rank-0-only code (on_fit_end would hang or crash under DDP). The model dir is checked now, before
        # any training, so a bad --model.model_dir costs nothing.
        log_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir)
        self.model_dir_path = Path(self.hparams.model_dir) if self.hparams.model_dir else log_dir / "model"
        keep = [log_dir] + [cb.dirpath for cb in self.trainer.checkpoint_callbacks if cb.dirpath]
        datamodule = getattr(self.trainer, "datamodule", None)
        inputs = [self.hparams.init_from, getattr(datamodule, "tokenizer_path", None),
                  *getattr(datamodule, "sources_spec", [])]
        check_output_dir(self.model_dir_path, self.overwrite, "--model.model_dir", protect=keep, inputs=inputs)

    def output_dir(self) -> Path:
        """Where ``on_fit_end`` writes the model dir (resolved in ``setup``)."""
        return self.model_dir_path

    def provenance(self) -> dict[str, Any]:
        datamodule = self.datamodule
        return {
            "recipe": dict(self.hparams),
            "parent": self.hparams.init_from,
            "tokens_seen": self.tokens_seen,
            "global_step": self.global_step,
            "seed": os.environ.get("PL_GLOBAL_SEED"),
            "data": {"sources": datamodule.sources_spec, "seq_len": datamodule.seq_len,
                     "cache": datamodule.meta if datamodule.cache_folder else None},
        }

    def on_fit_end(self) -> None:
        state = self.trainer.strategy.lightning_module_state_dict()  # every rank: gathers under FSDP
        if self.trainer.is_global_zero:  # no collective below this line
            prefix = "net._orig_mod." if self.hparams.compile else "net."
            weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            path = write_model_dir(self.output_dir(), self.config, weights, self.tokenizer, self.provenance(),
                                   overwrite=self.overwrite)
            if self.announce_model_dir:
                print(f"tinylm: model dir written to {path}")
