"""tinylm convert: GGUF (llama.cpp) and Hugging Face LLaMA folders -> model dirs with transformers' logits."""

from __future__ import annotations

import json

import pytest
import torch

from tests.bpe_fixtures import bpe_texts, train_bpe_dir, write_tiny_gguf
from tests.conftest import MIXED_TEXT
from tinylm.artifacts.convert import convert_gguf, convert_hf, unpermute_qk
from tinylm.artifacts.model_dir import load_model_dir, read_provenance
from tinylm.cli import main
from tinylm.errors import TinyLMError
from tinylm.model import ModelConfig, Transformer
from tinylm.tokenizer import HFTokenizer, load_tokenizer

transformers = pytest.importorskip("transformers")
pytest.importorskip("gguf")

CODE = "def f(x):\n    return {'a': [1, 2, 3]}  # 中文注释\n"


@pytest.fixture(scope="module")
def bpe_dir(corpus_dir, tmp_path_factory):
    return train_bpe_dir(bpe_texts(corpus_dir), tmp_path_factory.mktemp("bpe"), vocab_size=600)


def random_llama(vocab: int, tie: bool, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=vocab, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                         intermediate_size=96, rope_theta=100000.0, tie_embeddings=tie, max_seq_len=256)
    model = Transformer(config)
    for norm in (m for m in model.modules() if m.__class__.__name__ == "RMSNorm"):
        torch.nn.init.normal_(norm.weight, 1.0, 0.1)
    return model.eval()


def test_unpermute_inverts_llama_cpp_permutation():
    from tests.bpe_fixtures import llama_cpp_permute

    weight = torch.randn(4 * 16, 24)
    assert torch.equal(unpermute_qk(llama_cpp_permute(weight, 4), 4), weight)
    assert not torch.equal(llama_cpp_permute(weight, 4), weight)


@pytest.mark.parametrize("tie", [True, False])
def test_unquantized_gguf_converts_to_the_original_weights(bpe_dir, tmp_path, tie):
    vocab = HFTokenizer(bpe_dir / "tokenizer.json").vocab_size
    model = random_llama(vocab, tie)
    path = write_tiny_gguf(tmp_path / "m.gguf", bpe_dir, model.config, model.state_dict(), quantize=False)
    converted, _ = load_model_dir(convert_gguf(path, tmp_path / "out"))
    assert converted.config.tie_embeddings is tie and converted.config.rope_theta == 100000.0
    for name, tensor in model.state_dict().items():
        assert torch.equal(converted.state_dict()[name], tensor), name
    if tie:
        assert converted.lm_head.weight is converted.model.embed_tokens.weight


def test_quantized_gguf_equals_transformers_gguf_loader(bpe_dir, tmp_path):
    tokenizer = HFTokenizer(bpe_dir / "tokenizer.json")
    model = random_llama(tokenizer.vocab_size, tie=True, seed=3)
    path = write_tiny_gguf(tmp_path / "m.gguf", bpe_dir, model.config, model.state_dict(), quantize=True)
    out = convert_gguf(path, tmp_path / "out")
    ours, ours_tokenizer = load_model_dir(out)
    reference = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="m.gguf",
                                                                  dtype=torch.float32).eval()
    auto = transformers.AutoModelForCausalLM.from_pretrained(out).eval()  # the dir loads unchanged
    ids = torch.tensor([ours_tokenizer.encode_one(MIXED_TEXT + CODE)[:200]])
    with torch.no_grad():
        expected = reference(ids).logits
        assert (ours(ids) - expected).abs().max().item() <= 1e-5
        assert (auto(ids).logits - expected).abs().max().item() <= 1e-5
    record = read_provenance(out)
    assert record["source_format"] == "gguf" and len(record["source_sha256"]) == 64
    assert "Q8_0" in record["source_quantization"]


def test_converted_tokenizer_matches_the_original_and_autotokenizer(bpe_dir, tmp_path):
    original = HFTokenizer(bpe_dir / "tokenizer.json")
    model = random_llama(original.vocab_size, tie=True)
    out = convert_gguf(write_tiny_gguf(tmp_path / "m.gguf", bpe_dir, model.config, model.state_dict()),
                       tmp_path / "out")
    ours = load_tokenizer(out)
    auto = transformers.AutoTokenizer.from_pretrained(out)
    assert (ours.add_bos, ours.bos_id, ours.eos_id, ours.unk_id, ours.pad_id) == (False, 1, 2, 0, 2)
    for text in [MIXED_TEXT, CODE, " leading space", "digits 1234567", ""]:
        ids = ours.encode_one(text)
        assert ids == original.encode_one(text) == auto(text)["input_ids"], repr(text)
        assert ours.decode(ids) == auto.decode(ids) == text


def test_hf_folder_with_rope_parameters_converts(bpe_dir, tmp_path):
    tokenizer = HFTokenizer(bpe_dir / "tokenizer.json")
    config = transformers.LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, intermediate_size=96,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      head_dim=32, rope_theta=50000.0, tie_word_embeddings=False)
    torch.manual_seed(0)
    theirs = transformers.LlamaForCausalLM(config).eval()
    theirs.save_pretrained(tmp_path / "hf")
    assert "rope_parameters" in json.loads((tmp_path / "hf" / "config.json").read_text())
    tokenizer.save_hf(tmp_path / "hf")
    ours, _ = load_model_dir(convert_hf(tmp_path / "hf", tmp_path / "out"))
    assert ours.config.rope_theta == 50000.0 and ours.config.head_dim == 32
    ids = torch.randint(0, tokenizer.vocab_size, (2, 33))
    with torch.no_grad():
        assert (ours(ids) - theirs(ids).logits).abs().max().item() <= 1e-5


def test_bad_inputs_are_one_line_errors(bpe_dir, tmp_path, capsys):
    (tmp_path / "bad.gguf").write_text("not a gguf")
    with pytest.raises(TinyLMError, match="not a readable GGUF"):
        convert_gguf(tmp_path / "bad.gguf", tmp_path / "out")
    kept = tmp_path / "mine"
    kept.mkdir()
    (kept / "notes.txt").write_text("precious")
    for args, words in [(["--source", str(tmp_path / "bad.gguf"), "--out", str(kept)], "not empty"),
                        (["--source", "builtin:nope", "--out", str(tmp_path / "o")], "unknown built-in model"),
                        (["--source", str(tmp_path / "missing"), "--out", str(tmp_path / "o")], "does not exist")]:
        with pytest.raises(SystemExit) as exit_info:
            main(["convert", *args])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1, err
    assert (kept / "notes.txt").read_text() == "precious" and not (tmp_path / "o").exists()


# ---- the real SmolLM2-135M (98 MB GGUF from PyPI) ----------------------------------------------------------
@pytest.mark.slow
def test_smollm2_gguf_equals_transformers_gguf_loader(tmp_path):
    from tinylm.artifacts.builtin import builtin_gguf

    gguf_path = builtin_gguf("smollm2-135m")
    out = convert_gguf(gguf_path, tmp_path / "smol")
    ours, tokenizer = load_model_dir(out)
    assert (ours.config.num_layers, ours.config.hidden_size, ours.config.num_kv_heads) == (30, 576, 3)
    assert ours.config.rope_theta == 100000.0 and ours.config.tie_embeddings and not tokenizer.add_bos
    reference = transformers.AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                                  dtype=torch.float32).eval()
    auto = transformers.AutoTokenizer.from_pretrained(out)
    text = "The capital of France is Paris. 北京是中国的首都。\n" + CODE
    ids = tokenizer.encode_one(text)
    assert auto(text)["input_ids"] == ids and tokenizer.decode(ids) == text
    with torch.no_grad():
        assert (ours(torch.tensor([ids])) - reference(torch.tensor([ids])).logits).abs().max().item() <= 1e-4
