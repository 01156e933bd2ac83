"""Compact tokenizer: exact counting that resumes per shard, top-k compaction, model remap, coverage."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import MIXED_TEXT
from tinylm.artifacts.model_dir import load_model_dir, read_provenance
from tinylm.cli import main as cli
from tinylm.data.corpus import Source
from tinylm.errors import TinyLMError
from tinylm.tokenizer import Tokenizer, load_tokenizer
from tinylm.vocab.compact import (
    compact_tokenizer,
    count_frequencies,
    coverage_rows,
    pieces_for_coverage,
    read_frequencies,
    remap_model,
    select_vocab_rows,
    verify_compaction,
)

TRICKY = [
    MIXED_TEXT,
    "  two leading spaces,   three inside, trailing   ",
    "tabs\tand\t\ttabs\nnew\n\nlines\r\nand CRLF",
    "raw ▁ marks ▁▁ inside, and 'quotes' \"quotes\" — dashes – ellipses…",
    "数字123和English混合, 全角，标点。 半角, punctuation!",
    "😀😀 🚀x ᚠᚢᚦ ꦲꦏ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 עברית العربية हिन्दी",
]
LOSSLESS = [t for t in TRICKY if "▁" not in t]  # SentencePiece itself decodes a raw ▁ as a space


def memory_source(docs: list[str], name: str = "memory") -> Source:
    return Source(name, lambda: iter(docs), f"{name}:{len(docs)}:{hash(tuple(docs))}")


def reference_counts(tokenizer: Tokenizer, docs: list[str]) -> np.ndarray:
    ids = [i for row in tokenizer.encode(docs) for i in row]
    return np.bincount(np.asarray(ids, dtype=np.int64), minlength=tokenizer.vocab_size)


@pytest.fixture(scope="module")
def corpus_docs(corpus_dir) -> list[str]:
    return [p.read_text(encoding="utf-8") for p in sorted(corpus_dir.glob("*.txt"))]


@pytest.fixture(scope="module")
def mistral() -> Tokenizer:
    spec = importlib.util.find_spec("mistral_common")
    if spec is None:
        pytest.skip("mistral-common is not installed (pip install --no-deps mistral-common)")
    return load_tokenizer(Path(spec.submodule_search_locations[0]) / "data" / "tokenizer.model.v1")


@pytest.fixture(scope="module")
def compact_dir(tokenizer, corpus_docs, tmp_path_factory) -> Path:
    """The tests' 1000-piece tokenizer cut to 600 pieces on its own corpus."""
    root = tmp_path_factory.mktemp("compact")
    count_frequencies(tokenizer, [memory_source(corpus_docs)], root / "freq", val_every=0, workers=1)
    compact_tokenizer(tokenizer, read_frequencies(root / "freq"), 600, root / "tok600", corpus_docs[:20])
    return root / "tok600"


# ---- counting ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["tokenizer", "mistral"])
def test_counts_equal_encoding_whole_documents(which, request, tmp_path):
    tok = request.getfixturevalue(which)
    docs = TRICKY + [t.replace(" ", "  ") for t in TRICKY] + [" " + t for t in TRICKY]
    record = count_frequencies(tok, [memory_source(docs)], tmp_path, val_every=0, workers=1)
    assert record["method"] == "segments"
    assert np.array_equal(record["counts"], reference_counts(tok, docs))


def test_parallel_counting_resumes_per_shard(tokenizer, corpus_docs, tmp_path):
    sources = [memory_source(corpus_docs[:90], "a"), memory_source(corpus_docs[90:], "b")]
    train = [d for i, d in enumerate(corpus_docs[:90]) if i % 7 != 6] + \
            [d for i, d in enumerate(corpus_docs[90:]) if i % 7 != 6]
    first = count_frequencies(tokenizer, sources, tmp_path, val_every=7, workers=2, shard_chars=20_000)
    assert first["shards"] > 4 and first["shards_reused"] == 0
    assert np.array_equal(first["counts"], reference_counts(tokenizer, train))
    assert first["documents"] == len(train) and first["tokens"] == sum(first["counts"])

    # an interrupted run: source b lost its completion marker and two shards
    shards = sorted((tmp_path / "shards").glob("b-*.npz"))
    for path in [*shards[:2], *(tmp_path / "shards").glob("b-*.json")]:
        path.unlink()
    again = count_frequencies(tokenizer, sources, tmp_path, val_every=7, workers=1, shard_chars=20_000)
    assert again["shards_reused"] == first["shards"] - 2
    assert again["counts"] == first["counts"]

    def unreadable():
        raise AssertionError("a finished source must not be read again")

    done = [Source(s.spec, unreadable, s.fingerprint) for s in sources]
    assert count_frequencies(tokenizer, done, tmp_path, val_every=7, shard_chars=20_000)["counts"] == first["counts"]


# ---- compaction --------------------------------------------------------------------------------------------
def test_compact_keeps_specials_bytes_and_top_pieces(tokenizer, compact_dir):
    new = load_tokenizer(compact_dir)
    record = json.loads((compact_dir / "compact.json").read_text())
    id_map = record["id_map"]
    assert new.vocab_size == len(id_map) == 600 and id_map == sorted(id_map)
    assert all(new.piece(i) == tokenizer.piece(old) for i, old in enumerate(id_map))
    assert (new.unk_id, new.bos_id, new.eos_id) == (tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id)
    assert sum(new.sp.is_byte(i) for i in range(new.vocab_size)) == 256
    assert record["verify"]["lossless"] == record["verify"]["documents"] == 20
    assert record["verify"]["inflation"] >= 1.0


def test_round_trip_is_lossless_with_byte_fallback(tokenizer, compact_dir, tmp_path):
    counts = np.zeros(tokenizer.vocab_size, dtype=np.int64)
    tiny = compact_tokenizer(tokenizer, {"tokenizer_sha256": tokenizer.sha256, "counts": counts}, 300, tmp_path)
    for path in (compact_dir, tmp_path):
        new = load_tokenizer(path)
        for text in LOSSLESS:
            assert new.decode(new.encode_one(text)) == text
    check = verify_compaction(tokenizer, load_tokenizer(tmp_path), TRICKY)
    assert check["lossless"] == len(LOSSLESS) and check["changed_by_compaction"] == 0
    assert tiny["vocab_size"] == 300 and check["inflation"] > 1.0


def test_compact_mistral_to_8000_end_to_end(mistral, corpus_dir, tmp_path, capsys):
    cli(["tokenizer", "count", "--tokenizer", str(mistral.path), "--input", f"[{corpus_dir}]",
         "--out", str(tmp_path / "freq"), "--workers", "1"])
    cli(["tokenizer", "compact", "--tokenizer", str(mistral.path), "--freq", str(tmp_path / "freq"),
         "--vocab_size", "8000", "--out", str(tmp_path / "m8k"), "--verify_chars", "300000"])
    assert "kept 8000 of 32000 pieces" in capsys.readouterr().out
    new = load_tokenizer(tmp_path / "m8k")
    record = json.loads((tmp_path / "m8k" / "compact.json").read_text())
    assert new.vocab_size == 8000 and record["verify"]["lossless"] == record["verify"]["documents"] > 0
    assert 1.0 <= record["verify"]["inflation"] < 1.5
    assert all(new.decode(new.encode_one(t)) == t for t in LOSSLESS)
    assert (tmp_path / "m8k" / "tokenizer.json").is_file()  # Hugging Face files beside tokenizer.model


def test_unreachable_pieces_are_swapped_for_used_ones(tokenizer, tmp_path):
    """A long piece counted often but whose building blocks are all dropped would never be emitted."""
    proto_pieces = [tokenizer.piece(i) for i in range(tokenizer.vocab_size)]
    long = max((i for i, p in enumerate(proto_pieces) if p.startswith("▁") and len(p) >= 5 and p[1:].isalpha()),
               key=lambda i: len(proto_pieces[i]))
    counts = np.zeros(tokenizer.vocab_size, dtype=np.int64)
    counts[long] = 1000
    freq = {"tokenizer_sha256": tokenizer.sha256, "counts": counts}
    plain = compact_tokenizer(tokenizer, freq, 300, tmp_path / "plain", keep_reachable=False)
    repaired = compact_tokenizer(tokenizer, freq, 300, tmp_path / "repaired")
    assert long in plain["id_map"] and long not in repaired["id_map"] and repaired["replaced_unreachable"] >= 1
    # kept without the repair, the piece is a dead row: not even the word it spells encodes to it
    word = proto_pieces[long][1:]  # the dummy prefix supplies the leading ▁
    assert plain["id_map"].index(long) not in load_tokenizer(tmp_path / "plain").encode_one(word)
    assert tokenizer.encode_one(word) == [long]


# ---- remapping a model -------------------------------------------------------------------------------------
def test_select_vocab_rows_tied_and_untied():
    state = {"model.embed_tokens.weight": torch.arange(12.0).view(6, 2),
             "lm_head.weight": -torch.arange(12.0).view(6, 2),
             "model.norm.weight": torch.ones(2)}
    out = select_vocab_rows(state, [5, 0, 2])
    assert out["model.embed_tokens.weight"].tolist() == [[10, 11], [0, 1], [4, 5]]
    assert out["lm_head.weight"].tolist() == [[-10, -11], [0, -1], [-4, -5]]
    assert out["model.norm.weight"] is state["model.norm.weight"]
    tied = select_vocab_rows({"model.embed_tokens.weight": state["model.embed_tokens.weight"]}, [1])
    assert set(tied) == {"model.embed_tokens.weight"}
    with pytest.raises(TinyLMError, match="rows"):
        select_vocab_rows(state, [6])


@pytest.mark.parametrize("tied", [False, True])
def test_remapped_model_gives_identical_logits_for_kept_tokens(tied, model_dir_factory, compact_dir, corpus_docs,
                                                               tmp_path):
    source = model_dir_factory("debug", tie_embeddings=tied)
    out = remap_model(source, compact_dir, tmp_path / "remapped")
    old_model, old_tok = load_model_dir(source)
    new_model, new_tok = load_model_dir(out)
    keep = json.loads((compact_dir / "compact.json").read_text())["id_map"]
    assert new_model.config.vocab_size == 600 and read_provenance(out)["vocab_map"]["new_to_old"] == keep

    # phrases the compact tokenizer encodes with the same pieces as the full one
    words = " ".join(corpus_docs[:40]).split()
    phrases = [" ".join(words[i : i + 6]) for i in range(0, len(words) - 6, 3)]
    same = [p for p in phrases if [keep[i] for i in new_tok.encode_one(p)] == old_tok.encode_one(p)][:4]
    assert len(same) == 4
    for line in same:
        new_ids = torch.tensor([new_tok.encode_one(line, bos=True)])
        old_ids = torch.tensor([old_tok.encode_one(line, bos=True)])
        with torch.no_grad():
            assert torch.equal(old_model(old_ids)[..., keep], new_model(new_ids))


def test_inherit_takes_the_id_map_of_compact_json(model_dir_factory, compact_dir, tmp_path):
    """``tinylm inherit --keep_ids compact.json`` into the source's own shape is exactly the plain remap."""
    from tinylm.cli.inherit import inherit

    source = model_dir_factory("debug")
    remapped = remap_model(source, compact_dir, tmp_path / "remapped")
    inherit(source=str(source), target=str(remapped), out=str(tmp_path / "inherited"), layers="first",
            criterion="l1", keep_ids=str(compact_dir / "compact.json"), tokenizer=str(compact_dir / "tokenizer.model"))
    expected, _ = load_model_dir(remapped)
    inherited, tokenizer = load_model_dir(tmp_path / "inherited")
    assert tokenizer.sha256 == load_tokenizer(compact_dir / "tokenizer.model").sha256
    assert expected.state_dict().keys() == inherited.state_dict().keys()
    for name, weight in expected.state_dict().items():
        assert torch.equal(weight, inherited.state_dict()[name]), name


# ---- coverage ----------------------------------------------------------------------------------------------
def test_coverage_table_and_figure(tmp_path):
    counts = np.array([0, 50, 30, 10, 10], dtype=np.int64)
    rows = coverage_rows(counts, ks=[1, 2, 9])
    assert [(r["k"], round(r["coverage"], 2)) for r in rows] == [(1, 0.5), (2, 0.8), (5, 1.0)]
    assert pieces_for_coverage(counts, 0.8) == 2 and pieces_for_coverage(counts, 0.81) == 3
    freq = {"format": "tinylm-frequencies-v1", "tokenizer": "t.model", "counts": counts.tolist()}
    (tmp_path / "freq.json").write_text(json.dumps(freq))
    cli(["tokenizer", "coverage", "--freq", str(tmp_path / "freq.json"), "--out", str(tmp_path / "cov"),
         "--ks", "[1, 2]"])
    assert (tmp_path / "cov" / "coverage.png").stat().st_size > 1000
    assert "| 2 | 0.400 | 80.00% |" in (tmp_path / "cov" / "coverage.md").read_text()


# ---- bad input ---------------------------------------------------------------------------------------------
def test_bad_inputs_are_clear_one_line_errors(tokenizer, mistral, compact_dir, model_dir_factory, tmp_path, capsys):
    freq = {"tokenizer_sha256": tokenizer.sha256, "counts": np.ones(tokenizer.vocab_size, dtype=np.int64)}
    with pytest.raises(TinyLMError, match="larger than the tokenizer"):
        compact_tokenizer(tokenizer, freq, tokenizer.vocab_size + 1, tmp_path / "x")
    with pytest.raises(TinyLMError, match="260 special, byte and whitespace pieces"):
        compact_tokenizer(tokenizer, freq, 260, tmp_path / "x")
    with pytest.raises(TinyLMError, match="another tokenizer"):
        compact_tokenizer(mistral, freq, 1000, tmp_path / "x")
    assert not (tmp_path / "x").exists()

    with pytest.raises(SystemExit) as exit_info:
        cli(["tokenizer", "compact", "--tokenizer", str(tokenizer.path), "--freq", str(tmp_path / "missing"),
             "--vocab_size", "500", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "frequency file not found" in err

    (tmp_path / "bad.json").write_text('{"counts": [1, 2]}')
    with pytest.raises(TinyLMError, match="not a tinylm frequency file"):
        read_frequencies(tmp_path / "bad.json")

    model = model_dir_factory("debug")
    broken = tmp_path / "broken"
    shutil.copytree(model, broken)
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "vocab_size": 500}))
    with pytest.raises(TinyLMError, match="does not match its tokenizer"):
        remap_model(broken, compact_dir, tmp_path / "y")

    counts = np.zeros(mistral.vocab_size, dtype=np.int64)
    compact_tokenizer(mistral, {"tokenizer_sha256": mistral.sha256, "counts": counts}, 2000, tmp_path / "m2k")
    with pytest.raises(TinyLMError, match="not a compaction of the model's tokenizer"):
        remap_model(model, tmp_path / "m2k", tmp_path / "y")
    assert not (tmp_path / "y").exists()
