"""Greedy decoding: the KV cache changes speed, never tokens."""

import pytest
import torch

from tinylm.errors import TinyLMError
from tinylm.model import ModelConfig, Transformer
from tinylm.model.generate import generate, generate_ragged


@pytest.mark.parametrize("preset", ["tiny", "tiny-gqa"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_kv_cache_generation_equals_recomputation(preset, attention):
    torch.manual_seed(0)
    model = Transformer(ModelConfig.from_preset(preset, vocab_size=300), attention=attention).eval()
    prompt = torch.randint(0, 300, (3, 5))
    assert torch.equal(generate(model, prompt, 24), generate(model, prompt, 24, use_cache=False))


RAGGED = [[5, 6, 7], [9], [1, 2, 3], [4, 4, 4, 4, 4], list(range(10, 27)), [8, 3]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch_size", [1, 4, 16])
def test_ragged_prompts_equal_one_at_a_time(dtype, batch_size):
    """Left-padded batches of different lengths decode the tokens each prompt gets alone, with and without EOS
    (rows of one batch stop at different steps), with and without the KV cache."""
    torch.manual_seed(1)
    model = Transformer(ModelConfig.from_preset("tiny-gqa", vocab_size=120)).to(dtype).eval()
    alone = [generate(model, torch.tensor([p]), 10)[0].tolist() for p in RAGGED]
    assert generate_ragged(model, RAGGED, 10, batch_size=batch_size) == alone
    eos = alone[0][3]  # stops the first prompt early; the others run on unless they meet it too
    alone_eos = [generate(model, torch.tensor([p]), 10, eos_id=eos)[0].tolist() for p in RAGGED]
    assert len(alone_eos[0]) <= 4 and max(map(len, alone_eos)) == 10  # rows of a batch do stop at different steps
    assert generate_ragged(model, RAGGED, 10, eos_id=eos, batch_size=batch_size) == alone_eos
    assert generate_ragged(model, RAGGED, 10, eos_id=eos, batch_size=batch_size, use_cache=False) == alone_eos


def test_ragged_bad_inputs_are_clear_errors():
    model = Transformer(ModelConfig.from_preset("debug", vocab_size=50))
    with pytest.raises(TinyLMError, match="at least one token"):
        generate_ragged(model, [[1, 2], []], 4)
    with pytest.raises(TinyLMError, match="batch_size"):
        generate_ragged(model, [[1, 2]], 4, batch_size=0)


def test_eos_stops_a_row():
    torch.manual_seed(2)
    model = Transformer(ModelConfig.from_preset("debug", vocab_size=50)).eval()
    prompt = torch.randint(0, 50, (2, 3))
    free = generate(model, prompt, 8)
    eos = int(free[0, 2])
    stopped = generate(model, prompt, 8, eos_id=eos)
    first = (stopped[0] == eos).nonzero()[0].item()
    assert (stopped[0, first:] == eos).all()


def test_generation_beyond_max_seq_len_is_a_clear_error():
    model = Transformer(ModelConfig.from_preset("debug", vocab_size=50))
    with pytest.raises(TinyLMError, match="max_seq_len"):
        generate(model, torch.zeros(1, 10, dtype=torch.long), model.config.max_seq_len)
