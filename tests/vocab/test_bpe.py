"""Byte-level BPE (tokenizer.json) tokenizers: the Tokenizer interface, and compaction closed under merges."""

from __future__ import annotations

import json
import random

import pytest
import torch

from tests.bpe_fixtures import SPECIALS, bpe_texts, random_model_dir, train_bpe_dir
from tests.conftest import MIXED_TEXT
from tinylm.artifacts.model_dir import load_model_dir
from tinylm.cli import main as cli
from tinylm.data.corpus import Source
from tinylm.tokenizer import HFTokenizer, bytes_to_unicode, load_tokenizer
from tinylm.vocab.bpe import read_bpe
from tinylm.vocab.compact import compact_tokenizer, count_frequencies, read_frequencies, remap_model

transformers = pytest.importorskip("transformers")

TEXTS = [
    MIXED_TEXT,
    "def f(x):\n\treturn {'a': [1, 2, 3]}  # 中文注释\r\n",
    "  two leading spaces,   three inside, trailing   ",
    "😀😀 🚀x ᚠᚢᚦ ꦲꦏ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 עברית العربية हिन्दी",
    "数字123和English混合, 全角，标点。",
]


def random_text(seed: int, length: int = 300) -> str:
    """Random code points from every plane (no surrogates), and UTF-8 of random bytes with replacements."""
    rng = random.Random(seed)
    points = [rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0xD800), rng.randrange(0xE000, 0x10FFFF)])
              for _ in range(length)]
    return "".join(map(chr, points)) + bytes(rng.randrange(256) for _ in range(length)).decode("utf-8", "replace")


@pytest.fixture(scope="module")
def bpe_dir(corpus_dir, tmp_path_factory):
    return train_bpe_dir(bpe_texts(corpus_dir), tmp_path_factory.mktemp("bpe"), vocab_size=800)


@pytest.fixture(scope="module")
def counted(bpe_dir, corpus_dir, tmp_path_factory):
    docs = bpe_texts(corpus_dir)
    source = Source("memory", lambda: iter(docs), f"memory:{len(docs)}")
    return count_frequencies(HFTokenizer(bpe_dir / "tokenizer.json"), [source], tmp_path_factory.mktemp("freq"),
                             val_every=0)


@pytest.fixture(scope="module")
def compact_dir(bpe_dir, counted, corpus_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("c") / "compact"
    compact_tokenizer(HFTokenizer(bpe_dir / "tokenizer.json"), counted, 450, out, bpe_texts(corpus_dir)[:20])
    return out


def test_interface_ids_bos_and_byte_accounting(bpe_dir):
    tokenizer = load_tokenizer(bpe_dir)
    assert isinstance(tokenizer, HFTokenizer) and tokenizer.vocab_size == 800
    assert (tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id) == (0, 1, 2, 2)
    assert tokenizer.add_bos is False
    batch = tokenizer.encode(["a b", "你好"], bos=True, eos=True)
    assert batch[1] == [1] + tokenizer.encode_one("你好") + [2]
    for text in TEXTS:
        ids = tokenizer.encode_one(text)
        assert int(tokenizer.token_bytes[ids].sum()) == len(text.encode())  # no dummy prefix in byte-level BPE
        assert tokenizer.decode(ids) == text
    assert tokenizer.decode([1, *tokenizer.encode_one("x"), 2]) == "x"  # specials decode to nothing


def test_save_hf_loads_in_autotokenizer_with_the_same_ids(bpe_dir, tmp_path):
    tokenizer = load_tokenizer(bpe_dir)
    tokenizer.save_hf(tmp_path)
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for text in TEXTS:
        assert auto(text)["input_ids"] == tokenizer.encode_one(text)  # add_bos False: no BOS either way
    assert load_tokenizer(tmp_path).sha256 == tokenizer.sha256


def test_compaction_keeps_specials_bytes_and_is_closed_under_merges(compact_dir):
    record = json.loads((compact_dir / "compact.json").read_text())
    spec = json.loads((compact_dir / "tokenizer.json").read_text())
    tokens, merges = read_bpe(spec)
    assert len(tokens) == record["vocab_size"] == 450 and record["kind"] == "bpe"
    assert tokens[:3] == SPECIALS and set(bytes_to_unicode().values()) <= set(tokens)
    assert sorted(spec["model"]["vocab"].values()) == list(range(450))  # dense ids
    kept = set(tokens)
    assert all(a in kept and b in kept and a + b in kept for a, b in merges)
    built = {a + b for a, b in merges}
    assert all(t in built for t in tokens[3:] if t not in set(bytes_to_unicode().values())), "unproducible token"
    assert record["verify"]["changed_by_compaction"] == 0 and record["verify"]["inflation"] > 1
    assert 0.5 < record["counted_coverage"] < 1


@pytest.mark.parametrize("seed", range(3))
def test_compact_round_trip_is_lossless_on_any_text(compact_dir, seed):
    new = load_tokenizer(compact_dir)
    for text in [*TEXTS, random_text(seed)]:
        assert new.decode(new.encode_one(text)) == text


def test_same_ids_as_the_original_on_text_of_kept_tokens(bpe_dir, compact_dir, corpus_dir):
    old, new = load_tokenizer(bpe_dir), load_tokenizer(compact_dir)
    id_map = json.loads((compact_dir / "compact.json").read_text())["id_map"]
    old_to_new = {o: n for n, o in enumerate(id_map)}
    checked = 0
    for line in (line for doc in bpe_texts(corpus_dir) for line in doc.splitlines()):
        ids = old.encode_one(line)
        if ids and all(i in old_to_new for i in ids):
            assert new.encode_one(line) == [old_to_new[i] for i in ids], line
            checked += 1
    assert checked >= 20


def test_ignore_merges_is_kept_and_stays_lossless(bpe_dir, counted, tmp_path):
    spec = json.loads((bpe_dir / "tokenizer.json").read_text())
    spec["model"]["ignore_merges"] = True
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "tokenizer.json").write_text(json.dumps(spec))
    (tmp_path / "src" / "tokenizer_config.json").write_text((bpe_dir / "tokenizer_config.json").read_text())
    source = load_tokenizer(tmp_path / "src")
    frequencies = dict(counted, tokenizer_sha256=source.sha256)  # same vocabulary, same ids
    compact_tokenizer(source, frequencies, 400, tmp_path / "out")
    new = load_tokenizer(tmp_path / "out")
    assert json.loads((tmp_path / "out" / "tokenizer.json").read_text())["model"]["ignore_merges"] is True
    for text in [*TEXTS, random_text(7)]:
        assert new.decode(new.encode_one(text)) == text


@pytest.mark.parametrize("tie", [True, False])
def test_remapped_model_gives_the_same_logits_on_kept_ids(bpe_dir, compact_dir, corpus_dir, tmp_path, tie):
    source = random_model_dir(load_tokenizer(bpe_dir), tmp_path / "m", tie_embeddings=tie)
    remapped_dir = remap_model(source, compact_dir, tmp_path / "r")
    old_model, old = load_model_dir(source)
    new_model, new = load_model_dir(remapped_dir)
    keep = json.loads((compact_dir / "compact.json").read_text())["id_map"]
    assert new_model.config.vocab_size == len(keep) and new_model.config.tie_embeddings is tie
    lines = [line for doc in bpe_texts(corpus_dir) for line in doc.splitlines()]
    text = " ".join(line for line in lines if all(i in set(keep) for i in old.encode_one(line)))[:400]
    old_ids = old.encode_one(text)
    assert all(i in set(keep) for i in old_ids) and len(old_ids) > 20
    with torch.no_grad():
        expected = old_model(torch.tensor([old_ids]))[..., keep]
        got = new_model(torch.tensor([new.encode_one(text)]))
    assert torch.equal(got, expected)


def test_cli_count_compact_remap_coverage_on_a_bpe_model_dir(bpe_dir, corpus_dir, tmp_path, capsys):
    model = random_model_dir(load_tokenizer(bpe_dir), tmp_path / "m")
    cli(["tokenizer", "count", "--tokenizer", str(model), "--input", str(corpus_dir), "--out", str(tmp_path / "f")])
    assert read_frequencies(tmp_path / "f")["method"] == "documents"
    cli(["tokenizer", "compact", "--tokenizer", str(model), "--freq", str(tmp_path / "f"), "--vocab_size", "500",
         "--out", str(tmp_path / "t")])
    assert "lossless on" in capsys.readouterr().out
    cli(["tokenizer", "remap", "--model", str(model), "--tokenizer", str(tmp_path / "t"), "--out", str(tmp_path / "r")])
    cli(["tokenizer", "coverage", "--freq", str(tmp_path / "f"), "--out", str(tmp_path / "cov")])
    assert load_tokenizer(tmp_path / "r").vocab_size == 500 and (tmp_path / "cov" / "coverage.png").is_file()
    for args in (["compact", "--tokenizer", str(model), "--freq", str(tmp_path / "f"), "--vocab_size", "500",
                  "--out", str(tmp_path / "t")],
                 ["coverage", "--freq", str(tmp_path / "f"), "--out", str(tmp_path / "cov")]):
        with pytest.raises(SystemExit) as exit_info:  # an existing output is refused without --overwrite
            cli(["tokenizer", *args])
        assert exit_info.value.code == 2 and "--overwrite" in capsys.readouterr().err
    cli(["tokenizer", "coverage", "--freq", str(tmp_path / "f"), "--out", str(tmp_path / "cov"), "--overwrite", "true"])


def test_a_swapped_tokenizer_is_refused_on_load(bpe_dir, tmp_path):
    from tinylm.errors import TinyLMError

    model = random_model_dir(load_tokenizer(bpe_dir), tmp_path / "m")
    spec = json.loads((model / "tokenizer.json").read_text())
    a, b = list(spec["model"]["vocab"])[300:302]
    spec["model"]["vocab"][a], spec["model"]["vocab"][b] = spec["model"]["vocab"][b], spec["model"]["vocab"][a]
    (model / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(TinyLMError, match="not the file the model was written with"):
        load_model_dir(model)


# ---- the real SmolLM2-135M tokenizer (49,152 tokens) and model --------------------------------------------
@pytest.mark.slow
def test_smollm2_compacted_to_16000_on_the_builtin_corpus(tmp_path):
    """The issue's acceptance: lossless round trip, coverage reported, same logits on kept ids (~1 min)."""
    from tinylm.artifacts.builtin import resolve as resolve_model_dir
    from tinylm.data.corpus import resolve
    from tinylm.vocab.compact import sample_documents

    source = resolve_model_dir("builtin:smollm2-135m")
    old = load_tokenizer(source)
    frequencies = count_frequencies(old, resolve("builtin"), tmp_path / "freq")
    docs = sample_documents(["builtin"], 1_000_000)
    record = compact_tokenizer(old, frequencies, 16000, tmp_path / "t16k", docs)
    assert record["vocab_size"] == 16000 and record["verify"]["lossless"] == len(docs)
    assert record["verify"]["changed_by_compaction"] == 0 and record["counted_coverage"] > 0.98
    new = load_tokenizer(tmp_path / "t16k")
    vocab = json.loads((source / "tokenizer.json").read_text())["model"]["vocab"]
    for text in [*TEXTS, random_text(0)]:
        if all(c in vocab for c in (bytes_to_unicode()[b] for b in text.encode())):  # bytes SmolLM2 itself has
            assert new.decode(new.encode_one(text)) == text == old.decode(old.encode_one(text))
    keep = record["id_map"]
    kept = set(keep)
    lines = [line for doc in docs[:200] for line in doc.splitlines() if line.strip()]
    text = "\n".join(line for line in lines if all(i in kept for i in old.encode_one(line)))[:1500]
    old_ids = old.encode_one(text)
    assert all(i in kept for i in old_ids) and len(old_ids) > 100
    old_model, _ = load_model_dir(source)
    new_model, _ = load_model_dir(remap_model(source, tmp_path / "t16k", tmp_path / "m16k"))
    new_ids = new.encode_one(text)
    assert new_ids == [keep.index(i) for i in old_ids]
    with torch.no_grad():
        expected = old_model(torch.tensor([old_ids]))[..., keep]
        assert (new_model(torch.tensor([new_ids])) - expected).abs().max().item() <= 1e-5
