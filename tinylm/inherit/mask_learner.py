"""``MaskLearner``: learn which hidden channels, heads, FFN neurons and layers to keep (Sheared-LLaMA).

Hard-concrete gates multiply the source model at the points ``Masks`` defines; a Lagrangian term per mask type,
λ1 (ŝ − t) + λ2 (ŝ − t)², pulls the expected sparsity ŝ towards the target's t, with t ramped in linearly over
``target_warmup`` of training. The λs are trained by gradient ascent (their parameter group has a negative
learning rate), the gates and (unless frozen) the weights by descent. Evaluation uses deterministic masks with
exactly the target's shape, so val/bpb is the pruned model's. At the end of fit the masks are folded into the
weights and the small dense model dir is written (with the learned log α in ``masks.safetensors``).

Only the dimensions that the target shrinks get gates; a target equal to the source prunes nothing.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from tinylm.errors import TinyLMError
from tinylm.inherit.hard_concrete import TEMPERATURE, HardConcrete, lagrangian
from tinylm.inherit.layers import select_layers
from tinylm.inherit.learned import MASK_TYPES, MASKS_FILE, learned_importance, load_masks, save_masks
from tinylm.inherit.materialize import save_inherited
from tinylm.inherit.plan import Plan, resolve_target
from tinylm.model import Masks, ModelConfig
from tinylm.training.lm import LanguageModel

__all__ = ["MASKS_FILE", "MASK_TYPES", "MaskLearner", "learned_importance", "load_masks", "save_masks"]


class MaskLearner(LanguageModel):
    """Learn hard-concrete masks that shrink ``source`` to ``target``, then write the pruned dense model dir.

    A ``LanguageModel`` whose network is the source model under sampled masks, so it shares the DataModule,
    ``tinylm fit``, the val/bpb metric and the throughput logging.

    Args:
        source: the model dir to prune (its tokenizer should be the DataModule's).
        target: the shape to reach: a preset name, a model dir, or a mapping of shape fields that change
            (hidden_size, num_layers, num_heads, num_kv_heads, intermediate_size).
        lr: peak learning rate of the model weights (warmup + cosine to ``min_lr``).
        min_lr: floor of the weights' cosine schedule.
        warmup: fraction of steps of linear lr warmup for the weights.
        mask_lr: learning rate of the gates' log α (constant).
        lambda_lr: learning rate of the Lagrange multipliers (constant; applied as gradient ascent).
        target_warmup: fraction of steps over which the target sparsity ramps from 0 to its final value.
        train_weights: train the model weights together with the masks (False: weights frozen).
        weight_decay: AdamW weight decay of the weights.
        betas, eps: AdamW settings.
        init_log_alpha: initial log α of every gate (5: every gate starts ≈ 1).
        temperature: hard-concrete temperature β.
        attention: ``sdpa`` | ``eager`` | ``xformers``.
        model_dir: where the pruned model dir goes (default: ``<log dir>/model``).
        overwrite: replace an existing ``model_dir`` that tinylm wrote.
    """

    zero_lr_allowed = True  # lr 0 freezes the weights' values while the masks still train

    def __init__(
        self,
        source: str,
        target: str | dict[str, int],
        lr: float = 1e-4, min_lr: float = 1e-5, warmup: float = 0.1,  # the weights' lr schedule
        mask_lr: float = 1.0, lambda_lr: float = 1.0, target_warmup: float = 0.2,  # the gates' and the target's
        train_weights: bool = True,
        weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8,  # the weights' AdamW
        init_log_alpha: float = 5.0, temperature: float = TEMPERATURE,  # the hard-concrete gates
        attention: str = "sdpa",
        model_dir: str | None = None,
        overwrite: bool = False,
    ) -> None:
        super().__init__(init_from=source, lr=lr, min_lr=min_lr, warmup=warmup, betas=betas, eps=eps,
                         weight_decay=weight_decay, attention=attention, model_dir=model_dir, overwrite=overwrite)
        # LightningCLI records only this class's arguments as hparams; the parent's code reads these two
        self.hparams.update(init_from=source, compile=False)
        if not 0 <= target_warmup <= 1:
            raise TinyLMError(f"model.target_warmup={target_warmup} must be a fraction of training in [0, 1]")
        self.masks = nn.ModuleDict()
        self.lambdas = nn.ParameterDict()

    # ---- the network and its gates ---------------------------------------------------------------------
    def configure_model(self) -> None:
        if self.net is not None:
            return
        super().configure_model()  # loads the source (init_from) and checks it against the tokenizer
        self.source_config: ModelConfig = self.net.config
        self.target: ModelConfig = resolve_target(self.hparams.target, self.source_config)
        self.net.requires_grad_(self.hparams.train_weights)
        for name, (full, kept, shape) in self.mask_shapes().items():
            if kept < full:
                self.masks[name] = HardConcrete(shape, self.hparams.init_log_alpha, self.hparams.temperature)
                self.lambdas[name] = nn.Parameter(torch.zeros(2))

    def mask_shapes(self) -> dict[str, tuple[int, int, tuple[int, ...]]]:
        """Per mask type: (source size, target size, gate shape)."""
        s, t = self.source_config, self.target
        return {
            "hidden": (s.hidden_size, t.hidden_size, (s.hidden_size,)),
            "heads": (s.num_heads, t.num_heads, (s.num_layers, s.num_heads)),
            "ffn": (s.intermediate_size, t.intermediate_size, (s.num_layers, s.intermediate_size)),
            "layers": (s.num_layers, t.num_layers, (s.num_layers,)),
        }

    def target_sparsity(self, name: str) -> float:
        """This step's target sparsity of one mask type (linearly ramped in over ``target_warmup``)."""
        full, kept, _ = self.mask_shapes()[name]
        total = max(1, int(self.trainer.estimated_stepping_batches)) if self._trainer is not None else 1
        ramp = 1.0 if self.hparams.target_warmup == 0 else min(1.0, self.global_step /
                                                                 (self.hparams.target_warmup * total))
        return (1.0 - kept / full) * ramp

    def sampled_masks(self) -> Masks:
        for gate in self.masks.values():
            gate.clamp_()
        return Masks(**{name: gate.sample() for name, gate in self.masks.items()})

    def plan(self) -> Plan:
        """The deterministic plan: exactly the target's shape, kept units scaled by their gate values."""
        log_alphas = {name: gate.log_alpha.detach().float().cpu() for name, gate in self.masks.items()}
        scores = learned_importance(log_alphas, self.source_config, self.hparams.temperature)
        n = self.source_config.num_layers
        layers = list(range(n)) if scores.layer_scores is None else \
            select_layers("learned", n, self.target.num_layers, scores.layer_scores)
        return scores.plan(self.target, layers)

    def deterministic_masks(self) -> Masks:
        masks = self.plan().masks(self.source_config)
        return Masks(**{name: getattr(masks, name).to(self.device) for name in MASK_TYPES})

    # ---- the hooks LanguageModel's steps and optimizer call ---------------------------------------------
    divergence_advice = "lower model.lr or model.mask_lr"

    def forward_kwargs(self, training: bool) -> dict[str, Any]:
        """Sampled masks while training; the deterministic target-shaped masks when evaluating."""
        return {"masks": self.sampled_masks() if training else self._eval_masks}

    def extra_loss(self) -> Tensor | None:
        """The Lagrangian that pulls each mask type's expected sparsity to this step's target."""
        penalty = torch.zeros((), device=self.device)
        for name, gate in self.masks.items():
            expected, target = gate.expected_sparsity(), self.target_sparsity(name)
            penalty = penalty + lagrangian(expected, target, self.lambdas[name])
            self.log(f"sparsity/{name}", expected.mean())
            self.log(f"sparsity/{name}_target", target)
        self.log("train/lagrangian", penalty)
        return penalty

    def on_validation_epoch_start(self) -> None:
        self._eval_masks = self.deterministic_masks()

    on_test_epoch_start = on_validation_epoch_start

    def param_groups(self, total_steps: int) -> list[tuple[dict[str, Any], Callable[[int], float]]]:
        """Descent on the weights (warmup + cosine, unless frozen) and the gates, ascent on λ (both constant)."""
        groups = super().param_groups(total_steps) if self.hparams.train_weights else []
        if len(self.masks):
            constant = lambda step: 1.0  # noqa: E731
            # torch's AdamW takes a negative group lr as is: the λ group climbs the Lagrangian (min-max)
            groups += [({"params": [g.log_alpha for g in self.masks.values()], "lr": self.hparams.mask_lr,
                         "weight_decay": 0.0}, constant),
                       ({"params": list(self.lambdas.values()), "lr": -self.hparams.lambda_lr, "weight_decay": 0.0},
                        constant)]
        if not groups:
            raise TinyLMError("nothing to train: the target equals the source and model.train_weights is False; "
                              "shrink the target or train the weights")
        return groups

    # ---- output ----------------------------------------------------------------------------------------
    def on_fit_end(self) -> None:
        if not self.trainer.is_global_zero:  # the path was resolved in setup on every rank: no collective here
            return
        plan = self.plan()
        state = {name: tensor.detach().cpu() for name, tensor in self.net.state_dict().items()}
        provenance = {**self.provenance(), "parent": str(self.hparams.source), "criterion": "learned",
                      "masks": MASKS_FILE}
        log_alphas = {n: g.log_alpha for n, g in self.masks.items()}
        path = save_inherited(self.output_dir(), state, self.source_config, plan, self.tokenizer, provenance,
                              overwrite=self.overwrite,
                              extra=lambda folder: save_masks(folder / MASKS_FILE, log_alphas, self.hparams.temperature))
        if self.announce_model_dir:
            print(f"tinylm: pruned model dir written to {path}")
