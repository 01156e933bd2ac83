"""Packing and the DataModule: a reusable cache, stable sample ids, seeded order, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tinylm.data.packing as packing
from tinylm.data.datamodule import TextDataModule
from tinylm.errors import TinyLMError


def make(corpus_dir, tokenizer, tmp_path, **kwargs) -> TextDataModule:
    settings = dict(seq_len=32, batch_size=4, val_every=10) | kwargs
    data = TextDataModule(sources=str(corpus_dir), tokenizer=str(tokenizer.path), cache_dir=str(tmp_path), **settings)
    data.prepare_data()
    data.setup("fit")
    return data


def test_blocks_are_the_token_stream_with_eos_between_documents(corpus_dir, tokenizer, tmp_path):
    data = make(corpus_dir, tokenizer, tmp_path)
    stream = np.asarray(data.train_stream)
    assert (stream == tokenizer.eos_id).sum() == data.meta["train"]["documents"]
    block = data.train_blocks()[3]
    assert torch.equal(block["input_ids"], torch.from_numpy(stream[96:128].astype(np.int64)))
    assert torch.equal(block["labels"], torch.from_numpy(stream[97:129].astype(np.int64)))
    assert int(block["sample_id"]) == 3
    first_doc = sorted(corpus_dir.glob("*.txt"))[0].read_text(encoding="utf-8")
    assert tokenizer.decode(stream[: len(tokenizer.encode_one(first_doc))].tolist()) == first_doc


def test_the_packed_cache_is_reused_without_retokenizing(corpus_dir, tokenizer, tmp_path, monkeypatch):
    make(corpus_dir, tokenizer, tmp_path)
    calls = []
    monkeypatch.setattr(packing, "_write_stream", lambda *a, **k: calls.append(a) or {})
    make(corpus_dir, tokenizer, tmp_path)  # same sources, tokenizer and split: served from the cache
    assert calls == []
    make(corpus_dir, tokenizer, tmp_path, seq_len=16)  # the stream does not depend on seq_len
    assert calls == []


def test_shuffle_is_seeded_and_covers_every_block_once(corpus_dir, tokenizer, tmp_path):
    data = make(corpus_dir, tokenizer, tmp_path)
    order = [int(i) for b in data.train_dataloader() for i in b["sample_id"]]
    again = [int(i) for b in make(corpus_dir, tokenizer, tmp_path).train_dataloader() for i in b["sample_id"]]
    assert order == again
    assert len(order) == len(set(order)) == (data.num_train_blocks // 4) * 4
    other = make(corpus_dir, tokenizer, tmp_path, seed=7)
    assert [int(i) for b in other.train_dataloader() for i in b["sample_id"]] != order


def test_round_plan_restricts_training_to_given_ids(corpus_dir, tokenizer, tmp_path):
    data = make(corpus_dir, tokenizer, tmp_path)
    data.set_round_plan([5, 5, 9, 11])
    ids = sorted(int(i) for b in data.train_dataloader() for i in b["sample_id"])
    assert ids == [5, 5, 9, 11]
    assert data.state_dict()["round_plan"] == [5, 5, 9, 11]


def test_builtin_tokenizer_is_trained_once_and_cached(tmp_path, corpus_dir):
    data = TextDataModule(sources=str(corpus_dir), tokenizer=None, vocab_size=3000, seq_len=32,
                          cache_dir=str(tmp_path))
    first = data.resolve_tokenizer()
    assert first.vocab_size == 3000
    assert data.resolve_tokenizer().path == first.path


def test_seq_len_larger_than_the_corpus(tmp_path, tokenizer):
    (tmp_path / "small").mkdir()
    (tmp_path / "small" / "a.txt").write_text("just a few words " * 3)
    (tmp_path / "small" / "b.txt").write_text("and a second file")
    data = TextDataModule(sources=str(tmp_path / "small"), tokenizer=str(tokenizer.path), seq_len=512, val_every=2,
                          cache_dir=str(tmp_path / "cache"))
    data.prepare_data()
    with pytest.raises(TinyLMError, match="seq_len=512 is larger than the training corpus"):
        data.setup("fit")


def test_empty_corpus(tmp_path, tokenizer):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("   \n\n")
    data = TextDataModule(sources=str(tmp_path / "empty"), tokenizer=str(tokenizer.path),
                          cache_dir=str(tmp_path / "cache"))
    with pytest.raises(TinyLMError, match="is empty"):
        data.prepare_data()
    assert not any((tmp_path / "cache").rglob("meta.json"))  # nothing half-written
