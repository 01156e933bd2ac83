"""Compacting a Hugging Face BPE ``tokenizer.json`` (byte-level, as SmolLM2, LLaMA-3, Qwen): the top-k tokens,
closed under merges.

The tokenizers library has no way to do this (its maintainers advise editing tokenizer.json by hand), so here
is the edit. Kept: every added/special token, every byte token (the 256 characters of the byte-level alphabet,
or the ``<0xNN>`` pieces of a byte-fallback BPE) — so any text still encodes and decodes losslessly — and the
most frequent other tokens. A BPE token can only appear if the merge that builds it fires, so the kept set is
closed under merges: a token comes in together with the parts of every merge that builds it, recursively; a
token whose closure no longer fits the budget is passed over for the next one. Then every merge whose parts or
result were dropped is dropped too, the survivors keep their order, and ids become dense (ascending old id).

Why the compact tokenizer gives the original's ids on any text the original encodes with kept tokens only:
each merge the original applies yields a token that is kept or is a part of a later (kept) merge, hence kept
by the closure; so the merge with the best rank available at each step is a kept merge, and the compact
tokenizer, whose merges are a subset in the same order, makes the same choice. ``ignore_merges`` (a word that
is itself a token is emitted whole) is kept as the file sets it; the closure is taken all the same, so a kept
token is producible by merges too, and the argument holds word by word.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from tinylm.errors import TinyLMError
from tinylm.tokenizer import bytes_to_unicode

_BYTE_PIECE = [f"<0x{b:02X}>" for b in range(256)]


def read_bpe(spec: dict[str, Any]) -> tuple[list[str], list[tuple[str, str]]]:
    """Tokens in id order and merges (pairs) of a tokenizer.json spec; refuses anything but a plain BPE model."""
    model = spec.get("model", {})
    if model.get("type") != "BPE":
        raise TinyLMError(f"tokenizer.json model type {model.get('type')!r} cannot be compacted here; only BPE "
                          "(SentencePiece tokenizers are compacted from their tokenizer.model)")
    size = max([*model["vocab"].values(), *(t["id"] for t in spec.get("added_tokens", []))]) + 1
    tokens = [""] * size
    for token, index in model["vocab"].items():
        tokens[index] = token
    for added in spec.get("added_tokens", []):
        tokens[added["id"]] = added["content"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]
    return tokens, merges


def byte_tokens(spec: dict[str, Any], tokens: list[str]) -> list[int]:
    """Ids of the tokens every byte falls back to: the byte-level alphabet, or ``<0xNN>`` pieces."""
    index = {t: i for i, t in enumerate(tokens)}
    byte_level = (spec.get("decoder") or {}).get("type") == "ByteLevel" or "ByteLevel" in json.dumps(
        spec.get("pre_tokenizer"))
    names = bytes_to_unicode().values() if byte_level else _BYTE_PIECE
    return sorted(index[n] for n in names if n in index)


def choose_tokens(spec: dict[str, Any], counts: np.ndarray, vocab_size: int) -> tuple[list[int], dict[str, int]]:
    """The old ids to keep (ascending): added, byte tokens, then the most frequent tokens with their merge parts.

    Ties go to the lower id (the earlier merge).
    """
    tokens, merges = read_bpe(spec)
    index = {t: i for i, t in enumerate(tokens)}
    mandatory = set(byte_tokens(spec, tokens)) | {t["id"] for t in spec.get("added_tokens", [])}
    if vocab_size > len(tokens):
        raise TinyLMError(f"vocab_size={vocab_size} is larger than the tokenizer ({len(tokens)} tokens); "
                          f"give a vocab_size of at most {len(tokens)}")
    if vocab_size <= len(mandatory):
        raise TinyLMError(f"vocab_size={vocab_size} leaves no room for normal tokens: the tokenizer has "
                          f"{len(mandatory)} special and byte tokens that are always kept; give more than that")
    parts: dict[int, set[int]] = {}
    for left, right in merges:
        result = index.get(left + right)
        if result is not None and left in index and right in index:
            parts.setdefault(result, set()).update((index[left], index[right]))

    def closure(token: int, into: set[int]) -> None:
        stack = [token]
        while stack:
            t = stack.pop()
            if t not in into:
                into.add(t)
                stack.extend(parts.get(t, ()))

    kept = set(mandatory)
    ranked = sorted(set(range(len(tokens))) - mandatory, key=lambda i: (-counts[i], i))
    passed_over = picked = 0
    for token in ranked:
        if len(kept) >= vocab_size:
            break
        if token in kept:
            continue
        needed: set[int] = set()
        closure(token, needed)
        needed -= kept
        if len(kept) + len(needed) <= vocab_size:
            kept |= needed
            picked += 1
        else:
            passed_over += 1
    return sorted(kept), {"mandatory": len(mandatory), "passed_over": passed_over,
                          "kept_as_merge_parts": len(kept) - len(mandatory) - picked}


def compact_spec(spec: dict[str, Any], keep: list[int]) -> dict[str, Any]:
    """A copy of the tokenizer.json spec with only ``keep`` (ascending old ids), dense new ids, and the merges
    whose parts and result all survive, in their original order."""
    tokens, merges = read_bpe(spec)
    new_id = {old: new for new, old in enumerate(keep)}
    kept_tokens = {tokens[i] for i in keep}
    out = json.loads(json.dumps(spec))
    added_ids = {t["id"] for t in spec.get("added_tokens", [])}
    out["model"]["vocab"] = {tokens[old]: new for new, old in enumerate(keep) if old not in added_ids
                             or tokens[old] in spec["model"]["vocab"]}
    as_strings = isinstance((spec["model"].get("merges") or [""])[0], str)
    out["model"]["merges"] = [f"{a} {b}" if as_strings else [a, b] for a, b in merges
                              if a in kept_tokens and b in kept_tokens and a + b in kept_tokens]
    for added in out.get("added_tokens", []):
        added["id"] = new_id[added["id"]]
    _remap_post_processor(out.get("post_processor"), new_id)
    return out


def _remap_post_processor(node: Any, new_id: dict[int, int]) -> None:
    """Special-token ids a TemplateProcessing (or BertProcessing) spells out follow the new ids."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "ids" and isinstance(value, list) and all(isinstance(i, int) for i in value):
                node[key] = [new_id[i] for i in value]
            elif key in ("sep", "cls") and isinstance(value, list) and len(value) == 2:
                node[key] = [value[0], new_id[value[1]]]
            else:
                _remap_post_processor(value, new_id)
    elif isinstance(node, list):
        for item in node:
            _remap_post_processor(item, new_id)
