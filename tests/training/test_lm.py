"""LanguageModel: exact resume, the learning-rate rule, vocab checks, and the model dir it writes."""

from __future__ import annotations

import math
import os
import signal

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from tinylm.artifacts.model_dir import load_model_dir, read_provenance
from tinylm.data.datamodule import TextDataModule
from tinylm.errors import TinyLMError
from tinylm.model import ModelConfig
from tinylm.training.fit import fit
from tinylm.training.lm import LanguageModel
from tinylm.training.optim import scaled_lr, warmup_cosine


class LossRecorder(L.Callback):
    def __init__(self) -> None:
        self.losses: dict[int, float] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses[trainer.global_step] = outputs["loss"].item()


def data(corpus_dir, tokenizer, cache, **kwargs) -> TextDataModule:
    settings = dict(seq_len=32, batch_size=4, val_every=10) | kwargs
    return TextDataModule(sources=str(corpus_dir), tokenizer=str(tokenizer.path), cache_dir=str(cache), **settings)


def module(**kwargs) -> LanguageModel:
    return LanguageModel(ModelConfig.from_preset("debug"), lr=3e-3, warmup=0.1, **kwargs)


def test_resume_mid_epoch_reproduces_the_uninterrupted_losses(corpus_dir, tokenizer, tmp_path):
    # a short epoch so the run crosses an epoch boundary after the resume point
    sources = sorted(corpus_dir.glob("kjv-00*.txt"))[:6]
    (tmp_path / "c").mkdir()
    for s in sources:
        (tmp_path / "c" / s.name).write_text(s.read_text())
    make_data = lambda: data(tmp_path / "c", tokenizer, tmp_path / "cache", val_every=6)  # noqa: E731
    probe = make_data()
    probe.prepare_data(), probe.setup()
    steps_per_epoch = probe.num_train_blocks // 4
    total = steps_per_epoch + 4
    resume_at = steps_per_epoch - 2
    assert resume_at >= 2

    full = LossRecorder()
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=resume_at, save_top_k=-1)
    fit(module(), make_data(), tmp_path / "a", max_steps=total, callbacks=[full, checkpoint])

    resumed = LossRecorder()
    path = next((tmp_path / "ckpt").glob(f"*step={resume_at}.ckpt"))
    fit(module(), make_data(), tmp_path / "b", max_steps=total, callbacks=[resumed], ckpt_path=str(path))
    assert sorted(resumed.losses) == list(range(resume_at + 1, total + 1))
    for step, loss in resumed.losses.items():
        assert loss == full.losses[step], f"step {step}: {loss} != {full.losses[step]}"


def test_fit_writes_a_model_dir_with_provenance(corpus_dir, tokenizer, tmp_path):
    trainer = fit(module(model_dir=str(tmp_path / "out")), data(corpus_dir, tokenizer, tmp_path / "cache"),
                  tmp_path / "run", max_steps=3, limit_val_batches=2)
    model, tok = load_model_dir(tmp_path / "out")
    assert tok.sha256 == tokenizer.sha256 and model.config.vocab_size == tokenizer.vocab_size
    record = read_provenance(tmp_path / "out")
    assert record["tokens_seen"] == 3 * 4 * 32 and record["global_step"] == 3
    assert record["data"]["seq_len"] == 32
    bpb = trainer.callback_metrics["val/bpb"].item()
    assert 0 < bpb < math.log2(tokenizer.vocab_size) * 3


def test_init_from_a_model_dir_starts_from_its_weights(model_dir_factory):
    lm = LanguageModel(init_from=str(model_dir_factory("debug")))
    lm.configure_model()  # no trainer: the shape and weights come from the model dir alone
    source, _ = load_model_dir(model_dir_factory("debug"))
    assert lm.config == source.config
    for name, tensor in source.state_dict().items():
        assert torch.equal(lm.net.state_dict()[name], tensor), name


def test_vocab_mismatch_between_tokenizer_and_model(corpus_dir, tokenizer, tmp_path):
    lm = LanguageModel(ModelConfig.from_preset("debug", vocab_size=tokenizer.vocab_size + 5))
    with pytest.raises(TinyLMError, match="tokenizer/model vocab mismatch"):
        fit(lm, data(corpus_dir, tokenizer, tmp_path / "cache"), tmp_path / "run", max_steps=1)


def test_nan_loss_stops_with_a_clear_error(corpus_dir, tokenizer, tmp_path):
    lm = LanguageModel(ModelConfig.from_preset("debug"), lr=1e30, warmup=0.0)
    with pytest.raises(TinyLMError, match="training loss became nan"):
        fit(lm, data(corpus_dir, tokenizer, tmp_path / "cache"), tmp_path / "run", max_steps=20)


def test_learning_rate_rule_and_schedule():
    assert scaled_lr(1_048_576, r=0.5) == pytest.approx(1e-4)
    assert scaled_lr(4 * 1_048_576, r=0.5) == pytest.approx(2e-4)
    assert scaled_lr(4 * 1_048_576, r=1.0) == pytest.approx(4e-4)
    assert scaled_lr(262_144, r=1.0, lr0=1e-3, bs0_tokens=1_048_576) == pytest.approx(2.5e-4)
    lrs = [warmup_cosine(s, 100, 10, 1.0, 0.1) for s in range(101)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[100] == pytest.approx(0.1) and all(a >= b for a, b in zip(lrs[9:], lrs[10:]))


def test_scaled_lr_is_used_for_the_global_batch(corpus_dir, tokenizer, tmp_path):
    lm = LanguageModel(ModelConfig.from_preset("debug"), lr=1e-3, lr_scaling_r=1.0, lr_scaling_bs0=256, warmup=0.0)
    seen = {}

    class Peek(L.Callback):
        def on_train_start(self, trainer, pl_module):
            seen["lr"] = trainer.optimizers[0].param_groups[0]["initial_lr"]

    fit(lm, data(corpus_dir, tokenizer, tmp_path / "cache"), tmp_path / "run", max_steps=1, callbacks=[Peek()],
        accumulate_grad_batches=2)
    assert seen["lr"] == pytest.approx(1e-3 * (4 * 32 * 2) / 256)


class Diverge(L.Callback):
    """An update that leaves a NaN in the weights while the step's loss was still finite."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == 2:
            with torch.no_grad():
                pl_module.head_weight[0, 0] = float("nan")


def test_diverged_weights_are_never_checkpointed(corpus_dir, tokenizer, tmp_path):
    every_step = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_top_k=-1, save_last=True)
    with pytest.raises(TinyLMError, match="weights became non-finite .* at step 2; no checkpoint was written"):
        fit(module(), data(corpus_dir, tokenizer, tmp_path / "cache"), tmp_path / "run", max_steps=5,
            callbacks=[Diverge(), every_step])
    saved = sorted(p.name for p in (tmp_path / "ckpt").glob("*.ckpt"))
    assert saved == ["epoch=0-step=1.ckpt", "last.ckpt"]  # the last good step, and nothing after it
    for name in saved:
        state = torch.load(tmp_path / "ckpt" / name, weights_only=True)["state_dict"]
        assert all(torch.isfinite(t).all() for t in state.values()), name


def test_zero_steps_and_a_learning_rate_that_trains_nothing_are_refused(corpus_dir, tokenizer, tmp_path):
    with pytest.raises(TinyLMError, match="max_steps=0 trains nothing"):
        fit(module(model_dir=str(tmp_path / "out")), data(corpus_dir, tokenizer, tmp_path / "cache"), tmp_path / "run",
            max_steps=0)
    assert not (tmp_path / "out").exists()
    for lr in (0.0, -1e-3):
        with pytest.raises(TinyLMError, match="learning rate must be positive"):
            LanguageModel(ModelConfig.from_preset("debug"), lr=lr)


def test_the_model_dir_is_checked_before_training(corpus_dir, tokenizer, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("precious")
    recorder = LossRecorder()
    with pytest.raises(TinyLMError, match="exists and is not empty"):
        fit(module(model_dir=str(tmp_path / "out")), data(corpus_dir, tokenizer, tmp_path / "cache"),
            tmp_path / "run", max_steps=2, callbacks=[recorder])
    assert recorder.losses == {}  # refused before the first step
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["mine.txt"]
    fit(module(model_dir=str(tmp_path / "model")), data(corpus_dir, tokenizer, tmp_path / "cache"), tmp_path / "r2",
        max_steps=1)
    fit(module(model_dir=str(tmp_path / "model"), overwrite=True), data(corpus_dir, tokenizer, tmp_path / "cache"),
        tmp_path / "r3", max_steps=2)  # a model dir tinylm wrote may be replaced, when asked to
    assert read_provenance(tmp_path / "model")["global_step"] == 2


def test_the_text_datamodule_fulfils_the_declared_contract(corpus_dir, tokenizer, tmp_path):
    from tinylm.data.datamodule import TrainingData

    datamodule = data(corpus_dir, tokenizer, tmp_path / "cache")
    datamodule.setup("fit")
    assert isinstance(datamodule, TrainingData)
    members = [name for name in vars(TrainingData) if not name.startswith("_")] + \
        list(TrainingData.__annotations__)
    assert {"tokenizer", "seq_len", "batch_size", "train_stream", "num_train_blocks", "set_round_plan"} <= set(members)
    assert not isinstance(object(), TrainingData)


def test_a_sigterm_during_validation_also_saves_and_stops(corpus_dir, tokenizer, tmp_path):
    """A signal during validation (here the sanity check): Lightning raises its SIGTERMException there, a silent
    exit 0; the run saves checkpoints/last.ckpt and stops with exit status 143 instead."""
    from tinylm.training.runs import Stopped

    class EarlySigterm(L.Callback):
        def on_validation_batch_start(self, trainer, *args) -> None:  # the sanity check, before any step
            if not trainer.received_sigterm:
                os.kill(os.getpid(), signal.SIGTERM)  # Lightning's handler, installed for fit, notes it

    with pytest.raises(Stopped) as stopped:
        fit(module(), data(corpus_dir, tokenizer, tmp_path / "cache"), tmp_path / "run", max_steps=50,
            callbacks=[EarlySigterm(), ModelCheckpoint(dirpath=tmp_path / "run" / "checkpoints")])
    assert stopped.value.code == 143 and "stopped by SIGTERM after step" in stopped.value.message
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
