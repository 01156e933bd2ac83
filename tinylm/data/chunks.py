"""One split of a prepared dataset read as one token stream, across the chunk files litdata wrote.

``tinylm data prepare`` writes each split with litdata's ``optimize`` and its ``TokensLoader`` layout (litgpt's
pretraining format): chunk files of flat tokens behind a small header, listed in order in ``index.json`` with
their token counts (``dim``). ``TokenChunks`` puts those chunks end to end, so token ``t`` of the split — and
with it block ``i`` = tokens ``[i·L, i·L + L + 1)`` — has one address whichever chunk (or two) it lies in. That is
what lets the round plan name blocks by id across shards, exactly as over the one-file memmap cache.

A local folder is memory-mapped. A URI (``s3://``, ``gs://``, ``azure://``, ``local:`` …) goes to litdata's
downloader for that store: ``index.json`` is fetched into a local cache folder when opened, and each read asks
the store for the byte range it needs (an HTTP range request on S3), so a node never holds a copy of the data.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from litdata.constants import _NUMPY_DTYPES_MAPPING
from litdata.streaming.downloader import get_downloader

from tinylm.errors import TinyLMError

INDEX = "index.json"
_HEADER_WORD = 4  # chunk header: uint32 item count, then count + 1 uint32 item offsets (litdata writer.py)
_OPEN_MAPS = 64  # memory maps kept open at once (each holds a file descriptor)


def is_remote(root: str | os.PathLike) -> bool:
    """Whether ``root`` names an object store (read through litdata's downloader) rather than a local folder."""
    text = os.fspath(root)
    return "://" in text or text.startswith("local:")


def cache_folder(root: str, cache_dir: str | os.PathLike) -> Path:
    """Where files fetched from a remote dataset are kept: one folder per URI under ``cache_dir``."""
    return Path(cache_dir) / "prepared" / hashlib.sha256(root.rstrip("/").encode()).hexdigest()[:16]


def fetch(root: str, name: str, cache_dir: str | os.PathLike, storage_options: dict | None = None) -> Path:
    """A file of the dataset folder ``root`` as a local path: the file itself, or its copy fetched into the cache."""
    if not is_remote(root):
        return Path(root) / name
    local = cache_folder(root, cache_dir) / name
    local.parent.mkdir(parents=True, exist_ok=True)
    fresh = local.with_name(f"{name}.{os.getpid()}")  # fetched anew each time (the store may have a newer copy),
    remote = f"{root.rstrip('/')}/{name}"  # then swapped in whole: another rank may be reading the old one
    try:
        get_downloader(root, str(local.parent), [], storage_options).download_file(remote, str(fresh))
    except Exception as err:  # noqa: BLE001 — offline, no credentials, missing key: all mean "cannot read"
        raise TinyLMError(f"cannot fetch {remote} ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                          "check the URI and the store's credentials") from None
    os.replace(fresh, local)
    return local


class TokenChunks:
    """The tokens of a litdata ``TokensLoader`` dataset, end to end: ``len()`` tokens, sliced like an array.

    ``stream[a:b]`` returns a numpy array (a view of the memory map when the range lies in one local chunk).
    """

    def __init__(self, root: str | os.PathLike, cache_dir: str | os.PathLike, storage_options: dict | None = None):
        self.root, self.cache_dir, self.storage_options = os.fspath(root), Path(cache_dir), storage_options
        index_path = fetch(self.root, INDEX, cache_dir, storage_options)
        if not index_path.is_file():
            raise TinyLMError(f"{self.root} holds no litdata {INDEX}; write the dataset with `tinylm data prepare`")
        index = json.loads(index_path.read_text())
        config = index["config"]
        if config.get("item_loader") != "TokensLoader" or config.get("compression"):
            raise TinyLMError(f"{self.root} is not an uncompressed litdata TokensLoader dataset "
                              f"(item_loader={config.get('item_loader')}, compression={config.get('compression')}); "
                              "write it with `tinylm data prepare`")
        serializer, code = config["data_format"][0].split(":")
        if serializer != "no_header_numpy":
            raise TinyLMError(f"{self.root} stores {serializer} items; tinylm reads numpy token arrays")
        self.dtype = np.dtype(_NUMPY_DTYPES_MAPPING[int(code)])
        self.chunks: list[dict[str, Any]] = index["chunks"]
        self.starts = np.concatenate([[0], np.cumsum([c["dim"] for c in self.chunks], dtype=np.int64)])
        self._maps: OrderedDict[int, np.memmap] = OrderedDict()
        self._downloader = None

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice):
            raise TypeError("TokenChunks is read by slices: stream[start:stop]")
        start, stop, step = key.indices(len(self))
        if step != 1:
            raise TypeError("TokenChunks slices take no step")
        parts = []
        chunk = int(np.searchsorted(self.starts, start, side="right")) - 1
        while start < stop:
            end = min(stop, int(self.starts[chunk + 1]))
            parts.append(self._read(chunk, start - int(self.starts[chunk]), end - start))
            start, chunk = end, chunk + 1
        if not parts:
            return np.zeros(0, dtype=self.dtype)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """The whole split as one array (for small datasets and tests)."""
        return self[:].astype(dtype or self.dtype, copy=False)

    def _header(self, chunk: int) -> int:
        return (1 + self.chunks[chunk]["chunk_size"] + 1) * _HEADER_WORD

    def _read(self, chunk: int, offset: int, count: int) -> np.ndarray:
        if is_remote(self.root):
            if self._downloader is None:  # made lazily: DataLoader workers each build their own client
                self._downloader = get_downloader(self.root, str(cache_folder(self.root, self.cache_dir)),
                                                  self.chunks, self.storage_options)
            first = self._header(chunk) + offset * self.dtype.itemsize
            data = self._downloader.download_chunk_bytes_from_index(chunk, first, count * self.dtype.itemsize)
            return np.frombuffer(data, dtype=self.dtype)
        if chunk not in self._maps:
            path = Path(self.root) / self.chunks[chunk]["filename"]
            self._maps[chunk] = np.memmap(path, dtype=self.dtype, mode="r", offset=self._header(chunk),
                                          shape=(self.chunks[chunk]["dim"],))
            if len(self._maps) > _OPEN_MAPS:
                self._maps.popitem(last=False)
        self._maps.move_to_end(chunk)
        return self._maps[chunk][offset : offset + count]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()  # memory maps and store clients are per process
        state["_maps"], state["_downloader"] = OrderedDict(), None
        return state
