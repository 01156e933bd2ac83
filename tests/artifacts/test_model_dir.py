"""The model dir is the Hugging Face LLaMA layout: transformers loads it and computes the same logits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import MIXED_TEXT
from tinylm.artifacts.model_dir import load_model_dir, model_fingerprint, read_provenance, save_model_dir
from tinylm.errors import TinyLMError
from tinylm.model import ModelConfig, Transformer

transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("preset", ["debug", "tiny-gqa"])
def test_transformers_gives_the_same_logits(model_dir_factory, preset):
    directory = model_dir_factory(preset)
    ours, _ = load_model_dir(directory)
    theirs = transformers.LlamaForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    ids = torch.randint(0, ours.config.vocab_size, (2, 41))
    with torch.no_grad():
        diff = (ours(ids) - theirs(ids).logits).abs().max().item()
    assert diff <= 1e-5


def test_explicit_head_dim_round_trips_through_transformers(tokenizer, tmp_path):
    torch.manual_seed(3)
    model = Transformer(ModelConfig(vocab_size=tokenizer.vocab_size, hidden_size=96, num_layers=2, num_heads=4,
                                    num_kv_heads=2, head_dim=32, intermediate_size=160)).eval()
    save_model_dir(tmp_path / "m", model, tokenizer)
    theirs = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "m").eval()
    ids = torch.randint(0, tokenizer.vocab_size, (1, 17))
    with torch.no_grad():
        assert (model(ids) - theirs(ids).logits).abs().max().item() <= 1e-5


def test_round_trip_keeps_weights_and_provenance(tokenizer, tmp_path):
    torch.manual_seed(1)
    model = Transformer(ModelConfig.from_preset("debug", vocab_size=tokenizer.vocab_size, tie_embeddings=True))
    save_model_dir(tmp_path / "m", model, tokenizer, {"recipe": "unit", "tokens_seen": 7})
    loaded, tok = load_model_dir(tmp_path / "m")
    assert tok.sha256 == tokenizer.sha256
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    assert read_provenance(tmp_path / "m")["tokens_seen"] == 7
    assert json.loads((tmp_path / "m" / "config.json").read_text())["tie_word_embeddings"] is True


def test_autotokenizer_from_the_model_dir_gives_our_ids(model_dir_factory, tokenizer):
    auto = transformers.AutoTokenizer.from_pretrained(model_dir_factory("debug"))
    texts = [MIXED_TEXT, " leading space", "  two leading spaces\n\nand blank lines", "末尾の空白 ", ""]
    for text in texts:
        assert auto(text, add_special_tokens=False)["input_ids"] == tokenizer.encode_one(text), repr(text)
        assert auto.decode(tokenizer.encode_one(text)) == text
    assert auto("x")["input_ids"][0] == tokenizer.bos_id


def test_truncated_weights_are_a_clear_error(model_dir_factory, tmp_path):
    import shutil

    directory = shutil.copytree(model_dir_factory("debug"), tmp_path / "m")
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(TinyLMError, match="truncated or corrupt"):
        load_model_dir(directory)


def test_missing_dir_is_a_clear_error(tmp_path):
    with pytest.raises(TinyLMError, match="not a model dir"):
        load_model_dir(tmp_path / "nowhere")


def test_tokenizer_larger_than_the_model_is_refused(tokenizer, tmp_path):
    model = Transformer(ModelConfig.from_preset("debug", vocab_size=tokenizer.vocab_size - 10))
    with pytest.raises(TinyLMError, match="tokenizer has 4000 pieces but the model only 3990"):
        save_model_dir(tmp_path / "m", model, tokenizer)
    assert not (tmp_path / "m").exists()


def test_a_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    model = Transformer(ModelConfig.from_preset("debug", vocab_size=64))
    import tinylm.artifacts.model_dir as md

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(md, "save_file", boom)
    with pytest.raises(OSError):
        save_model_dir(tmp_path / "m", model, None)
    assert list(tmp_path.iterdir()) == []


def test_extra_files_are_written_inside_the_atomic_write(tmp_path):
    from tinylm.artifacts.model_dir import write_model_dir

    model = Transformer(ModelConfig.from_preset("debug", vocab_size=64))
    seen = []
    write_model_dir(tmp_path / "m", model.config, model.state_dict(), None,
                    extra=lambda folder: (seen.append(folder), (folder / "masks.bin").write_text("x")))
    assert (tmp_path / "m" / "masks.bin").read_text() == "x" and seen[0] != tmp_path / "m"

    def fails(folder):
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_model_dir(tmp_path / "n", model.config, model.state_dict(), None, extra=fails)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no model dir without its extra files


def test_model_fingerprint_is_by_content_not_place(model_dir_factory, tmp_path):
    original = model_dir_factory()
    copy = Path(shutil.copytree(original, tmp_path / "elsewhere"))
    assert model_fingerprint(original) == model_fingerprint(copy)
    weights = next(copy.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-1] + bytes([weights.read_bytes()[-1] ^ 1]))
    assert model_fingerprint(original) != model_fingerprint(copy)
