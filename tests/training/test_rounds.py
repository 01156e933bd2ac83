"""Multiple-round training: the draw, the plan it hands the DataModule, exact resume, and bad input."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from scipy.stats import spearmanr

from tinylm.data.corpus import BUILTIN, resolve
from tinylm.data.datamodule import TextDataModule
from tinylm.data.prepared import prepare
from tinylm.errors import TinyLMError
from tinylm.model import ModelConfig, Transformer, cross_entropy
from tinylm.training.lm import LanguageModel
from tinylm.training.rounds import MultiRoundTraining, draw, make_groups, score_blocks, score_samples, score_windows


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    """A few KB of real text as one-document files, and a private cache."""
    root = tmp_path_factory.mktemp("rounds")
    folder = root / "corpus"
    folder.mkdir()
    for index, doc in enumerate(BUILTIN["lee"]()):
        if index == 24:
            break
        (folder / f"{index:03d}.txt").write_text(doc, encoding="utf-8")
    return folder, root / "cache"


def make_data(corpus, batch_size: int = 8) -> TextDataModule:
    folder, cache = corpus
    return TextDataModule(sources=str(folder), vocab_size=400, seq_len=16, batch_size=batch_size, val_every=6,
                          cache_dir=str(cache))


def make_module() -> LanguageModel:
    return LanguageModel(ModelConfig.from_preset("debug"), lr=3e-3, warmup=0.1)


class LossRecorder(L.Callback):
    """Training loss per optimizer step, and the sample ids each round trained on."""

    def __init__(self) -> None:
        self.losses: dict[int, float] = {}
        self.epoch_ids: dict[int, list[int]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses[trainer.global_step] = outputs["loss"].item()
        self.epoch_ids.setdefault(trainer.current_epoch, []).extend(batch["sample_id"].tolist())


class Killed(Exception):
    pass


class KillAt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise Killed


class Snapshot(L.Callback):
    """The network's weights at the end of each epoch (before the rounds callback scores it)."""

    def __init__(self) -> None:
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.weights[trainer.current_epoch] = {k: v.clone() for k, v in pl_module.net.state_dict().items()}


def trainer(root: Path, callbacks: list[L.Callback]) -> L.Trainer:
    L.seed_everything(7, verbose=False)
    return L.Trainer(default_root_dir=str(root), accelerator="cpu", devices=1, logger=False, limit_val_batches=0,
                     enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=1.0,
                     enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
                     callbacks=callbacks)


# ---- the draw ------------------------------------------------------------------------------------------
def test_draw_matches_an_independent_softmax_multinomial():
    losses = torch.tensor([2.0, 3.5, 1.0, 4.2, 2.8, 3.3, 0.5, 5.0, 2.2, 3.9])
    for temperature in (1.0, 0.5):
        weights = np.exp(losses.numpy().astype(np.float64) / temperature)
        probs = torch.from_numpy(weights / weights.sum())
        expected = torch.multinomial(probs, 4, replacement=False, generator=torch.Generator().manual_seed(11))
        assert draw(losses, 0.4, temperature, seed=11).tolist() == expected.tolist()
    uniform = torch.multinomial(torch.ones(10, dtype=torch.float64), 4, replacement=False,
                                generator=torch.Generator().manual_seed(3))
    assert draw(losses, 0.4, seed=3, sampling="uniform").tolist() == uniform.tolist()


def test_rate_one_draws_every_batch_exactly_once():
    losses = torch.rand(37) * 5
    for seed in range(5):
        assert sorted(draw(losses, 1.0, seed=seed).tolist()) == list(range(37))
    groups = make_groups(100, 8, seed=1)
    assert groups.shape == (12, 8) and len(np.unique(groups)) == 96


def test_hard_batches_are_drawn_more_often_than_easy_ones():
    losses = torch.linspace(1.0, 4.0, 12)
    counts = np.zeros(12)
    for seed in range(400):
        counts[draw(losses, 0.25, seed=seed).numpy()] += 1
    assert counts[-1] > 3 * counts[0]
    assert spearmanr(np.arange(12), counts).statistic > 0.95
    uniform = np.zeros(12)
    for seed in range(400):
        uniform[draw(losses, 0.25, seed=seed, sampling="uniform").numpy()] += 1
    assert abs(spearmanr(np.arange(12), uniform).statistic) < 0.8


def test_scoring_equals_one_block_at_a_time():
    torch.manual_seed(0)
    net = Transformer(ModelConfig.from_preset("debug", vocab_size=50)).eval()
    stream = np.random.default_rng(0).integers(0, 50, size=16 * 11 + 1).astype(np.uint16)
    batched = score_samples(net, stream, 16, 2, 11, batch_size=4)
    with torch.no_grad():
        single = [cross_entropy(net(torch.from_numpy(stream[i * 16 : i * 16 + 16].astype(np.int64))[None]),
                                torch.from_numpy(stream[i * 16 + 1 : i * 16 + 17].astype(np.int64))[None]).item()
                  for i in range(2, 11)]
    torch.testing.assert_close(batched, torch.tensor(single), rtol=1e-5, atol=1e-5)


def test_gathered_blocks_score_as_the_contiguous_ones():
    torch.manual_seed(0)
    net = Transformer(ModelConfig.from_preset("debug", vocab_size=50)).eval()
    stream = np.random.default_rng(0).integers(0, 50, size=16 * 11 + 1).astype(np.uint16)
    every = score_samples(net, stream, 16, 0, 11, batch_size=4)
    picked = np.array([9, 2, 10, 5, 0])
    torch.testing.assert_close(score_blocks(net, stream, 16, picked, batch_size=3), every[picked], rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("total,world", [(11, 1), (11, 2), (12, 4), (5, 4), (7, 3), (100, 8), (3, 3)])
def test_every_rank_scores_an_equal_window_and_each_block_is_owned_once(total, world):
    """Equal windows mean equal forward calls on every rank (FSDP's gathers are collectives); the owned parts,
    gathered as ``score`` does, are every block once, in order."""
    starts, share = score_windows(total, world)
    assert all(0 <= start and start + share <= total for start in starts)
    losses = torch.arange(total, dtype=torch.float32)  # a block's "loss" is its id
    gathered = torch.stack([losses[start : start + share] for start in starts])
    owned = torch.cat([gathered[r, r * share - starts[r]:] for r in range(world)])[:total]
    assert owned.tolist() == list(range(total))


# ---- the plan the callback hands the DataModule --------------------------------------------------------
def test_round_plan_is_the_draw_over_the_frozen_models_batch_losses(corpus, tmp_path):
    data, snapshot, recorder = make_data(corpus), Snapshot(), LossRecorder()
    rounds = MultiRoundTraining(rounds=2, rate=0.5, seed=5, out_dir=str(tmp_path / "rounds"))
    trainer(tmp_path, [snapshot, rounds, recorder]).fit(make_module(), datamodule=data)

    saved = np.load(tmp_path / "rounds" / "round_1.npz")
    groups = make_groups(data.num_train_blocks, 8, seed=5)
    np.testing.assert_array_equal(saved["groups"], groups)
    # an independent scoring of the round-0 model, one block at a time
    net = Transformer(make_module().config.with_vocab(data.tokenizer.vocab_size)).eval()
    net.load_state_dict(snapshot.weights[0])
    with torch.no_grad():
        blocks = data.train_blocks()
        per_sample = torch.tensor([
            cross_entropy(net(blocks[i]["input_ids"][None]), blocks[i]["labels"][None]).item()
            for i in range(len(blocks))
        ])
    loss = per_sample[torch.from_numpy(groups)].mean(dim=1)
    torch.testing.assert_close(torch.from_numpy(saved["loss"]), loss, rtol=1e-5, atol=1e-5)
    expected = draw(torch.from_numpy(saved["loss"]), 0.5, 1.0, seed=5 + 1)
    np.testing.assert_array_equal(saved["drawn"], expected.numpy())
    np.testing.assert_array_equal(saved["plan"], groups[expected.numpy()].reshape(-1))
    np.testing.assert_array_equal(data.round_plan, saved["plan"])
    # round 0 trained on everything, round 1 on exactly the plan's samples (in a shuffled order)
    assert len(recorder.epoch_ids[0]) == data.num_train_blocks // 8 * 8
    assert sorted(recorder.epoch_ids[1]) == sorted(saved["plan"].tolist())
    assert len(recorder.losses) == data.num_train_blocks // 8 + len(expected)


def test_the_plan_over_a_prepared_dataset_is_the_plan_over_the_memmap_cache(corpus, tmp_path):
    """Block ids address the same blocks across the prepared dataset's chunks: the same scores, draws and plan."""
    memmap = make_data(corpus)
    memmap.prepare_data()
    memmap.setup("fit")
    prepare(resolve(str(corpus[0])), memmap.tokenizer, tmp_path / "prepared", workers=2, val_every=6,
            unit_chars=2000, chunk_bytes="3KB")
    chunked = TextDataModule(prepared=str(tmp_path / "prepared"), seq_len=16, batch_size=8,
                             cache_dir=str(tmp_path / "cache"))
    plans = []
    for name, data in (("memmap", make_data(corpus)), ("prepared", chunked)):
        rounds = MultiRoundTraining(rounds=2, rate=0.5, seed=5, out_dir=str(tmp_path / name))
        trainer(tmp_path / name, [rounds]).fit(make_module(), datamodule=data)
        plans.append(np.load(tmp_path / name / "round_1.npz"))
    assert len(chunked.train_stream.chunks) > 2
    for key in ("groups", "loss", "drawn", "plan"):
        np.testing.assert_array_equal(plans[0][key], plans[1][key])


# ---- exact resume --------------------------------------------------------------------------------------
def test_kill_and_resume_in_round_two_reproduces_the_losses(corpus, tmp_path):
    def callbacks():
        return [MultiRoundTraining(rounds=3, rate=[0.5, 0.25], seed=2), LossRecorder()]

    data = make_data(corpus)
    uninterrupted = callbacks()
    trainer(tmp_path / "a", uninterrupted).fit(make_module(), datamodule=data)
    full = uninterrupted[1].losses
    round_steps = [data.num_train_blocks // 8, len(uninterrupted[0].records[1]["drawn"]),
                   len(uninterrupted[0].records[2]["drawn"])]
    assert len(full) == sum(round_steps)

    # kill a few steps after a checkpoint in the middle of round 2 (the third round)
    saved_at = round_steps[0] + round_steps[1] + round_steps[2] // 2
    checkpoint = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), every_n_train_steps=saved_at, save_top_k=-1)
    with pytest.raises(Killed):
        trainer(tmp_path / "b", callbacks() + [checkpoint, KillAt(saved_at + 3)]).fit(make_module(),
                                                                                      datamodule=make_data(corpus))
    resumed = callbacks()
    trainer(tmp_path / "c", resumed).fit(make_module(), datamodule=make_data(corpus),
                                         ckpt_path=str(tmp_path / "ckpt" / f"epoch=2-step={saved_at}.ckpt"))
    after = {step: loss for step, loss in full.items() if step > saved_at}
    assert resumed[1].losses == after
    assert resumed[0].records[2]["drawn"].tolist() == uninterrupted[0].records[2]["drawn"].tolist()


def test_resume_from_a_checkpoint_taken_at_a_rounds_last_batch(corpus, tmp_path):
    data = make_data(corpus)
    uninterrupted = [MultiRoundTraining(rounds=2, rate=0.5, seed=4), LossRecorder()]
    trainer(tmp_path / "a", uninterrupted).fit(make_module(), datamodule=data)
    first = data.num_train_blocks // 8  # round 0's last step: resumed past on_train_epoch_end
    checkpoint = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), every_n_train_steps=first, save_top_k=1)
    with pytest.raises(Killed):
        trainer(tmp_path / "b", [MultiRoundTraining(rounds=2, rate=0.5, seed=4), checkpoint, KillAt(first + 1)]
                ).fit(make_module(), datamodule=make_data(corpus))
    resumed = [MultiRoundTraining(rounds=2, rate=0.5, seed=4), LossRecorder()]
    trainer(tmp_path / "c", resumed).fit(make_module(), datamodule=make_data(corpus),
                                         ckpt_path=str(tmp_path / "ckpt" / f"epoch=0-step={first}.ckpt"))
    assert resumed[1].losses == {s: v for s, v in uninterrupted[1].losses.items() if s > first}


# ---- bad input -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [0.0, -0.5, 1.5])
def test_rate_outside_zero_one_is_refused(rate):
    with pytest.raises(TinyLMError, match=r"outside \(0, 1\]"):
        MultiRoundTraining(rounds=2, rate=rate)


def test_zero_rounds_and_other_settings_are_refused():
    with pytest.raises(TinyLMError, match="at least one round"):
        MultiRoundTraining(rounds=0)
    with pytest.raises(TinyLMError, match="2 later rounds"):
        MultiRoundTraining(rounds=3, rate=[0.5])
    with pytest.raises(TinyLMError, match="granularity"):
        MultiRoundTraining(granularity="epoch")
    with pytest.raises(TinyLMError, match="temperature"):
        MultiRoundTraining(temperature=0)
    with pytest.raises(TinyLMError, match="sampling"):
        MultiRoundTraining(sampling="easy")


def test_granularity_larger_than_the_dataset_is_refused(corpus, tmp_path):
    with pytest.raises(TinyLMError, match="larger than the dataset"):
        make_groups(10, 11, seed=0)
    with pytest.raises(TinyLMError, match="larger than the dataset"):
        trainer(tmp_path, [MultiRoundTraining(rounds=2, granularity=10**6)]).fit(make_module(),
                                                                                 datamodule=make_data(corpus))


def test_resume_with_other_round_settings_is_refused(corpus, tmp_path):
    checkpoint = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), every_n_train_steps=2, save_top_k=1)
    with pytest.raises(Killed):
        trainer(tmp_path / "a", [MultiRoundTraining(rounds=2, rate=0.5, seed=4), checkpoint, KillAt(3)]
                ).fit(make_module(), datamodule=make_data(corpus))
    ckpt = str(tmp_path / "ckpt" / "epoch=0-step=2.ckpt")
    with pytest.raises(TinyLMError, match=r"rounds setting rate=\[0.5\], this run asks for rate=\[0.25\]"):
        trainer(tmp_path / "b", [MultiRoundTraining(rounds=2, rate=0.25, seed=4)]).fit(
            make_module(), datamodule=make_data(corpus), ckpt_path=ckpt)
    with pytest.raises(TinyLMError, match="data.batch_size=8, this run asks for data.batch_size=4"):
        trainer(tmp_path / "c", [MultiRoundTraining(rounds=2, rate=0.5, seed=4)]).fit(
            make_module(), datamodule=make_data(corpus, batch_size=4), ckpt_path=ckpt)
