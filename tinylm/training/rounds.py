"""Multiple-round training (docs/paper.md §3): re-train, in later rounds, on the batches the model finds hard.

Round 0 trains on every packed sample. At the end of round r the model, frozen as it is (eval mode, no
grad, batched), scores every *group* of samples — a fixed, seeded grouping of the sample ids into groups of
``granularity`` samples (``"batch"``: the training batch size, as in the paper; ``"sample"``: one). With the
group losses l_1..l_N it draws N0 = rate × N groups without replacement from

    p_i = exp(l_i / T) / Σ_j exp(l_j / T)        (T = 1 in the paper)

with ``torch.multinomial(p, N0, replacement=False)`` and a seeded generator; the concatenation of the drawn
groups' sample ids is round r + 1's plan (``TextDataModule.set_round_plan``). ``sampling="uniform"`` draws
with equal probabilities instead: the control that separates "hard batches" from "more steps".

Rounds are Lightning epochs. The callback owns the schedule: it reloads the train dataloader every epoch and
sets ``max_steps`` to the exact optimizer steps of all rounds (a lower ``max_steps`` is kept: a token budget),
so training ends after the last round and the warmup + cosine schedule spans the whole run. The plan lives in the DataModule's checkpoint state and the
losses and draws in this callback's, so a run resumed mid-round continues the same plan exactly. Each round's
scores are also written to ``<out_dir>/round_<r+1>.npz`` (groups, loss, prob, drawn, plan) for analysis.

The samples left over when the data does not divide into whole groups (fewer than one group) are trained in
round 0 only.

Sample ids are block ids of the DataModule's training stream — the memmap cache or a prepared dataset, whose
blocks span its litdata chunks (``tinylm.data.chunks``) — so a plan addresses blocks across shards. Scoring is
spread over the ranks (DDP or FSDP): each rank scores an equal window of consecutive blocks through the strategy's
wrapped model (under FSDP the forward gathers each sharded layer, a collective, so every rank runs the same
forward calls: the last rank's window is moved back to end at the last block rather than left short), and the
losses are gathered with ``all_gather``. The plan equals one process's for the same data and seed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from tinylm.artifacts.io import atomic_file
from tinylm.data.datamodule import TrainingData
from tinylm.errors import TinyLMError
from tinylm.model.scoring import block_nll

SAMPLINGS = ("loss", "uniform")


def make_groups(num_samples: int, group_size: int, seed: int) -> np.ndarray:
    """A fixed, seeded grouping of sample ids: ``(num_samples // group_size, group_size)`` ids."""
    if group_size < 1 or group_size > num_samples:
        raise TinyLMError(
            f"granularity of {group_size} samples is larger than the dataset ({num_samples} samples); "
            "use a smaller granularity (e.g. 'sample') or more data"
        )
    order = torch.randperm(num_samples, generator=torch.Generator().manual_seed(seed)).numpy()
    count = num_samples // group_size
    return order[: count * group_size].reshape(count, group_size)


def num_draws(num_groups: int, rate: float) -> int:
    """N0 = rate × N, at least one group."""
    return max(1, round(rate * num_groups))


def sampling_probs(losses: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """p_i = exp(l_i/T) / Σ_j exp(l_j/T), in float64 so that a spread of losses does not underflow to zero."""
    return torch.softmax(losses.double() / temperature, dim=0)


def draw(
    losses: torch.Tensor, rate: float, temperature: float = 1.0, seed: int = 0, sampling: str = "loss"
) -> torch.Tensor:
    """Indices of the groups drawn for the next round, in draw order (without replacement)."""
    probs = sampling_probs(losses, temperature) if sampling == "loss" else torch.ones(len(losses), dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    return torch.multinomial(probs, num_draws(len(losses), rate), replacement=False, generator=generator)


def score_samples(
    model: torch.nn.Module, stream: np.ndarray, seq_len: int, start: int, stop: int, batch_size: int,
    device: torch.device | str = "cpu", context=None,
) -> torch.Tensor:
    """Mean next-token loss of each block ``start <= id < stop`` of a packed stream (float32, on CPU).

    Consecutive blocks are overlapping windows of one slice of the stream, so a batch is a view, no per-item copy.
    ``model(input_ids)`` must return logits; ``context`` is an optional autocast-like context factory.
    """
    def batches():
        for first in range(start, stop, batch_size):
            count = min(batch_size, stop - first)
            chunk = torch.from_numpy(stream[first * seq_len : (first + count) * seq_len + 1].astype(np.int64))
            yield chunk.unfold(0, seq_len + 1, seq_len)  # (count, seq_len + 1), neighbours share one token

    return block_nll(model, batches(), device=device, context=context).block_loss


def score_blocks(
    model: torch.nn.Module, stream: np.ndarray, seq_len: int, blocks: np.ndarray, batch_size: int,
    device: torch.device | str = "cpu", context=None,
) -> torch.Tensor:
    """Mean next-token loss of each listed block (any ids, any order) of a packed stream (float32, on CPU).

    The gathering counterpart of ``score_samples``, for probes: a sample of blocks scored many times.
    """
    def batches():
        for first in range(0, len(blocks), batch_size):
            ids = blocks[first : first + batch_size]
            rows = np.stack([stream[b * seq_len : (b + 1) * seq_len + 1] for b in ids])
            yield torch.from_numpy(rows.astype(np.int64))

    return block_nll(model, batches(), device=device, context=context).block_loss


def score_windows(total: int, world: int) -> tuple[list[int], int]:
    """``(starts, share)``: rank ``r`` scores blocks ``[starts[r], starts[r] + share)`` and owns
    ``[r·share, (r+1)·share) ∩ [0, total)``.

    Every window has the same length, so every rank runs the same forward calls (FSDP's gathers are collectives);
    the last windows are moved back to end at the last block instead of running short.
    """
    share = math.ceil(total / world)
    return [min(r * share, total - share) for r in range(world)], share


class MultiRoundTraining(L.Callback):
    """Train in rounds; after each round, the next round's plan is drawn from the hardest groups.

    Args:
        rounds: number of rounds (round 0 sees all data).
        rate: sampling rate N0/N of the rounds after the first: one value for all, or one per round.
        granularity: the unit that is scored and drawn: ``batch`` (the training batch size, the paper's),
            ``sample``, or a number of samples per group.
        temperature: T of the softmax over losses (1 = the paper's).
        sampling: ``loss`` (the paper's softmax over losses) or ``uniform`` (the random-resampling control).
        seed: seeds the grouping and each round's draw.
        score_batch_size: blocks per forward pass when scoring (default 4 × the training batch size).
        out_dir: where ``round_<r>.npz`` files go (default ``<log dir>/rounds``).
    """

    def __init__(
        self,
        rounds: int = 2,
        rate: float | list[float] = 0.5,
        granularity: str | int = "batch",
        temperature: float = 1.0,
        sampling: str = "loss",
        seed: int = 1234,
        score_batch_size: int | None = None,
        out_dir: str | None = None,
    ) -> None:
        if rounds < 1:
            raise TinyLMError(f"rounds={rounds}: train at least one round (1 = plain single-pass training)")
        rates = [float(rate)] * (rounds - 1) if isinstance(rate, (int, float)) else [float(r) for r in rate]
        if len(rates) != rounds - 1:
            raise TinyLMError(f"rate has {len(rates)} values for {rounds - 1} later rounds; give one value or {rounds - 1}")
        for value in rates:
            if not 0 < value <= 1:
                raise TinyLMError(f"sampling rate {value} is outside (0, 1]; use e.g. 0.5 to re-train on half the batches")
        if isinstance(granularity, str) and granularity not in ("batch", "sample"):
            if not granularity.isdigit():
                raise TinyLMError(f"granularity={granularity!r}: use 'batch', 'sample' or a number of samples")
            granularity = int(granularity)
        if isinstance(granularity, int) and granularity < 1:
            raise TinyLMError(f"granularity={granularity} must be a positive number of samples")
        if not temperature > 0:
            raise TinyLMError(f"temperature={temperature} must be positive (1 is the paper's)")
        if sampling not in SAMPLINGS:
            raise TinyLMError(f"sampling={sampling!r}: use one of {', '.join(SAMPLINGS)}")
        if score_batch_size is not None and score_batch_size < 1:
            raise TinyLMError(f"score_batch_size={score_batch_size} must be positive")
        self.rounds, self.rates, self.granularity = rounds, rates, granularity
        self.temperature, self.sampling, self.seed = temperature, sampling, seed
        self.score_batch_size, self.out_dir = score_batch_size, out_dir
        self.groups: np.ndarray | None = None
        self.records: dict[int, dict[str, torch.Tensor]] = {}  # round → its plan's losses and draws

    @property
    def _legacy_state_key(self) -> str:
        """The key checkpoints written before the settings were checked used (so those still resume)."""
        return self._generate_state_key(rounds=self.rounds, sampling=self.sampling)

    # ---- the schedule ----------------------------------------------------------------------------------
    def group_size(self, batch_size: int) -> int:
        """Samples per scored and drawn group."""
        return {"batch": batch_size, "sample": 1}.get(self.granularity, self.granularity)

    def round_samples(self, num_samples: int, group_size: int) -> list[int]:
        """Samples trained in each round."""
        num_groups = num_samples // group_size
        return [num_samples] + [num_draws(num_groups, rate) * group_size for rate in self.rates]

    def round_steps(self, num_samples: int, batch_size: int, world_size: int = 1, accumulate: int = 1) -> list[int]:
        """Optimizer steps of each round (the sampler drops the last partial batch of every rank)."""
        steps = []
        for index, samples in enumerate(self.round_samples(num_samples, self.group_size(batch_size))):
            batches = samples // world_size // batch_size
            if batches == 0:
                raise TinyLMError(
                    f"round {index} would train on {samples} samples, less than one batch of "
                    f"{batch_size * world_size}; raise the sampling rate or lower the batch size"
                )
            steps.append(math.ceil(batches / accumulate))
        return steps

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        data: TrainingData | None = trainer.datamodule
        if data is None or not hasattr(data, "set_round_plan"):
            raise TinyLMError("MultiRoundTraining needs a TextDataModule (trainer.fit(..., datamodule=...))")
        # resolved on every rank: trainer.log_dir is a collective, and only rank 0 writes (in write())
        self.folder = Path(self.out_dir or Path(trainer.log_dir or trainer.default_root_dir) / "rounds")
        self.groups = make_groups(data.num_train_blocks, self.group_size(data.batch_size), self.seed)
        steps = sum(self.round_steps(data.num_train_blocks, data.batch_size, trainer.world_size,
                                     trainer.accumulate_grad_batches))
        # The run ends by steps, not epochs: with max_epochs = -1 Lightning's step estimate (which the LR schedule
        # spans) is max_steps itself, not rounds × the current loader's length — that length changes per round.
        # Trainer.max_steps/max_epochs have no setters: the loops' attributes (tests/training/test_lightning_contract.py)
        trainer.fit_loop.max_epochs = -1
        trainer.reload_dataloaders_every_n_epochs = 1
        if trainer.max_steps == -1 or trainer.max_steps > steps:
            trainer.fit_loop.epoch_loop.max_steps = steps

    # ---- plan the next round at the end of each one ----------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a checkpoint taken after a round's last batch resumes past on_train_epoch_end: plan the round here
        self._plan(trainer, pl_module, trainer.current_epoch)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        record = self._plan(trainer, pl_module, trainer.current_epoch + 1)
        if record is not None:
            loss, drawn = record["loss"], record["drawn"]
            pl_module.log_dict({"rounds/mean_loss": loss.mean(), "rounds/drawn_loss": loss[drawn].mean()},
                               rank_zero_only=True)

    def _plan(self, trainer: L.Trainer, pl_module: L.LightningModule, round_index: int) -> dict | None:
        if not 0 < round_index < self.rounds or round_index in self.records:
            return None
        data: TrainingData = trainer.datamodule
        sample_loss = self.score(trainer, pl_module)
        loss = sample_loss[torch.from_numpy(self.groups)].mean(dim=1)
        drawn = draw(loss, self.rates[round_index - 1], self.temperature, self.seed + round_index, self.sampling)
        plan = self.groups[drawn.numpy()].reshape(-1)
        self.records[round_index] = {"loss": loss, "drawn": drawn}
        data.set_round_plan(plan)
        if trainer.is_global_zero:
            self.write(trainer, round_index, loss, drawn, plan)
        return self.records[round_index]

    def score(self, trainer: L.Trainer, pl_module: L.LightningModule) -> torch.Tensor:
        """Loss of every training sample under the model as it is now; shards over ranks and gathers."""
        data: TrainingData = trainer.datamodule
        total, world = data.num_train_blocks, trainer.world_size
        starts, share = score_windows(total, world)
        start = starts[trainer.global_rank]
        model = trainer.strategy.model or pl_module  # the DDP/FSDP wrapper: FSDP gathers the shards in its forward
        was_training = model.training
        model.eval()
        try:
            local = score_samples(model, data.train_stream, data.seq_len, start, start + share,
                                  self.score_batch_size or 4 * data.batch_size, pl_module.device,
                                  trainer.precision_plugin.forward_context)
        finally:
            model.train(was_training)
        if world == 1:
            return local
        gathered = pl_module.all_gather(local.to(pl_module.device)).cpu()  # (world, share)
        return torch.cat([gathered[r, r * share - starts[r]:] for r in range(world)])[:total]

    def write(self, trainer: L.Trainer, round_index: int, loss: torch.Tensor, drawn: torch.Tensor,
              plan: np.ndarray) -> None:
        folder = self.folder
        probs = sampling_probs(loss, self.temperature) if self.sampling == "loss" else \
            torch.full((len(loss),), 1.0 / len(loss), dtype=torch.float64)
        with atomic_file(folder / f"round_{round_index}.npz", "wb") as handle:
            np.savez(handle, groups=self.groups, loss=loss.numpy(), prob=probs.numpy(), drawn=drawn.numpy(),
                     drawn_loss=loss[drawn].numpy(), plan=plan, rate=self.rates[round_index - 1],
                     temperature=self.temperature, sampling=self.sampling, seed=self.seed)

    # ---- checkpointed state ----------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """What decides the plan: a resume with other values would not continue the same run."""
        return {"rounds": self.rounds, "rate": self.rates, "granularity": self.granularity,
                "temperature": self.temperature, "sampling": self.sampling, "seed": self.seed}

    def state_dict(self) -> dict[str, Any]:
        return {"records": {r: dict(v) for r, v in self.records.items()}, "settings": self.settings()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, saved in state.get("settings", {}).items():
            if saved != self.settings()[name]:
                raise TinyLMError(f"the checkpoint was trained with rounds setting {name}={saved}, this run asks for "
                                  f"{name}={self.settings()[name]}; resume with the checkpoint's value, or start a "
                                  "new run without --ckpt_path")
        self.records = {int(r): dict(v) for r, v in state.get("records", {}).items()}
