"""Every capability takes a model dir with a byte-level BPE tokenizer.json (the SmolLM2 kind): the DataModule and
packing, fit --model.init_from with multi-round scoring, inherit --source, layer skipping and generation."""

from __future__ import annotations

import json

import lightning as L
import numpy as np
import pytest
import torch

from tests.bpe_fixtures import bpe_texts, random_model_dir, train_bpe_dir
from tinylm.artifacts.model_dir import load_model_dir, read_provenance
from tinylm.cli.inherit import inherit
from tinylm.data.datamodule import TextDataModule
from tinylm.inherit.layers import bits_per_byte, layer_skip_scores
from tinylm.model import cross_entropy
from tinylm.model.generate import generate
from tinylm.tokenizer import HFTokenizer, load_tokenizer
from tinylm.training.lm import LanguageModel
from tinylm.training.rounds import MultiRoundTraining, score_blocks


@pytest.fixture(scope="module")
def bpe_model(corpus_dir, tmp_path_factory):
    tokenizer_dir = train_bpe_dir(bpe_texts(corpus_dir), tmp_path_factory.mktemp("bpe"), vocab_size=700)
    return random_model_dir(load_tokenizer(tokenizer_dir), tmp_path_factory.mktemp("m") / "model",
                            tie_embeddings=True)


@pytest.fixture(scope="module")
def data(bpe_model, corpus_dir, tmp_path_factory):
    small = tmp_path_factory.mktemp("small")  # a few documents keep the multi-round fit to seconds
    for path in sorted(corpus_dir.glob("*.txt"))[::20]:
        (small / path.name).write_text(path.read_text(encoding="utf-8")[:3000], encoding="utf-8")
    module = TextDataModule(sources=str(small), tokenizer=str(bpe_model), seq_len=32, batch_size=8, val_every=3)
    module.prepare_data()
    module.setup("fit")
    return module


def test_datamodule_packs_with_the_bpe_tokenizer(data, bpe_model):
    assert isinstance(data.tokenizer, HFTokenizer)
    meta = data.meta
    assert meta["tokenizer_sha256"] == load_tokenizer(bpe_model).sha256 and meta["vocab_size"] == 700
    docs = meta["train"]["documents"]
    assert meta["train"]["tokens"] > docs and data.train_stream.max() < 700
    assert int((np.asarray(data.train_stream) == data.tokenizer.eos_id).sum()) == docs  # one EOS per document


def test_fit_init_from_with_multi_round_scoring(data, bpe_model, tmp_path):
    L.seed_everything(0, verbose=False)
    lm = LanguageModel(init_from=str(bpe_model), lr=1e-3, model_dir=str(tmp_path / "out"))
    trainer = L.Trainer(default_root_dir=str(tmp_path), accelerator="cpu", devices=1, logger=False,
                        limit_val_batches=1, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False,
                        callbacks=[MultiRoundTraining(rounds=2, rate=0.5, out_dir=str(tmp_path / "rounds"))])
    trainer.fit(lm, datamodule=data)
    out, tokenizer = load_model_dir(tmp_path / "out")
    assert isinstance(tokenizer, HFTokenizer) and tokenizer.sha256 == read_provenance(tmp_path / "out")[
        "tokenizer_sha256"]
    assert torch.equal(lm.token_bytes.cpu(), torch.from_numpy(tokenizer.token_bytes))
    assert sorted(p.name for p in (tmp_path / "rounds").iterdir())  # the round plan was scored and drawn


def test_scoring_layer_skip_and_generation(data, bpe_model):
    model, tokenizer = load_model_dir(bpe_model)
    blocks = np.arange(4)
    losses = score_blocks(model, data.train_stream, 32, blocks, batch_size=2)
    block = torch.from_numpy(np.asarray(data.train_stream[: 4 * 32 + 1]).astype(np.int64))
    with torch.no_grad():
        expected = cross_entropy(model(block[:-1].view(4, 32)), block[1:].view(4, 32), reduction="none").mean(1)
    assert torch.allclose(losses, expected, atol=1e-5)
    token_bytes = torch.from_numpy(tokenizer.token_bytes)
    batches = [block[:-1].view(4, 32)]
    scores = layer_skip_scores(model, [torch.cat([b, b[:, :1]], 1) for b in batches], token_bytes, spans=(1,))
    assert len(scores[1]) == model.config.num_layers and all(np.isfinite(scores[1]))
    assert scores[0][0] == pytest.approx(bits_per_byte(model, [torch.cat([b, b[:, :1]], 1) for b in batches],
                                                       token_bytes))
    prompt = tokenizer.encode_one("In the beginning")
    new = generate(model, torch.tensor([prompt]), 8)[0].tolist()
    assert len(new) == 8 and isinstance(tokenizer.decode(new), str)


def test_inherit_from_a_bpe_source(bpe_model, corpus_dir, tmp_path):
    # taylor calibrates on text tokenized by the source's own tokenizer.json
    inherit(source=str(bpe_model), target=json.dumps({"hidden_size": 64, "num_heads": 4, "num_layers": 1}),
            out=str(tmp_path / "small"), criterion="taylor", calibration=str(corpus_dir), calibration_size=2,
            seq_len=16, batch_size=2)
    small, tokenizer = load_model_dir(tmp_path / "small")
    assert isinstance(tokenizer, HFTokenizer) and small.config.num_layers == 1
    assert (tmp_path / "small" / "tokenizer.json").read_bytes() == (bpe_model / "tokenizer.json").read_bytes()
