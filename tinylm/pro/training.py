"""Stage 4, training: one arm (Pro from the inherited model, scratch from a random init, or distilled) on the
training sample in rounds, at the paper's batch-size lr rule."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tinylm.lm import LanguageModel
from tinylm.model import ModelConfig
from tinylm.pro.distill import DistilledLanguageModel
from tinylm.pro.stages import stage_record


def train_arm(tmp: Path, arm: str, shape: ModelConfig, init: Path | None, data_dir: Path, compact: Path,
              recipe: dict[str, Any], distill: float) -> dict[str, Any]:
    """Train one arm on the training sample in rounds; writes ``model/`` and ``logs/``."""
    from tinylm.datamodule import TextDataModule
    from tinylm.optim import scaled_lr
    from tinylm.rounds import MultiRoundTraining
    from tinylm.train import fit

    every = stage_record(data_dir)["result"]["fit_val_every"]
    data = TextDataModule(sources=[str(data_dir / "train.jsonl")], tokenizer=str(compact), seq_len=recipe["seq_len"],
                          batch_size=recipe["batch_size"], val_every=every, seed=recipe["seed"])
    data.prepare_data()
    data.setup("fit")
    rounds = MultiRoundTraining(rounds=recipe["rounds"], rate=recipe["rate"], seed=recipe["seed"],
                                out_dir=str(tmp / "rounds"))
    steps = sum(rounds.round_steps(data.num_train_blocks, recipe["batch_size"]))
    batch_tokens = recipe["batch_size"] * recipe["seq_len"]
    lr = scaled_lr(batch_tokens, recipe["lr_r"], recipe["lr0"], recipe["bs0"])
    common = dict(lr=recipe["lr0"], min_lr=lr * recipe["min_lr_ratio"], warmup=recipe["warmup"],
                  lr_scaling_r=recipe["lr_r"], lr_scaling_bs0=recipe["bs0"], model_dir=str(tmp / "model"))
    init_from = None if init is None else str(init)  # the inherited model dir (same shape) or a random init
    if arm == "distill":
        module = DistilledLanguageModel(teacher=str(compact), distill=distill, config=shape, init_from=init_from,
                                        **common)
    else:
        module = LanguageModel(config=shape, init_from=init_from, **common)
    print(f"tinylm pro: training {arm}: {steps} steps × {batch_tokens} tokens in {recipe['rounds']} round(s), "
          f"lr = ({batch_tokens}/{recipe['bs0']})^{recipe['lr_r']} × {recipe['lr0']:g} = {lr:.2e}", flush=True)
    start = time.perf_counter()
    trainer = fit(module, data, tmp, max_steps=steps, seed=recipe["seed"], val_check_interval=max(1, steps // 8),
                  callbacks=[rounds])
    seconds = time.perf_counter() - start
    return {"model": "model", "steps": trainer.global_step, "tokens": module.tokens_seen, "lr": lr,
            "train_blocks": data.num_train_blocks, "seconds": round(seconds, 1),
            "final_val_bpb": float(trainer.callback_metrics.get("val/bpb", float("nan")))}
