"""One tokenizer interface over SentencePiece (``tokenizer.model``) and Hugging Face (``tokenizer.json``) files.

``load_tokenizer(path)`` picks the kind: a model dir or tokenizer dir with ``tokenizer.model`` is SentencePiece
(the reference when both files are there, as in the dirs tinylm writes), one with only ``tokenizer.json`` is a
Hugging Face tokenizer (byte-level BPE, as in SmolLM2, LLaMA-3, Qwen). Callers see the same ids, encode/decode,
special ids, ``add_bos`` (the tokenizer's own setting: True for LLaMA's SentencePiece, False for SmolLM2) and
``token_bytes`` for bits-per-byte.

SentencePiece training follows LLaMA's tokenizer: BPE, byte fallback (nothing is out of vocabulary), digits
split, a dummy prefix space, and the *identity* normalizer with whitespace kept as is — the default nmt_nfkc
normalizer drops newlines and collapses spaces, so code and line structure would not survive a round trip
and transformers' converted tokenizer would disagree with SentencePiece on ids.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import sentencepiece as spm

from tinylm.errors import TinyLMError

_BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")
HF_FILE, SP_FILE = "tokenizer.json", "tokenizer.model"
BUILTIN_PREFIX = "builtin:"


def load_tokenizer(path: str | os.PathLike) -> "Tokenizer":
    """The tokenizer at ``path``: a model/tokenizer dir, a ``.model`` (SentencePiece) or ``.json`` (HF) file.
    (A built-in model's name is resolved to its dir where the user gave it: ``tinylm.artifacts.builtin``.)"""
    if str(path).startswith(BUILTIN_PREFIX):
        raise TinyLMError(f"{path}: a built-in name reached the tokenizer loader unresolved; pass it through "
                          "tinylm.artifacts.builtin.resolve first")
    path = Path(path).expanduser()
    if path.is_dir():
        if (path / SP_FILE).is_file():
            return SentencePieceTokenizer(path / SP_FILE)
        if (path / HF_FILE).is_file():
            return HFTokenizer(path / HF_FILE)
        raise TinyLMError(f"no tokenizer in {path}: it has neither {SP_FILE} nor {HF_FILE}; "
                          "give a model dir or a tokenizer file")
    if not path.is_file():
        raise TinyLMError(f"tokenizer not found: {path}; give a SentencePiece .model file, a tokenizer.json "
                          "or a model dir")
    return HFTokenizer(path) if path.suffix == ".json" else SentencePieceTokenizer(path)


class Tokenizer(ABC):
    """What tinylm needs of a tokenizer, whatever its kind."""

    path: Path
    add_bos: bool  # the tokenizer's own setting: does its normal use put BOS in front of a text?

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @property
    @abstractmethod
    def bos_id(self) -> int | None: ...

    @property
    @abstractmethod
    def eos_id(self) -> int | None: ...

    @property
    @abstractmethod
    def unk_id(self) -> int | None: ...

    @property
    @abstractmethod
    def pad_id(self) -> int: ...

    @abstractmethod
    def encode(self, texts: list[str], bos: bool = False, eos: bool = False) -> list[list[int]]: ...

    @abstractmethod
    def decode(self, ids: list[int]) -> str: ...

    @abstractmethod
    def piece(self, token_id: int) -> str: ...

    @abstractmethod
    def piece_id(self, piece: str) -> int | None:
        """The id of a piece string, or None when the vocabulary lacks it."""

    @abstractmethod
    def save_hf(self, directory: str | os.PathLike) -> None:
        """Write the files transformers' AutoTokenizer loads offline into ``directory``."""

    @property
    @abstractmethod
    def token_bytes(self) -> np.ndarray:
        """UTF-8 bytes each id stands for (0 for special ids): summed over a text's ids, its byte count."""

    def encode_one(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        return self.encode([text], bos=bos, eos=eos)[0]

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model with the ids a LLaMA model expects (unk 0, bos 1, eos 2 by default)."""

    add_bos = True

    def __init__(self, path: str | os.PathLike) -> None:
        path = Path(path)
        if path.is_dir():
            path = path / SP_FILE
        if not path.is_file():
            raise TinyLMError(f"tokenizer not found: {path}; give a SentencePiece .model file or a model dir")
        self.path = path
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.Load(str(path))
        except (OSError, RuntimeError) as err:
            raise TinyLMError(f"cannot read tokenizer {path}: not a SentencePiece model ({err})") from err

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    @property
    def bos_id(self) -> int | None:
        return _id_or_none(self.sp.bos_id())

    @property
    def eos_id(self) -> int | None:
        return _id_or_none(self.sp.eos_id())

    @property
    def unk_id(self) -> int | None:
        return _id_or_none(self.sp.unk_id())

    @property
    def pad_id(self) -> int:
        """The pad id (SentencePiece's, or eos when the model has none, as LLaMA does)."""
        return self.sp.pad_id() if self.sp.pad_id() >= 0 else self.sp.eos_id()

    def encode(self, texts: list[str], bos: bool = False, eos: bool = False, num_threads: int = -1) -> list[list[int]]:
        return self.sp.encode(texts, add_bos=bos, add_eos=eos, num_threads=num_threads)

    def encode_one(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        return self.sp.encode(text, add_bos=bos, add_eos=eos)

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode(ids)

    def piece(self, token_id: int) -> str:
        return self.sp.id_to_piece(token_id)

    def piece_id(self, piece: str) -> int | None:
        token_id = self.sp.piece_to_id(piece)
        return token_id if self.sp.id_to_piece(token_id) == piece else None

    @cached_property
    def token_bytes(self) -> np.ndarray:
        """Byte pieces 1, control pieces 0, '▁' counted as a space (plus one byte per dummy prefix in a text)."""
        out = np.zeros(self.vocab_size, dtype=np.int64)
        for i in range(self.vocab_size):
            if self.sp.is_control(i) or self.sp.is_unknown(i):
                continue
            piece = self.sp.id_to_piece(i)
            out[i] = 1 if self.sp.is_byte(i) or _BYTE_PIECE.match(piece) else len(piece.replace("▁", " ").encode())
        return out

    def save_hf(self, directory: str | os.PathLike) -> None:
        """Write tokenizer.model plus a tokenizer.json that transformers' AutoTokenizer loads offline.

        transformers' own LLaMA conversion prepends '▁' only when the text does not already start with a
        space, unlike SentencePiece's dummy prefix; the tokenizer.json written here uses the normalizer
        Prepend('▁') + Replace(' ', '▁'), which gives SentencePiece's ids for every input.
        """
        from tokenizers import normalizers
        from transformers import AutoTokenizer

        directory = Path(directory)
        (directory / SP_FILE).write_bytes(self.path.read_bytes())
        special = {"bos_token": self.piece(self.sp.bos_id()), "eos_token": self.piece(self.sp.eos_id()),
                   "unk_token": self.piece(self.sp.unk_id())}
        config = {"tokenizer_class": "LlamaTokenizer", **special, "add_bos_token": True, "add_eos_token": False,
                  "clean_up_tokenization_spaces": False, "model_max_length": 1_000_000_000}
        (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
        backend = AutoTokenizer.from_pretrained(str(directory)).backend_tokenizer  # converts tokenizer.model
        backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        backend.pre_tokenizer = None
        backend.save(str(directory / HF_FILE))
        config["tokenizer_class"] = "PreTrainedTokenizerFast"  # use tokenizer.json exactly as written
        (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
        (directory / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


class HFTokenizer(Tokenizer):
    """A Hugging Face ``tokenizer.json`` (byte-level BPE and others), with the special tokens and BOS setting of
    the ``tokenizer_config.json`` beside it.

    ``encode`` never lets the file's post-processor add specials: BOS/EOS are added only when asked, so the
    same call means the same thing for both kinds. ``add_bos`` says what the tokenizer itself does: the
    config's ``add_bos_token`` when it sets one, else whether the post-processor puts BOS first.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        from tokenizers import Tokenizer as Backend

        self.path = Path(path)
        try:
            self.backend = Backend.from_file(str(self.path))
        except Exception as err:  # noqa: BLE001 — tokenizers raises a bare Exception on a bad file
            raise TinyLMError(f"cannot read tokenizer {self.path}: not a Hugging Face tokenizer.json "
                              f"({str(err).splitlines()[0][:200]})") from None
        config_path = self.path.with_name("tokenizer_config.json")
        self.config: dict[str, Any] = json.loads(config_path.read_text()) if config_path.is_file() else {}
        self._bos, self._eos = self._special("bos_token"), self._special("eos_token")
        self._unk, self._pad = self._special("unk_token"), self._special("pad_token")
        if self.config.get("add_bos_token") is not None:
            self.add_bos = bool(self.config["add_bos_token"])
        else:
            plain = self.backend.encode("a", add_special_tokens=False).ids
            full = self.backend.encode("a", add_special_tokens=True).ids
            self.add_bos = self._bos is not None and len(full) > len(plain) and full[0] == self._bos

    def _special(self, name: str) -> int | None:
        token = self.config.get(name)
        if isinstance(token, dict):  # {"content": "<s>", ...} in older configs
            token = token.get("content")
        return None if token is None else self.backend.token_to_id(token)

    @cached_property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def bos_id(self) -> int | None:
        return self._bos

    @property
    def eos_id(self) -> int | None:
        return self._eos

    @property
    def unk_id(self) -> int | None:
        return self._unk

    @property
    def pad_id(self) -> int:
        for token_id in (self._pad, self._eos, self._unk):
            if token_id is not None:
                return token_id
        return 0

    @cached_property
    def special_ids(self) -> set[int]:
        return {i for i, token in self.backend.get_added_tokens_decoder().items() if token.special}

    def encode(self, texts: list[str], bos: bool = False, eos: bool = False) -> list[list[int]]:
        if (bos and self._bos is None) or (eos and self._eos is None):
            raise TinyLMError(f"tokenizer {self.path} has no {'BOS' if bos and self._bos is None else 'EOS'} "
                              "token; set bos_token/eos_token in its tokenizer_config.json")
        head, tail = [self._bos] if bos else [], [self._eos] if eos else []
        return [head + e.ids + tail for e in self.backend.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=True)  # like SentencePiece's control pieces

    def piece(self, token_id: int) -> str:
        return self.backend.id_to_token(token_id)

    def piece_id(self, piece: str) -> int | None:
        return self.backend.token_to_id(piece)

    @cached_property
    def byte_level(self) -> bool:
        decoder = json.loads(self.backend.to_str()).get("decoder") or {}
        return decoder.get("type") == "ByteLevel"

    @cached_property
    def token_bytes(self) -> np.ndarray:
        out = np.zeros(self.vocab_size, dtype=np.int64)
        unicode_to_byte = {c: b for b, c in bytes_to_unicode().items()}
        for i in range(self.vocab_size):
            piece = self.backend.id_to_token(i)
            if piece is None or i in self.special_ids:
                continue
            if self.byte_level and all(c in unicode_to_byte for c in piece):
                out[i] = len(piece)  # one alphabet character per byte
            elif _BYTE_PIECE.match(piece):
                out[i] = 1
            else:
                out[i] = len(piece.replace("▁", " ").encode())
        return out

    def save_hf(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        shutil.copyfile(self.path, directory / HF_FILE)
        names = {"bos_token": self._bos, "eos_token": self._eos, "unk_token": self._unk, "pad_token": self._pad}
        special = {name: self.piece(i) for name, i in names.items() if i is not None}
        config = {"tokenizer_class": "PreTrainedTokenizerFast", **special, "add_bos_token": self.add_bos,
                  "add_eos_token": False, "clean_up_tokenization_spaces": False,
                  "model_max_length": self.config.get("model_max_length", 1_000_000_000)}
        if "chat_template" in self.config:
            config["chat_template"] = self.config["chat_template"]
        (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
        (directory / "special_tokens_map.json").write_text(json.dumps(special, indent=2, ensure_ascii=False) + "\n")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: each byte as one printable character (tokenizer.json spells pieces so)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return {b: chr(b if b in printable else next(extra)) for b in range(256)}


def _id_or_none(token_id: int) -> int | None:
    return token_id if token_id >= 0 else None


def train_tokenizer(
    texts: Iterable[str],
    out: str | os.PathLike,
    vocab_size: int = 8000,
    character_coverage: float = 0.9995,
    max_sentences: int = 2_000_000,
    num_threads: int = os.cpu_count() or 1,
    seed_sentencepiece_size: int = 1_000_000,
) -> SentencePieceTokenizer:
    """Train a LLaMA-style SentencePiece BPE model on ``texts`` (one document each) and write ``out``.

    Each line of a document is one SentencePiece "sentence"; newlines themselves are learned as byte pieces.
    """
    out = Path(out)
    if out.suffix != ".model":
        raise TinyLMError(f"tokenizer output {out} must end in .model")
    lines = _lines(texts, max_sentences)
    first = next(lines, None)
    if first is None:
        raise TinyLMError("cannot train a tokenizer on an empty corpus; give at least one non-empty text")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.stem}.", dir=out.parent) as tmp:
        prefix = Path(tmp) / "sp"
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=_chain(first, lines),
                model_prefix=str(prefix),
                model_type="bpe",
                vocab_size=vocab_size,
                character_coverage=character_coverage,
                byte_fallback=True,
                split_digits=True,
                add_dummy_prefix=True,
                allow_whitespace_only_pieces=True,
                remove_extra_whitespaces=False,
                normalization_rule_name="identity",
                unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
                max_sentence_length=1 << 16,
                input_sentence_size=max_sentences,
                shuffle_input_sentence=True,
                num_threads=num_threads,
                seed_sentencepiece_size=seed_sentencepiece_size,
                minloglevel=2,
            )
        except RuntimeError as err:
            message = str(err).strip().splitlines()[-1]
            if "smaller than required_chars" in message:
                needed = re.search(r"vs (\d+)", message)
                raise TinyLMError(
                    f"vocab_size={vocab_size} is smaller than the {needed.group(1) if needed else 'many'} characters "
                    f"this corpus needs at character_coverage={character_coverage}; raise vocab_size or lower "
                    "character_coverage (byte fallback covers the rest)"
                ) from None
            if "Vocabulary size is too high" in message or "vocab_size" in message:
                raise TinyLMError(
                    f"vocab_size={vocab_size} is larger than this corpus supports ({message}); "
                    "use a smaller vocab_size or more text"
                ) from None
            raise TinyLMError(f"SentencePiece training failed: {message}") from None
        os.replace(f"{prefix}.model", out)
    return SentencePieceTokenizer(out)


def _lines(texts: Iterable[str], limit: int) -> Iterator[str]:
    count = 0
    for text in texts:
        for line in text.splitlines():
            if line.strip():
                yield line
                count += 1
                if count >= limit:
                    return


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest
