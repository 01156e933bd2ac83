"""The model dir: tinylm's one exchange format, which *is* the Hugging Face LLaMA layout.

    config.json          LlamaConfig keys
    model.safetensors    HF parameter names (model.layers.N.self_attn.q_proj.weight, ...)
    tokenizer.model      SentencePiece, and/or tokenizer.json (Hugging Face, e.g. byte-level BPE), plus
                         tokenizer_config.json / special_tokens_map.json for AutoTokenizer
    tinylm.json          provenance: recipe, parent model, vocab map, tokenizer sha256, tokens seen, seed ...

So transformers' LlamaForCausalLM, lm-eval's ``hf`` backend and a user's own LLaMA checkpoints need no
converter. Functions here take paths; a ``builtin:<name>`` is resolved to its converted dir at the edge
(``tinylm.artifacts.builtin``). Writes are atomic; loading never unpickles (safetensors, or
torch.load(weights_only=True)).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tinylm.artifacts.io import atomic_dir, sha256_file
from tinylm.errors import TinyLMError
from tinylm.model import ModelConfig, Transformer
from tinylm.tokenizer import BUILTIN_PREFIX, Tokenizer, load_tokenizer

PROVENANCE = "tinylm.json"
# Every file a loader may read the tokenizer from: tinylm reads tokenizer.model (else tokenizer.json), transformers
# and lm-eval's hf backend read tokenizer.json and tokenizer_config.json. Each one's hash is recorded and checked.
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def resolve_model_dir(directory: str | os.PathLike) -> Path:
    """The model dir's folder. ``builtin:`` names are resolved where the user gave them
    (``tinylm.artifacts.builtin.resolve``); here they are a mistake of the caller."""
    if str(directory).startswith(BUILTIN_PREFIX):
        raise TinyLMError(f"{directory}: a built-in name reached the model-dir loader unresolved; pass it through "
                          "tinylm.artifacts.builtin.resolve first")
    return Path(directory).expanduser()


def save_model_dir(
    directory: str | os.PathLike,
    model: Transformer,
    tokenizer: Tokenizer | None,
    provenance: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` (weights as they are) and its tokenizer to ``directory`` atomically."""
    return write_model_dir(directory, model.config, model.state_dict(), tokenizer, provenance, overwrite)


def write_model_dir(
    directory: str | os.PathLike,
    config: ModelConfig,
    state: dict[str, torch.Tensor],
    tokenizer: Tokenizer | None,
    provenance: dict[str, Any] | None = None,
    overwrite: bool = False,
    extra: Callable[[Path], None] | None = None,
    inputs: Sequence[str | os.PathLike] = (),
) -> Path:
    """Write a config, a state dict with HF names, a tokenizer and provenance as a model dir, atomically.

    An existing non-empty ``directory`` is refused unless ``overwrite`` and tinylm wrote it, and so is one that
    is, contains or lies inside any of ``inputs`` (``tinylm.artifacts.io``).
    ``extra(folder)`` writes any further files into the folder before it is renamed into place, so they appear
    together with the model or not at all.
    """
    directory = Path(directory)
    if tokenizer is not None and tokenizer.vocab_size > config.vocab_size:
        raise TinyLMError(
            f"tokenizer has {tokenizer.vocab_size} pieces but the model only {config.vocab_size} rows; "
            "remap the model to this tokenizer first (tinylm tokenizer remap)"
        )
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in state.items()}
    if config.tie_embeddings:
        state.pop("lm_head.weight", None)  # HF re-ties it from embed_tokens on load
    with atomic_dir(directory, overwrite, inputs=inputs) as tmp:
        (tmp / "config.json").write_text(json.dumps(config.to_hf(), indent=2) + "\n")
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save_hf(tmp)
        record = {"tinylm_format": 1, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                  "num_params": config.num_params(), **(provenance or {})}
        if tokenizer is not None:
            record["tokenizer_sha256"] = tokenizer.sha256  # checked on load
            record["tokenizer_files"] = {name: sha256_file(tmp / name) for name in TOKENIZER_FILES
                                         if (tmp / name).is_file()}
        (tmp / PROVENANCE).write_text(json.dumps(record, indent=2, default=str) + "\n")
        if extra is not None:
            extra(tmp)
    return directory


def check_tokenizer_files(directory: str | os.PathLike) -> None:
    """Refuse a model dir whose tokenizer files differ from the ones it was written with: the embedding rows would
    be read under the wrong ids (by tinylm, or by transformers reading tokenizer.json). A dir without provenance (a
    plain transformers export) is taken as it is."""
    directory = resolve_model_dir(directory)
    provenance = read_provenance(directory)
    recorded = provenance.get("tokenizer_files")
    if recorded is None:  # written before tinylm recorded every file: the main tokenizer's hash only
        main = next((directory / n for n in TOKENIZER_FILES[:2] if (directory / n).is_file()), None)
        recorded = {main.name: provenance["tokenizer_sha256"]} if main and "tokenizer_sha256" in provenance else {}
        present = [main.name] if main and recorded else []
    else:
        present = [name for name in TOKENIZER_FILES if (directory / name).is_file()]
    for name in present:
        if name not in recorded:
            raise TinyLMError(f"{directory}: {name} was added after the model was written (tinylm.json records "
                              f"{', '.join(recorded) or 'no tokenizer'}); remove it, or put the model's own back")
        if sha256_file(directory / name) != recorded[name]:
            raise TinyLMError(f"{directory}: {name} (sha256 {sha256_file(directory / name)[:12]}…) is not the file the "
                              f"model was written with (sha256 {recorded[name][:12]}…); put the model's own "
                              f"{name} back")
    for name in set(recorded) - set(present):
        if name in TOKENIZER_FILES[:2]:
            raise TinyLMError(f"{directory}: {name} is missing; put the model's own {name} back")


def check_same_tokenizer(directory: str | os.PathLike, tokenizer: Tokenizer) -> None:
    """Refuse training a model dir's weights under a tokenizer other than its own (same size or not: the rows
    would stand for other pieces)."""
    directory = resolve_model_dir(directory)
    provenance = read_provenance(directory)
    own = {provenance.get("tokenizer_sha256"), *provenance.get("tokenizer_files", {}).values()} - {None}
    if not own:  # no provenance: the tokenizer files it carries
        own = {sha256_file(directory / n) for n in TOKENIZER_FILES[:2] if (directory / n).is_file()}
    if own and tokenizer.sha256 not in own:
        raise TinyLMError(f"{directory} was trained with another tokenizer than {tokenizer.path} (sha256 "
                          f"{tokenizer.sha256[:12]}…); use the model's own (--data.tokenizer {directory}), or remap "
                          "the model to this tokenizer first (tinylm tokenizer remap)")


def load_config(directory: str | os.PathLike) -> ModelConfig:
    path = resolve_model_dir(directory) / "config.json"
    if not path.is_file():
        raise TinyLMError(f"not a model dir: {path} is missing; point at a dir written by tinylm or transformers")
    try:
        hf = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TinyLMError(f"{path} is not a JSON file ({err}); re-save the model") from None
    if not isinstance(hf, dict):
        raise TinyLMError(f"{path} holds a JSON {type(hf).__name__}, not a config mapping; re-save the model")
    try:
        return ModelConfig.from_hf(hf)
    except KeyError as err:
        raise TinyLMError(f"{path} is not a valid LLaMA config (no {err}); re-save the model") from None


def load_state_dict(directory: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read weights from model.safetensors (single or sharded) or, without unpickling, pytorch_model.bin."""
    directory = resolve_model_dir(directory)
    single, index = directory / "model.safetensors", directory / "model.safetensors.index.json"
    try:
        if single.is_file():
            return load_file(str(single))
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            return {k: v for shard in shards for k, v in load_file(str(directory / shard)).items()}
    except (SafetensorError, OSError, json.JSONDecodeError) as err:
        raise TinyLMError(
            f"{directory}: model weights are truncated or corrupt ({err}); re-save or re-copy the model dir"
        ) from None
    legacy = directory / "pytorch_model.bin"
    if legacy.is_file():
        try:
            return torch.load(legacy, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 — any unpickling failure means a bad file
            raise TinyLMError(f"{legacy}: cannot load safely ({err}); convert it to safetensors") from None
    raise TinyLMError(f"{directory}: no model.safetensors found; is this a model dir?")


def check_finite(state: dict[str, torch.Tensor], where: str) -> None:
    """Refuse weights holding NaN or inf: a corrupted file, or a diverged run; they would score as garbage."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            raise TinyLMError(f"{where}: {name} holds {bad} non-finite value(s) (NaN or inf); the weights are "
                              "corrupt or diverged; re-copy the model dir or use an earlier checkpoint")


def load_model_dir(
    directory: str | os.PathLike,
    attention: str = "sdpa",
    dtype: torch.dtype = torch.float32,
    with_tokenizer: bool = True,
) -> tuple[Transformer, Tokenizer | None]:
    """Load a model dir into a tinylm ``Transformer`` (and its tokenizer, when one is there).

    A tokenizer whose sha256 differs from the one ``tinylm.json`` records is refused: the rows would be read
    under the wrong ids. A dir without provenance (a plain transformers export) is taken as it is.
    """
    directory = resolve_model_dir(directory)
    config = load_config(directory)
    check_tokenizer_files(directory)
    state = load_state_dict(directory)
    check_finite(state, str(directory))
    if config.tie_embeddings:
        state.pop("lm_head.weight", None)
    with torch.device("meta"):
        model = Transformer(config, attention=attention)
    expected = set(model.state_dict())
    missing, unexpected = expected - set(state), set(state) - expected
    if config.tie_embeddings:
        missing.discard("lm_head.weight")
    unexpected = {k for k in unexpected if not k.endswith("rotary_emb.inv_freq")}
    if missing or unexpected:
        raise TinyLMError(
            f"{directory}: weights do not match config.json (missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}); the model dir is inconsistent"
        )
    for name, tensor in state.items():
        if name in expected and tuple(tensor.shape) != tuple(model.state_dict()[name].shape):
            raise TinyLMError(f"{directory}: {name} has shape {tuple(tensor.shape)}, config.json implies "
                              f"{tuple(model.state_dict()[name].shape)}; the model dir is inconsistent")
    model.load_state_dict({k: v.to(dtype) for k, v in state.items() if k in expected}, strict=False, assign=True)
    if config.tie_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.rope = type(model.rope)(config.head_dim, config.rope_theta)  # rebuild the non-persistent buffer
    tokenizer = None
    if with_tokenizer and any((directory / name).is_file() for name in ("tokenizer.model", "tokenizer.json")):
        tokenizer = load_tokenizer(directory)  # its files were checked against the provenance above
        if tokenizer.vocab_size > config.vocab_size:
            raise TinyLMError(
                f"{directory}: tokenizer has {tokenizer.vocab_size} pieces but the model only {config.vocab_size} "
                "embedding rows; use the tokenizer the model was trained with"
            )
    return model.eval(), tokenizer


def read_provenance(directory: str | os.PathLike) -> dict[str, Any]:
    path = resolve_model_dir(directory) / PROVENANCE
    return json.loads(path.read_text()) if path.is_file() else {}


def model_fingerprint(directory: str | os.PathLike) -> str:
    """What a model dir holds, by content (its config, tokenizer and weight files), not where it lies: the same
    model copied to another folder or machine has the same fingerprint, so a cache key built on it carries over."""
    folder = resolve_model_dir(directory)
    files = sorted(p for p in folder.iterdir()
                   if p.name in ("config.json", "tokenizer.json") or p.suffix == ".safetensors")
    if not any(p.suffix == ".safetensors" for p in files):
        raise TinyLMError(f"{folder}: no .safetensors weights to fingerprint; give a model dir written by tinylm or "
                          "transformers")
    return hashlib.sha256(json.dumps({p.name: sha256_file(p) for p in files}).encode()).hexdigest()[:16]
