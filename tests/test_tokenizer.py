"""SentencePiece the LLaMA way: lossless round trips, byte accounting, clear errors."""

from __future__ import annotations

import pytest

from tests.conftest import MIXED_TEXT
from tinylm.errors import TinyLMError
from tinylm.tokenizer import load_tokenizer, train_tokenizer


def test_round_trip_is_lossless_on_mixed_text(tokenizer):
    for text in [MIXED_TEXT, "  indented\n\n\n  lines  ", "🦙🀄 ∮ E⋅da = Q, ǅ ẞ", "\t\r\n"]:
        assert tokenizer.decode(tokenizer.encode_one(text)) == text


def test_unseen_characters_fall_back_to_bytes(tokenizer):
    ids = tokenizer.encode_one("ꙮ")  # not in the training text
    assert tokenizer.unk_id not in ids
    assert all(tokenizer.sp.is_byte(i) for i in ids if tokenizer.piece(i) != "▁")


def test_token_bytes_count_the_utf8_bytes(tokenizer):
    text = MIXED_TEXT
    ids = tokenizer.encode_one(text)
    assert int(tokenizer.token_bytes[ids].sum()) == len(text.encode()) + 1  # + the dummy-prefix space


def test_llama_ids_and_batch_encoding(tokenizer):
    assert (tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id) == (0, 1, 2)
    batch = tokenizer.encode(["a b", "你好"], bos=True, eos=True)
    assert batch[0][0] == 1 and batch[0][-1] == 2 and batch[1] == [1] + tokenizer.encode_one("你好") + [2]


def test_vocab_larger_than_the_corpus_supports(tmp_path):
    with pytest.raises(TinyLMError, match="vocab_size=5000 is larger than this corpus supports"):
        train_tokenizer(["tiny corpus of a few words"] * 3, tmp_path / "t.model", vocab_size=5000)
    assert not (tmp_path / "t.model").exists()


def test_empty_corpus(tmp_path):
    with pytest.raises(TinyLMError, match="empty corpus"):
        train_tokenizer(["", "   \n"], tmp_path / "t.model", vocab_size=300)


def test_not_a_sentencepiece_file(tmp_path):
    (tmp_path / "bad.model").write_text("not a model")
    with pytest.raises(TinyLMError, match="not a SentencePiece model"):
        load_tokenizer(tmp_path / "bad.model")


def test_vocab_smaller_than_the_characters_needed(tmp_path):
    text = "".join(chr(0x4E00 + i) for i in range(600))
    with pytest.raises(TinyLMError, match="smaller than the .* characters this corpus needs"):
        train_tokenizer([text] * 3, tmp_path / "t.model", vocab_size=300, character_coverage=1.0)
