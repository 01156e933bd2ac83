"""The one inheritance pipeline: its output is exactly the explicit select_layers → importance → plan → fold-and-slice
steps (weights bit for bit, tinylm.json), learned masks give what the mask learner wrote, and bad input is refused
before anything is written."""

from __future__ import annotations

import json

import pytest
import torch

from tinylm.artifacts.model_dir import load_model_dir, read_provenance
from tinylm.data.datamodule import TextDataModule
from tinylm.errors import TinyLMError
from tinylm.inherit import (
    Calibration,
    MaskLearner,
    calibration_blocks,
    importance,
    inherit,
    learned_importance,
    load_masks,
    materialize_state,
    resolve_target,
    select_layers,
)
from tinylm.inherit.learned import save_masks
from tinylm.training.fit import fit

TARGET = {"hidden_size": 128, "num_heads": 4, "num_kv_heads": 1, "num_layers": 2, "intermediate_size": 256}


def assert_written(model_dir, state: dict[str, torch.Tensor]) -> None:
    """The model dir holds exactly ``state`` (bit for bit)."""
    written, _ = load_model_dir(model_dir)
    for name, tensor in written.state_dict().items():
        assert torch.equal(tensor, state[name]), name


@pytest.mark.parametrize(("criterion", "layers"), [("l1", "both-ends"), ("l2", "0,3"), ("taylor", "uniform")])
def test_pipeline_is_the_explicit_steps(criterion, layers, model_dir_factory, tmp_path):
    source = model_dir_factory("tiny-gqa")  # 4 layers, 8 query heads in 2 KV groups
    stream = torch.randint(0, 1000, (3000,), generator=torch.Generator().manual_seed(0))
    text = Calibration(lambda _: stream, size=4, seq_len=32, batch_size=2, about={"text": "random ids"})
    child = inherit(source, TARGET, tmp_path / "child", layers=layers, criterion=criterion, calibration=text, seed=7)

    model, _ = load_model_dir(source)
    blocks = calibration_blocks(stream, 4, 32, seed=7) if criterion == "taylor" else None
    kept = select_layers(layers, 4, 2)
    plan = importance(model, criterion, blocks, batch_size=2).plan(resolve_target(TARGET, model.config), kept)
    config, state = materialize_state(model.state_dict(), model.config, plan)
    assert_written(child.model_dir, state)
    assert (child.config, child.source_config, child.layers) == (config, model.config, kept)
    assert child.calibration_tokens == (0 if blocks is None else blocks.numel())
    record = read_provenance(child.model_dir)
    assert {k: record[k] for k in ("parent", "criterion", "layer_strategy", "seed", "plan")} == \
        {"parent": str(source), "criterion": criterion, "layer_strategy": layers, "seed": 7,
         "plan": json.loads(json.dumps(plan.to_json()))}
    assert record.get("calibration") == ({"text": "random ids", "size": 4, "seq_len": 32} if blocks is not None
                                         else None)
    assert child.summary() == (f"inherited {config.num_params():,} of {model.config.num_params():,} parameters "
                               f"({criterion}, layers {kept})")


def test_calibration_text_is_made_only_for_taylor_from_the_sources_tokenizer(model_dir_factory, tokenizer,
                                                                             tmp_path):
    source = model_dir_factory("debug")
    made = []

    def text(source_tokenizer):
        made.append(source_tokenizer.sha256)
        return torch.randint(0, source_tokenizer.vocab_size, (1000,), generator=torch.Generator().manual_seed(1))

    inherit(source, {"num_layers": 1}, tmp_path / "l1", criterion="l1", calibration=Calibration(text, 2, 16))
    assert made == []
    child = inherit(source, {"num_layers": 1}, tmp_path / "taylor", calibration=Calibration(text, 2, 16))
    assert made == [tokenizer.sha256] and child.calibration_tokens == 2 * 17


def test_learned_layers_and_widths_are_the_masks_plan(model_dir_factory, tmp_path):
    """Masks decide the layers only (Taylor widths) or both; the masks file is recorded as it is named."""
    source = model_dir_factory("tiny-gqa")
    model, _ = load_model_dir(source)
    c = model.config
    g = torch.Generator().manual_seed(2)
    log_alphas = {"hidden": torch.randn(c.hidden_size, generator=g), "ffn": torch.randn(4, c.intermediate_size,
                                                                                         generator=g),
                  "heads": torch.randn(4, c.num_heads, generator=g), "layers": torch.randn(4, generator=g)}
    save_masks(tmp_path / "masks.safetensors", log_alphas, 0.5)
    read, temperature = load_masks(tmp_path)
    learned = learned_importance(read, c, temperature)
    kept = select_layers("learned", 4, 2, learned.layer_scores)
    shape = resolve_target(TARGET, c)

    child = inherit(source, TARGET, tmp_path / "learned", layers="learned", criterion="learned",
                    masks=tmp_path / "masks.safetensors")
    assert_written(child.model_dir, materialize_state(model.state_dict(), c, learned.plan(shape, kept))[1])
    assert read_provenance(child.model_dir)["masks"] == str(tmp_path / "masks.safetensors")

    stream = torch.randint(0, 1000, (2000,), generator=g)
    child = inherit(source, TARGET, tmp_path / "taylor", layers="learned", criterion="taylor",
                    calibration=Calibration(lambda _: stream, 3, 16), masks=tmp_path, masks_name="masks/model")
    blocks = calibration_blocks(stream, 3, 16, seed=0)
    plan = importance(model, "taylor", blocks).plan(shape, kept)
    assert_written(child.model_dir, materialize_state(model.state_dict(), c, plan)[1])
    assert child.layers == kept and read_provenance(child.model_dir)["masks"] == "masks/model"


def test_masks_a_mask_learner_wrote_give_its_own_model_dir(corpus_dir, model_dir_factory, tmp_path):
    """The learned-mask path on a tiny model: with frozen weights, the pipeline reading the learner's masks from the
    source writes the very model dir the learner wrote."""
    source = model_dir_factory("debug")
    target = {"num_layers": 1, "intermediate_size": 64}
    learner = MaskLearner(source=str(source), target=target, train_weights=False, model_dir=str(tmp_path / "pruned"))
    data = TextDataModule(sources=str(corpus_dir), tokenizer=str(source), seq_len=32, batch_size=4,
                          cache_dir=str(tmp_path / "cache"))
    fit(learner, data, tmp_path / "run", max_steps=3, limit_val_batches=1)
    child = inherit(source, target, tmp_path / "again", layers="learned", criterion="learned",
                    masks=tmp_path / "pruned")
    pruned, _ = load_model_dir(tmp_path / "pruned")
    assert_written(child.model_dir, pruned.state_dict())
    assert child.layers == learner.plan().layers and child.config == pruned.config


@pytest.mark.parametrize(("settings", "message"), [
    ({"criterion": "l3"}, "unknown criterion 'l3'"),
    ({"criterion": "learned"}, "needs --masks"),
    ({"layers": "learned", "criterion": "l1"}, "needs --masks"),
    ({"criterion": "taylor"}, "needs calibration text"),
    ({"criterion": "l1", "keep_ids": [0, 1, 2]}, "changes the vocabulary"),
])
def test_bad_input_is_refused_before_anything_is_written(settings, message, model_dir_factory, tmp_path):
    with pytest.raises(TinyLMError, match=message):
        inherit(model_dir_factory("debug"), {"num_layers": 1}, tmp_path / "out", **settings)
    assert not (tmp_path / "out").exists()
