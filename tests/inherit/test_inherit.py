"""Parameter inheritance: masked big model ≡ materialised small model, plans of the target shape, errors."""

from __future__ import annotations

import json

import pytest
import torch

from tinylm.artifacts.model_dir import load_model_dir, read_provenance
from tinylm.errors import TinyLMError
from tinylm.inherit import (
    Plan,
    calibration_blocks,
    importance,
    materialize,
    resolve_target,
    save_inherited,
    select_layers,
)
from tinylm.model import Masks, ModelConfig, Transformer

VOCAB = 97


def make(preset: str = "tiny-gqa", seed: int = 0, **overrides) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(ModelConfig.from_preset(preset, vocab_size=VOCAB, **overrides)).eval()
    with torch.no_grad():
        for module in model.modules():
            if module.__class__.__name__ == "RMSNorm":
                module.weight.normal_(1.0, 0.2)  # non-trivial gains catch slicing mistakes
    return model


def random_masks(config: ModelConfig, kinds: set[str], seed: int = 0, soft: bool = False) -> Masks:
    """Random binary masks of a uniform shape (whole KV groups, the same count per layer); soft: times U(0.2, 1)."""
    g = torch.Generator().manual_seed(seed)
    n, heads, kv = config.num_layers, config.num_heads, config.num_kv_heads
    group = heads // kv

    def choose(size: int, k: int) -> Tensor:
        return torch.randperm(size, generator=g)[:k]

    masks = Masks()
    if "hidden" in kinds:
        masks.hidden = torch.zeros(config.hidden_size).index_fill_(0, choose(config.hidden_size, 150), 1.0)
    if "heads" in kinds:
        masks.heads = torch.zeros(n, heads)
        for layer in range(n):
            for kept_group in choose(kv, max(1, kv // 2)).tolist():
                masks.heads[layer, kept_group * group + choose(group, max(1, group // 2))] = 1.0
    if "ffn" in kinds:
        masks.ffn = torch.stack([torch.zeros(config.intermediate_size).index_fill_(0, choose(
            config.intermediate_size, 300), 1.0) for _ in range(n)])
    if "layers" in kinds:
        masks.layers = torch.ones(n).index_fill_(0, choose(n, n // 2), 0.0)
    if soft:
        for name in ("hidden", "heads", "ffn", "layers"):
            value = getattr(masks, name)
            if value is not None:
                setattr(masks, name, value * (0.2 + 0.8 * torch.rand(value.shape, generator=g)))
    return masks


Tensor = torch.Tensor
KINDS = [{"hidden"}, {"heads"}, {"ffn"}, {"layers"}, {"hidden", "heads", "ffn", "layers"}]


@pytest.mark.parametrize("kinds", KINDS, ids=lambda k: "+".join(sorted(k)))
@pytest.mark.parametrize("preset", ["tiny-gqa", "tiny"])
def test_masked_big_model_equals_materialised_small_model(kinds, preset):
    model = make(preset)
    masks = random_masks(model.config, kinds, seed=len(kinds))
    small = materialize(model, Plan.from_masks(masks, model.config))
    ids = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        diff = (model(ids, masks=masks) - small(ids)).abs().max().item()
    assert diff <= 1e-5
    assert small.num_params() < model.num_params()


@pytest.mark.parametrize("tie", [False, True])
def test_soft_mask_values_are_folded_into_the_weights(tie):
    model = make("tiny-gqa", tie_embeddings=tie)
    masks = random_masks(model.config, {"hidden", "heads", "ffn", "layers"}, seed=5, soft=True)
    plan = Plan.from_masks(masks, model.config)
    assert plan.scales is not None
    small = materialize(model, plan)
    ids = torch.randint(0, VOCAB, (2, 24))
    with torch.no_grad():
        assert (model(ids, masks=masks) - small(ids)).abs().max().item() <= 1e-5


def test_plan_masks_round_trip_and_gqa_structure():
    model = make("tiny-gqa")  # 8 query heads in 2 KV groups of 4
    masks = random_masks(model.config, {"hidden", "heads", "ffn", "layers"})
    plan = Plan.from_masks(masks, model.config)
    again = plan.masks(model.config)
    kept = masks.layers.bool()
    for name in ("heads", "ffn"):
        torch.testing.assert_close(getattr(again, name)[kept], getattr(masks, name)[kept])
    small = plan.config(model.config)
    assert (small.num_heads, small.num_kv_heads, small.head_dim) == (2, 1, model.config.head_dim)
    bad = masks.heads.clone()
    bad[0] = 0
    bad[0, [0, 1, 4]] = 1  # two heads in one group, one in the other: not whole groups
    with pytest.raises(TinyLMError, match="KV group"):
        Plan.from_masks(Masks(heads=bad), model.config)


@pytest.mark.parametrize("criterion", ["l1", "l2", "taylor"])
def test_criteria_give_the_target_shape_and_masked_equals_sliced(criterion):
    model = make("tiny-gqa")
    target = resolve_target({"hidden_size": 128, "num_heads": 4, "num_layers": 2, "intermediate_size": 320},
                            model.config)
    blocks = calibration_blocks(torch.randint(0, VOCAB, (2000,)), 4, 32)
    scores = importance(model, criterion, blocks)
    plan = scores.plan(target, select_layers("both-ends", 4, 2))
    small = materialize(model, plan)
    got = small.config
    assert (got.hidden_size, got.num_heads, got.num_kv_heads, got.num_layers, got.intermediate_size) == \
        (128, 4, 1, 2, 320)
    ids = blocks[:, :-1]
    with torch.no_grad():
        assert (model(ids, masks=plan.masks(model.config)) - small(ids)).abs().max().item() <= 1e-5
    assert all(p.grad is None for p in model.parameters())  # Taylor leaves no gradients behind


def test_importance_prefers_big_weights_and_taylor_sees_the_data():
    model = make("tiny")
    with torch.no_grad():
        model.model.layers[0].self_attn.q_proj.weight[64:128] *= 10  # head 1 of layer 0
        model.model.layers[1].mlp.down_proj.weight[:, 7] *= 10  # neuron 7 of layer 1
    l1 = importance(model, "l1")
    assert l1.heads[0].argmax().item() == 1 and l1.ffn[1].argmax().item() == 7
    first = importance(model, "taylor", calibration_blocks(torch.randint(0, VOCAB, (500,)), 2, 16, seed=0))
    second = importance(model, "taylor", calibration_blocks(torch.randint(0, VOCAB, (500,)), 2, 16, seed=1))
    assert not torch.equal(first.ffn, second.ffn)


def test_layer_strategies():
    assert select_layers("first", 8, 3) == [0, 1, 2]
    assert select_layers("last", 8, 3) == [5, 6, 7]
    assert select_layers("both-ends", 8, 3) == [0, 1, 7]
    assert select_layers("both-ends", 8, 4) == [0, 1, 6, 7]
    assert select_layers("uniform", 8, 3) == [0, 4, 7]  # round(3.5) = 4 (banker's rounding)
    assert select_layers("uniform", 8, 8) == list(range(8))
    assert select_layers("5,0,2", 8, 3) == [0, 2, 5]
    assert select_layers("learned", 8, 2, torch.tensor([0.1, 0.9, 0.2, 0.3, 0.8, 0.0, 0.1, 0.1])) == [1, 4]


def test_bad_input_is_a_clear_error():
    source = make("tiny-gqa").config
    with pytest.raises(TinyLMError, match="intermediate_size=1000 is larger"):
        resolve_target({"intermediate_size": 1000}, source)
    with pytest.raises(TinyLMError, match="num_layers=5 is larger"):
        resolve_target({"num_layers": 5}, source)
    with pytest.raises(TinyLMError, match="does not divide target hidden_size"):
        resolve_target({"hidden_size": 100, "num_heads": 8}, source)
    with pytest.raises(TinyLMError, match="heads are kept whole"):
        resolve_target({"hidden_size": 128, "num_heads": 8}, source)
    with pytest.raises(TinyLMError, match="neither a preset"):
        resolve_target("no-such-shape", source)
    with pytest.raises(TinyLMError, match="empty calibration set"):
        calibration_blocks(torch.randint(0, VOCAB, (10,)), 4, 32)
    with pytest.raises(TinyLMError, match="empty calibration set"):
        calibration_blocks(torch.randint(0, VOCAB, (1000,)), 0, 32)
    with pytest.raises(TinyLMError, match="empty calibration set"):
        importance(make("debug"), "taylor", torch.zeros(0, 17, dtype=torch.long))
    with pytest.raises(TinyLMError, match=r"out of range 0\.\.3"):
        select_layers("0,1,4", 4, 3)
    with pytest.raises(TinyLMError, match="unknown layer strategy"):
        select_layers("middle", 4, 2)
    with pytest.raises(TinyLMError, match="unknown importance criterion"):
        importance(make("debug"), "l3")


def test_model_dir_loads_in_transformers_with_the_same_logits(model_dir_factory, tmp_path):
    transformers = pytest.importorskip("transformers")
    source = model_dir_factory("tiny-gqa")
    model, tokenizer = load_model_dir(source)
    masks = random_masks(model.config, {"hidden", "heads", "ffn", "layers"}, soft=True)
    plan = Plan.from_masks(masks, model.config)
    out = save_inherited(tmp_path / "small", model.state_dict(), model.config, plan, tokenizer,
                         {"parent": str(source), "criterion": "test"})
    ours, _ = load_model_dir(out)
    theirs = transformers.LlamaForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 19))
    with torch.no_grad():
        assert (ours(ids) - theirs(ids).logits).abs().max().item() <= 1e-5
        assert (ours(ids) - model(ids, masks=masks)).abs().max().item() <= 1e-5
    record = read_provenance(out)
    assert record["parent"] == str(source) and record["plan"]["layers"] == plan.layers
    assert record["plan"]["folded_scales"] is True


def test_vocab_change_in_the_same_plan(model_dir_factory, tmp_path):
    source = model_dir_factory("debug")
    model, _ = load_model_dir(source)
    keep = [0, 1, 2, 50, 7, 300]
    masks = Masks(ffn=torch.zeros(model.config.num_layers, model.config.intermediate_size))
    masks.ffn[:, ::2] = 1
    plan = Plan.from_masks(masks, model.config, keep_ids=keep)
    small = materialize(model, plan)
    assert small.config.vocab_size == len(keep)
    ids = torch.tensor([[0, 1, 2, 3, 4, 5]])
    with torch.no_grad():
        full = model(torch.tensor([keep]), masks=masks)[..., keep]
        assert (small(ids) - full).abs().max().item() <= 1e-5


def test_inherit_command_end_to_end(model_dir_factory, tmp_path, capsys):
    from tinylm.cli import main

    source = model_dir_factory("tiny")
    target = json.dumps({"hidden_size": 128, "num_heads": 2, "num_layers": 2, "intermediate_size": 256})
    main(["inherit", "--source", str(source), "--target", target, "--out", str(tmp_path / "l2"),
          "--criterion", "l2", "--layers", "0,3"])
    small, _ = load_model_dir(tmp_path / "l2")
    assert (small.config.hidden_size, small.config.num_layers, small.config.num_heads) == (128, 2, 2)
    assert read_provenance(tmp_path / "l2")["criterion"] == "l2"
    with pytest.raises(SystemExit) as exit_info:
        main(["inherit", "--source", str(source), "--target", "small", "--out", str(tmp_path / "bad")])
    assert exit_info.value.code == 2
    assert "larger than the source" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_reading_scores_and_masks_does_not_import_training():
    import subprocess
    import sys

    code = ("import sys, tinylm.inherit as i, tinylm.inherit.learned; i.load_masks; i.learned_importance; "
            "assert 'lightning' not in sys.modules and 'tinylm.training.lm' not in sys.modules, 'training imported'; "
            "from tinylm.inherit import MaskLearner; assert 'tinylm.training.lm' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
