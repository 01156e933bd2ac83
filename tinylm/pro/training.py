"""Stage 4, training: one arm (Pro from the inherited model, scratch from a random init, or distilled) on the
training sample in rounds, at the paper's batch-size lr rule."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint

from tinylm.data.datamodule import TextDataModule
from tinylm.model import ModelConfig
from tinylm.pro.distill import DistilledLanguageModel
from tinylm.pro.stages import stage_record
from tinylm.training.fit import fit
from tinylm.training.lm import LanguageModel
from tinylm.training.optim import scaled_lr
from tinylm.training.rounds import MultiRoundTraining
from tinylm.training.runs import LAST, trim_metrics

CHECKPOINTS = 10  # checkpoints per arm: a killed run loses at most a tenth of its training


def train_arm(tmp: Path, arm: str, shape: ModelConfig, init: Path | None, data_dir: Path, compact: Path,
              recipe: dict[str, Any], distill: float, work: Path) -> dict[str, Any]:
    """Train one arm on the training sample in rounds; writes ``model/``, ``logs/`` and ``rounds/``.

    Training runs in ``work`` (kept outside the stage's temp folder, named by the stage's hash): it holds the
    checkpoints, logs and round plans, so a killed run resumes from its last checkpoint, exactly, and the
    finished arm's logs and rounds are copied into the stage folder.
    """
    every = stage_record(data_dir)["result"]["fit_val_every"]
    data = TextDataModule(sources=[str(data_dir / "train.jsonl")], tokenizer=str(compact), seq_len=recipe["seq_len"],
                          batch_size=recipe["batch_size"], val_every=every, seed=recipe["seed"])
    data.prepare_data()
    data.setup("fit")
    rounds = MultiRoundTraining(rounds=recipe["rounds"], rate=recipe["rate"], seed=recipe["seed"],
                                out_dir=str(work / "rounds"))
    steps = sum(rounds.round_steps(data.num_train_blocks, recipe["batch_size"]))
    batch_tokens = recipe["batch_size"] * recipe["seq_len"]
    lr = scaled_lr(batch_tokens, recipe["lr_scaling_r"], recipe["lr"], recipe["lr_scaling_bs0"])
    # the recipe's rule keys are LanguageModel's own arguments
    common = dict(lr=recipe["lr"], min_lr=lr * recipe["min_lr_ratio"], warmup=recipe["warmup"],
                  lr_scaling_r=recipe["lr_scaling_r"], lr_scaling_bs0=recipe["lr_scaling_bs0"],
                  model_dir=str(tmp / "model"))
    init_from = None if init is None else str(init)  # the inherited model dir (same shape) or a random init
    if arm == "distill":
        module = DistilledLanguageModel(teacher=str(compact), distill=distill, config=shape, init_from=init_from,
                                        **common)
    else:
        module = LanguageModel(config=shape, init_from=init_from, **common)
    module.announce_model_dir = False  # it lands in the stage's temp folder; the stage names the final one
    print(f"tinylm pro: training {arm} (seed {recipe['seed']}): {steps} steps × {batch_tokens} tokens in "
          f"{recipe['rounds']} round(s), "
          f"lr = ({batch_tokens}/{recipe['lr_scaling_bs0']})^{recipe['lr_scaling_r']} × {recipe['lr']:g} = {lr:.2e}",
          flush=True)
    last = work / "checkpoints" / LAST
    resume = str(last) if last.is_file() else None
    if resume:
        step = trim_metrics(work, last)  # rows the killed run logged after its checkpoint are trained again
        print(f"tinylm pro: training {arm} (seed {recipe['seed']}): resuming at step {step} from {last}", flush=True)
    checkpoints = ModelCheckpoint(dirpath=str(work / "checkpoints"), every_n_train_steps=max(1, steps // CHECKPOINTS),
                                  save_last=True, save_top_k=0)
    start = time.perf_counter()
    trainer = fit(module, data, work, max_steps=steps, seed=recipe["seed"], val_check_interval=max(1, steps // 8),
                  callbacks=[rounds, checkpoints], ckpt_path=resume, flush_logs_every_n_steps=1)
    seconds = time.perf_counter() - start
    for name in ("logs", "rounds"):
        shutil.copytree(work / name, tmp / name)
    return {"model": "model", "steps": trainer.global_step, "tokens": module.tokens_seen, "lr": lr,
            "train_blocks": data.num_train_blocks, "seconds": round(seconds, 1),
            "final_val_bpb": float(trainer.callback_metrics.get("val/bpb", float("nan")))}
