"""MaskLearner: exact target shape at the end, nothing pruned when target == source, eval masks ≡ the model dir."""

from __future__ import annotations

import pytest
import torch

from tinylm.artifacts.model_dir import load_model_dir, read_provenance
from tinylm.data.datamodule import TextDataModule
from tinylm.inherit import MaskLearner, load_masks
from tinylm.training.fit import fit


def data(corpus_dir, source, tmp_path) -> TextDataModule:
    return TextDataModule(sources=str(corpus_dir), tokenizer=str(source), seq_len=32, batch_size=4,
                          cache_dir=str(tmp_path / "cache"))


def test_mask_learner_reaches_the_exact_target_shape(corpus_dir, model_dir_factory, tmp_path):
    source = model_dir_factory("tiny-gqa")  # 256 wide, 8 query heads in 2 KV groups, FFN 688, 4 layers
    target = {"hidden_size": 128, "num_heads": 4, "num_kv_heads": 1, "num_layers": 2, "intermediate_size": 256}
    learner = MaskLearner(source=str(source), target=target, lr=1e-3, mask_lr=0.5, lambda_lr=0.5,
                          target_warmup=0.5, model_dir=str(tmp_path / "pruned"))
    trainer = fit(learner, data(corpus_dir, source, tmp_path), tmp_path / "run", max_steps=6, limit_val_batches=2)
    pruned, _ = load_model_dir(tmp_path / "pruned")
    c = pruned.config
    assert (c.hidden_size, c.num_heads, c.num_kv_heads, c.num_layers, c.intermediate_size) == (128, 4, 1, 2, 256)
    assert torch.isfinite(trainer.callback_metrics["val/bpb"])
    assert learner.lambdas["hidden"][0].item() < 0  # ascent: ŝ < t so λ1 went down, which pushes ŝ up
    # the evaluation forward (deterministic masks) is exactly the written small model
    ids = torch.randint(0, c.vocab_size, (2, 20))
    with torch.no_grad():
        masked = learner.net(ids, masks=learner.deterministic_masks())
        assert (masked - pruned(ids)).abs().max().item() <= 1e-5
    record = read_provenance(tmp_path / "pruned")
    assert record["criterion"] == "learned" and record["parent"] == str(source)
    log_alphas, _ = load_masks(tmp_path / "pruned")
    assert set(log_alphas) == {"hidden", "heads", "ffn", "layers"}


def test_target_equal_to_source_prunes_nothing(corpus_dir, model_dir_factory, tmp_path):
    source = model_dir_factory("debug")
    learner = MaskLearner(source=str(source), target=str(source), lr=0.0, model_dir=str(tmp_path / "same"))
    fit(learner, data(corpus_dir, source, tmp_path), tmp_path / "run", max_steps=2, limit_val_batches=1)
    assert len(learner.masks) == 0
    original, _ = load_model_dir(source)
    same, _ = load_model_dir(tmp_path / "same")
    assert same.config == original.config
    ids = torch.randint(0, original.config.vocab_size, (1, 16))
    with torch.no_grad():
        assert torch.equal(same(ids), original(ids))


def test_frozen_weights_stay_put_and_mismatched_tokenizer_is_an_error(corpus_dir, model_dir_factory, tmp_path,
                                                                      tokenizer):
    from tinylm.errors import TinyLMError

    source = model_dir_factory("debug")
    learner = MaskLearner(source=str(source), target={"intermediate_size": 64}, train_weights=False,
                          model_dir=str(tmp_path / "frozen"))
    fit(learner, data(corpus_dir, source, tmp_path), tmp_path / "run", max_steps=3, limit_val_batches=1)
    original, _ = load_model_dir(source)
    for name, weight in learner.net.state_dict().items():
        assert torch.equal(weight, original.state_dict()[name]), name
    frozen, _ = load_model_dir(tmp_path / "frozen")
    assert frozen.config.intermediate_size == 64
    # `tinylm inherit --criterion learned` reads the saved masks and rebuilds the same model from the source
    from tinylm.cli.inherit import inherit

    inherit(source=str(source), target='{"intermediate_size": 64}', out=str(tmp_path / "again"), layers="first",
            criterion="learned", masks=str(tmp_path / "frozen"))
    again, _ = load_model_dir(tmp_path / "again")
    ids = torch.randint(0, frozen.config.vocab_size, (1, 16))
    with torch.no_grad():
        assert (again(ids) - frozen(ids)).abs().max().item() <= 1e-6
    with pytest.raises(TinyLMError, match="learned masks have no hidden"):
        inherit(source=str(source), target='{"hidden_size": 32, "num_heads": 2}', out=str(tmp_path / "x"),
                layers="first", criterion="learned", masks=str(tmp_path / "frozen"))
    from tinylm.artifacts.model_dir import save_model_dir
    from tinylm.model import ModelConfig, Transformer

    other = save_model_dir(tmp_path / "other", Transformer(ModelConfig.from_preset(
        "debug", vocab_size=tokenizer.vocab_size + 5)), None)
    with pytest.raises(TinyLMError, match="vocab mismatch"):
        fit(MaskLearner(source=str(other), target="debug"), data(corpus_dir, source, tmp_path), tmp_path / "r2",
            max_steps=1)


def test_mask_learner_recipe_runs_under_tinylm_fit(corpus_dir, model_dir_factory, tmp_path):
    from tinylm.cli import main

    source = str(model_dir_factory("tiny"))
    recipe = str(__import__("pathlib").Path(__file__).resolve().parents[2] / "recipes/inheritance/mask_learner.yaml")
    main(["fit", "--config", recipe, "--model.source", source, "--data.tokenizer", source,
          "--data.sources", str(corpus_dir), "--data.cache_dir", str(tmp_path / "cache"), "--data.seq_len", "32",
          "--model.target", '{"num_layers": 2, "intermediate_size": 256}', "--model.model_dir", str(tmp_path / "out"),
          "--trainer.default_root_dir", str(tmp_path),
          "--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1",
          "--trainer.enable_progress_bar", "false"])
    pruned, _ = load_model_dir(tmp_path / "out")
    assert (pruned.config.num_layers, pruned.config.intermediate_size) == (2, 256)


def test_the_base_class_steps_with_the_hooks_give_the_mask_learners_own_loss_and_schedule(
        corpus_dir, model_dir_factory, tmp_path):
    """MaskLearner trains through LanguageModel's step and optimizer: the loss equals its own formula (CE under
    sampled masks + the Lagrangian), and each group's lr the weights' warmup + cosine or the constant gate/λ lr."""
    import math

    import lightning as L

    from tinylm.inherit.hard_concrete import lagrangian
    from tinylm.model import cross_entropy
    from tinylm.training.optim import warmup_cosine

    class Check(L.Callback):
        def __init__(self) -> None:
            self.losses, self.lrs = [], []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self.rng, self.batch = torch.get_rng_state(), batch

        def on_before_backward(self, trainer, pl_module, loss) -> None:
            now = torch.get_rng_state()
            torch.set_rng_state(self.rng)  # the same gate samples as the step drew
            with torch.no_grad():
                ce = cross_entropy(pl_module.net(self.batch["input_ids"], masks=pl_module.sampled_masks()),
                                   self.batch["labels"])
                penalty = sum(lagrangian(g.expected_sparsity(), pl_module.target_sparsity(n), pl_module.lambdas[n])
                              for n, g in pl_module.masks.items())
            torch.set_rng_state(now)
            self.losses.append((loss.item(), (ce + penalty).item()))

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.lrs.append([g["lr"] for g in trainer.optimizers[0].param_groups])

    source = model_dir_factory("tiny-gqa")
    learner = MaskLearner(source=str(source), target={"num_layers": 2, "intermediate_size": 256}, lr=1e-3,
                          min_lr=1e-4, warmup=0.4, mask_lr=0.5, lambda_lr=0.25, model_dir=str(tmp_path / "p"))
    check = Check()
    fit(learner, data(corpus_dir, source, tmp_path), tmp_path / "run", max_steps=5, limit_val_batches=1,
        callbacks=[check])
    for got, want in check.losses:
        assert got == pytest.approx(want, rel=1e-5)
    warmup = math.ceil(0.4 * 5)
    for step, lrs in enumerate(check.lrs):
        weights = 1e-3 * warmup_cosine(step + 1, 5, warmup, 1.0, 0.1)
        assert lrs == pytest.approx([weights, weights, 0.5, -0.25], rel=1e-9)
