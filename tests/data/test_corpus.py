"""Text sources: the built-in bilingual corpus and local files, with clear errors for bad input."""

from __future__ import annotations

import json
import re

import pytest

from tinylm.data.corpus import BUILTIN, resolve, split_documents
from tinylm.errors import TinyLMError


def test_builtin_corpus_is_real_bilingual_text():
    sources = resolve("builtin")
    assert [s.spec for s in sources] == [f"builtin:{p}" for p in BUILTIN]
    first = {s.spec: next(s.documents()) for s in sources}
    assert first["builtin:kjv"].startswith("In the beginning God created the heaven and the earth.")
    assert len(re.findall(r"[\u4e00-\u9fff]", first["builtin:peoples"])) > 200
    assert "/n" not in first["builtin:peoples"] and "/v" not in first["builtin:peoples"]  # POS tags removed
    wiki = next(resolve("builtin:wiki")[0].documents())
    assert "'''" not in wiki and len(wiki) > 1000


def test_validation_split_holds_out_whole_documents():
    source = resolve("builtin:lee")
    docs = list(source[0].documents())
    train, val = (list(d) for d in split_documents(source, val_every=10))
    assert val == docs[9::10]
    assert train == [d for i, d in enumerate(docs) if i % 10 != 9]


def test_local_txt_jsonl_and_parquet(tmp_path):
    (tmp_path / "a.txt").write_text("first document\nsecond line", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "row one"}) + "\n" + json.dumps({"text": "行二"}) + "\n")
    import datasets

    datasets.Dataset.from_dict({"body": ["parquet row"]}).to_parquet(str(tmp_path / "c.parquet"))
    assert list(resolve(str(tmp_path / "a.txt"))[0].documents()) == ["first document\nsecond line"]
    assert list(resolve(str(tmp_path / "b.jsonl"))[0].documents()) == ["row one", "行二"]
    assert list(resolve(str(tmp_path / "c.parquet"), text_field="body")[0].documents()) == ["parquet row"]


def test_missing_corpus(tmp_path):
    with pytest.raises(TinyLMError, match="corpus not found"):
        resolve(str(tmp_path / "nothing-here*.txt"))


def test_non_utf8_corpus(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("café crème".encode("latin-1"))
    with pytest.raises(TinyLMError, match="not UTF-8"):
        list(resolve(str(tmp_path / "latin1.txt"))[0].documents())


def test_wrong_text_field(tmp_path):
    (tmp_path / "x.jsonl").write_text(json.dumps({"content": "x"}) + "\n")
    with pytest.raises(TinyLMError, match="no field 'text'.*content"):
        list(resolve(str(tmp_path / "x.jsonl"))[0].documents())


def test_unknown_builtin_part():
    with pytest.raises(TinyLMError, match="unknown built-in corpus part"):
        resolve("builtin:shakespeare")


def test_hub_source_offline_is_a_clear_error(monkeypatch):
    import datasets
    import huggingface_hub

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # read at import time, so patch the constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(TinyLMError, match="needs network access"):
        list(resolve("hf:surely/not-a-dataset-here")[0].documents())
