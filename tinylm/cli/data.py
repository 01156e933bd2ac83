"""``tinylm data prepare``: the command over ``tinylm.data.prepared`` (tokenize a corpus once into sharded chunks
that many nodes train from). Every input and the output are checked before any work."""

from __future__ import annotations

from tinylm.artifacts import builtin
from tinylm.artifacts.io import check_output_dir
from tinylm.data.corpus import resolve
from tinylm.data.prepared import prepare
from tinylm.tokenizer import load_tokenizer


def prepare_command(tokenizer: str, out: str, sources: list[str] | str = "builtin", workers: int = 1,
                    chunk_bytes: str = "64MB", val_every: int = 50, unit_chars: int = 1_000_000,
                    text_field: str = "text", overwrite: bool = False) -> None:
    """Tokenize text sources in parallel into a prepared dataset: litdata token chunks, a manifest and the tokenizer.

    A killed prepare continues when run again with the same arguments. Train on the result with
    ``tinylm fit --data.prepared DIR`` (a local folder, or its copy in object storage: ``s3://bucket/DIR``).

    Args:
        tokenizer: a SentencePiece .model file, a tokenizer.json, a model dir or ``builtin:smollm2-135m``.
        out: the folder to write (refused when it exists and is not empty, unless --overwrite and tinylm wrote it).
        sources: text sources: ``builtin``, files/dirs/globs of .txt/.jsonl/.parquet, or ``hf:<name>``.
        workers: tokenizing processes (each encodes its units in batches on one core).
        chunk_bytes: the most bytes of tokens in one chunk file (e.g. 64MB).
        val_every: every val_every-th document of each source is held out for validation (as ``tinylm fit``).
        unit_chars: characters of text per unit of work (a worker call; resuming skips whole units).
        text_field: the text column of jsonl/parquet sources.
        overwrite: replace an ``out`` that tinylm wrote.
    """
    specs = [sources] if isinstance(sources, str) else list(sources)
    check_output_dir(out, overwrite, inputs=[tokenizer, *specs])
    tok = load_tokenizer(builtin.resolve(tokenizer))
    resolved = [s for spec in specs for s in resolve(spec, text_field)]
    manifest = prepare(resolved, tok, out, workers=workers, chunk_bytes=chunk_bytes, val_every=val_every,
                       unit_chars=unit_chars, overwrite=overwrite, inputs=[tokenizer, *specs])
    train, val = manifest["train"], manifest["val"]
    speed = f" at {manifest['encoded_mb_per_s']:.1f} MB/s" if manifest["encoded_mb_per_s"] else ""
    print(f"tinylm: prepared {train['tokens']:,} training and {val['tokens']:,} validation tokens from "
          f"{(train['bytes'] + val['bytes']) / 1e6:.1f} MB ({train['chunks'] + val['chunks']} chunks, "
          f"{manifest['units_reused']} units reused, {workers} workers{speed}) -> {out}")
