"""The decoder: parameter/FLOP accounting, attention backends, masks ≡ the paths they stand for, errors."""

from __future__ import annotations

import pytest
import torch

from tinylm.errors import TinyLMError
from tinylm.model import PRESETS, Masks, ModelConfig, Transformer, cross_entropy, linear_cross_entropy


def make(preset: str = "tiny-gqa", vocab: int = 211, seed: int = 0, **overrides) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(ModelConfig.from_preset(preset, vocab_size=vocab, **overrides)).eval()
    with torch.no_grad():
        for module in model.modules():
            if module.__class__.__name__ == "RMSNorm":
                module.weight.normal_(1.0, 0.2)
    return model


def test_released_pangu_1b_pro_shape_has_the_papers_tokenizer_share():
    config = ModelConfig(vocab_size=48000, hidden_size=1792, num_layers=20, num_heads=14)
    assert config.intermediate_size == 4864  # 8/3 × 1792 rounded up to a multiple of 256
    assert round(100 * config.embedding_share(), 2) == 18.07


@pytest.mark.parametrize("preset", ["tiny", "tiny-gqa", "debug"])
@pytest.mark.parametrize("tie", [False, True])
def test_num_params_matches_the_modules(preset, tie):
    model = make(preset, tie_embeddings=tie)
    counted = sum(p.numel() for p in model.parameters())  # tied weights are one Parameter
    assert model.config.num_params() == counted
    embeddings = model.model.embed_tokens.weight.numel() * (1 if tie else 2)
    assert model.config.num_params(embeddings=False) == counted - embeddings


def test_flops_per_token_is_6n_plus_attention():
    config = PRESETS["pangu-pi-1b-pro"]
    n = config.num_params(embeddings=False) + config.vocab_size * config.hidden_size
    assert config.flops_per_token(2048) == 6 * n + 12 * config.num_layers * config.hidden_size * 2048


def test_presets_follow_the_paper():
    assert (PRESETS["pangu-pi-1b-pro"].hidden_size, PRESETS["pangu-pi-1b-pro"].num_layers) == (1792, 21)
    assert PRESETS["pangu-pi-1b-pro-released"].num_layers == 20
    assert (PRESETS["pangu-pi-7b"].hidden_size, PRESETS["pangu-pi-7b"].num_heads, PRESETS["pangu-pi-7b"].num_layers) \
        == (4096, 32, 29)
    assert PRESETS["pangu-pi-1b"].vocab_size == 100883


@pytest.mark.parametrize("preset", ["tiny", "tiny-gqa"])
def test_sdpa_equals_eager_attention(preset):
    model = make(preset)
    ids = torch.randint(0, 211, (2, 37))
    with torch.no_grad():
        sdpa = model(ids)
        model.set_attention("eager")
        eager = model(ids)
    torch.testing.assert_close(sdpa, eager, atol=1e-5, rtol=1e-5)


def test_xformers_on_cpu_is_a_clear_error():
    model = make("debug")
    model.set_attention("xformers")
    with pytest.raises(TinyLMError, match="xformers.*CUDA"):
        model(torch.randint(0, 211, (1, 8)))


def test_causality_future_tokens_do_not_change_the_past():
    model = make()
    ids = torch.randint(0, 211, (1, 20))
    changed = ids.clone()
    changed[0, 15:] = (changed[0, 15:] + 1) % 211
    with torch.no_grad():
        torch.testing.assert_close(model(ids)[:, :15], model(changed)[:, :15])


def _left_padded(prompts: list[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id)
    for row, p in enumerate(prompts):
        ids[row, width - len(p):] = p
    return ids, torch.tensor([width - len(p) for p in prompts])


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_left_padded_batch_equals_each_prompt_alone(attention):
    """At real positions a padded row's logits are the prompt's own, in the prompt pass and the cached steps
    after it; pad ids and pad lengths change nothing."""
    from tinylm.model import KVCache

    model = make("tiny-gqa")
    model.set_attention(attention)
    prompts = [torch.randint(0, 211, (n,)) for n in (9, 2, 14, 1, 14)]
    steps = torch.randint(0, 211, (len(prompts), 3))  # three decoding steps after the prompt
    with torch.no_grad():
        for pad_id in (0, 17):
            ids, pad = _left_padded(prompts, pad_id)
            cache = KVCache.empty(model.config, len(prompts), ids.shape[1] + steps.shape[1], None, torch.float32)
            batched = torch.cat([model(ids, cache=cache, pad=pad)]
                                + [model(steps[:, s:s + 1], cache=cache, pad=pad) for s in range(steps.shape[1])], 1)
            assert torch.isfinite(batched).all()  # pad rows too: a NaN there would leak through later layers
            for row, p in enumerate(prompts):
                alone = model(torch.cat([p, steps[row]])[None])[0]
                torch.testing.assert_close(batched[row, int(pad[row]):], alone, atol=1e-5, rtol=1e-5)


def test_xformers_refuses_a_padded_batch_and_names_sdpa():
    model = make("debug")
    model.set_attention("xformers")
    with pytest.raises(TinyLMError, match="padded.*attention='sdpa'"):
        model(torch.randint(0, 211, (2, 8)), pad=torch.tensor([0, 3]))


def test_layer_mask_zero_equals_skipping_the_layer():
    model = make()
    ids = torch.randint(0, 211, (2, 16))
    layers = torch.ones(model.config.num_layers)
    layers[1] = layers[2] = 0
    with torch.no_grad():
        torch.testing.assert_close(model(ids, masks=Masks(layers=layers)), model(ids, skip_layers={1, 2}),
                                   atol=1e-5, rtol=1e-5)


def test_a_pass_from_a_recorded_stream_equals_skipping_the_layers_before_it():
    """``streams`` records the residual stream entering each layer; ``start`` resumes from one, which is exactly
    the forward that skips layers s .. s + x − 1 (the layer-skip sweep's reuse)."""
    model = make("debug", num_layers=4)
    ids = torch.randint(0, 211, (2, 9))
    streams: list[torch.Tensor] = []
    with torch.no_grad():
        full = model(ids, streams=streams)
        assert len(streams) == 5 and torch.equal(streams[0], model.model.embed_tokens(ids))
        assert torch.equal(model.lm_head(model.model.norm(streams[-1])), full)
        for start in range(4):
            for span in range(4 - start + 1):
                resumed = model(ids, start=(start + span, streams[start]))
                assert torch.equal(resumed, model(ids, skip_layers=range(start, start + span))), (start, span)


def _narrow_copy(model: Transformer, heads: list[int] | None = None, neurons: list[int] | None = None,
                 channels: list[int] | None = None) -> Transformer:
    """A smaller model holding the kept heads / FFN neurons / hidden channels of ``model`` (same in every layer).

    Written independently of tinylm.inherit so the masks are checked against plain slicing."""
    c = model.config
    heads = list(range(c.num_heads)) if heads is None else heads
    neurons = list(range(c.intermediate_size)) if neurons is None else neurons
    channels = list(range(c.hidden_size)) if channels is None else channels
    hd, group = c.head_dim, c.num_heads // c.num_kv_heads
    kv_heads = sorted({h // group for h in heads})
    small = Transformer(ModelConfig(vocab_size=c.vocab_size, hidden_size=len(channels), num_layers=c.num_layers, head_dim=hd,
                                    num_heads=len(heads), num_kv_heads=len(kv_heads),
                                    intermediate_size=len(neurons)))
    small.rope = model.rope  # head_dim is unchanged: same rotary frequencies
    rows = lambda hs: torch.tensor([h * hd + i for h in hs for i in range(hd)])  # noqa: E731
    ch, nr = torch.tensor(channels), torch.tensor(neurons)
    s, b = small.state_dict(), model.state_dict()
    for name in s:
        w = b[name]
        if name.endswith("embed_tokens.weight") or name == "lm_head.weight":
            w = w[:, ch]
        elif "norm" in name:
            w = w[ch]
        elif name.endswith("q_proj.weight"):
            w = w[rows(heads)][:, ch]
        elif name.endswith(("k_proj.weight", "v_proj.weight")):
            w = w[rows(kv_heads)][:, ch]
        elif name.endswith("o_proj.weight"):
            w = w[ch][:, rows(heads)]
        elif name.endswith(("gate_proj.weight", "up_proj.weight")):
            w = w[nr][:, ch]
        elif name.endswith("down_proj.weight"):
            w = w[ch][:, nr]
        s[name] = w
    small.load_state_dict(s)
    return small.eval()


def test_head_ffn_and_hidden_masks_equal_the_narrower_model():
    model = make("tiny-gqa")  # 8 query heads in 2 KV groups of 4
    c = model.config
    heads = [0, 1, 4, 5]  # two per group: the group structure survives, so the small model is still GQA
    neurons = sorted(torch.randperm(c.intermediate_size, generator=torch.Generator().manual_seed(1))[:300].tolist())
    channels = sorted(torch.randperm(c.hidden_size, generator=torch.Generator().manual_seed(2))[:192].tolist())
    head_mask = torch.zeros(c.num_layers, c.num_heads)
    head_mask[:, heads] = 1
    ffn_mask = torch.zeros(c.num_layers, c.intermediate_size)
    ffn_mask[:, neurons] = 1
    hidden_mask = torch.zeros(c.hidden_size)
    hidden_mask[channels] = 1
    small = _narrow_copy(model, heads, neurons, channels)
    ids = torch.randint(0, 211, (2, 24))
    with torch.no_grad():
        masked = model(ids, masks=Masks(hidden=hidden_mask, heads=head_mask, ffn=ffn_mask))
        torch.testing.assert_close(masked, small(ids), atol=1e-5, rtol=1e-5)
        for masks, narrow in (
            (Masks(heads=head_mask), _narrow_copy(model, heads=heads)),
            (Masks(ffn=ffn_mask), _narrow_copy(model, neurons=neurons)),
            (Masks(hidden=hidden_mask), _narrow_copy(model, channels=channels)),
        ):
            torch.testing.assert_close(model(ids, masks=masks), narrow(ids), atol=1e-5, rtol=1e-5)


def test_all_ones_masks_change_nothing():
    model = make()
    c = model.config
    ids = torch.randint(0, 211, (1, 12))
    ones = Masks(torch.ones(c.hidden_size), torch.ones(c.num_layers, c.num_heads),
                 torch.ones(c.num_layers, c.intermediate_size), torch.ones(c.num_layers))
    with torch.no_grad():
        torch.testing.assert_close(model(ids, masks=ones), model(ids), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(hidden_size=250, num_heads=4), "does not divide hidden_size"),
        (dict(num_heads=6, num_kv_heads=4, hidden_size=96), "does not divide num_heads"),
        (dict(num_layers=0), "num_layers must be positive"),
        (dict(hidden_size=24, num_heads=8), "must be even for RoPE"),
    ],
)
def test_bad_shapes_are_clear_errors(kwargs, message):
    with pytest.raises(TinyLMError, match=message):
        ModelConfig(vocab_size=100, **kwargs)


def test_unknown_preset_lists_the_choices():
    with pytest.raises(TinyLMError, match="unknown model preset 'pangu-9b'.*pangu-pi-1b"):
        ModelConfig.from_preset("pangu-9b")


def test_too_long_input_is_a_clear_error():
    model = make("debug")
    with pytest.raises(TinyLMError, match="exceeds max_seq_len"):
        model(torch.zeros(1, model.config.max_seq_len + 1, dtype=torch.long))


@pytest.mark.parametrize("chunk", [7, 64, 1000])
def test_fused_head_loss_equals_logits_then_cross_entropy(chunk):
    torch.manual_seed(0)
    hidden = torch.randn(3, 40, 32, requires_grad=True)
    weight = (0.1 * torch.randn(97, 32)).requires_grad_()
    targets = torch.randint(0, 97, (3, 40))
    targets[0, :5] = -100  # ignored positions
    reference = cross_entropy(hidden @ weight.t(), targets)
    reference.backward()
    expected = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    fused = linear_cross_entropy(hidden, weight, targets, chunk=chunk)
    (2.0 * fused).backward()  # the upstream gradient scales both results
    torch.testing.assert_close(fused, reference, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(hidden.grad, 2 * expected[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(weight.grad, 2 * expected[1], atol=1e-6, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(hidden, weight, targets, chunk), reference)
