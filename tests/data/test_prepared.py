"""``tinylm data prepare`` and training from a prepared dataset: the same blocks as the memmap cache (whatever the
worker count, across chunk boundaries, from a folder or through a URI), litgpt's reader reads the chunks, a killed
prepare continues, bad input is refused in one line, and the 1B-Pro recipe's data path trains on CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from litdata import StreamingDataset
from litdata.streaming.item_loader import TokensLoader

from tinylm.cli.main import main
from tinylm.data.chunks import TokenChunks
from tinylm.data.corpus import resolve
from tinylm.data.datamodule import TextDataModule
from tinylm.data.prepared import prepare
from tinylm.errors import TinyLMError

REPO = Path(__file__).resolve().parents[2]
SMALL = dict(unit_chars=20_000, chunk_bytes="40KB")  # many units and chunks out of a small corpus


@pytest.fixture(scope="module")
def prepared(corpus_dir, tokenizer, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "data"
    prepare(resolve(str(corpus_dir)), tokenizer, out, workers=2, val_every=10, **SMALL)
    return out


def datamodule(tmp_path, **kwargs) -> TextDataModule:
    data = TextDataModule(seq_len=32, batch_size=4, cache_dir=str(tmp_path / "cache"), **kwargs)
    data.prepare_data()
    data.setup("fit")
    return data


def test_prepared_blocks_and_batches_equal_the_memmap_caches(corpus_dir, tokenizer, prepared, tmp_path):
    memmap = datamodule(tmp_path, sources=str(corpus_dir), tokenizer=str(tokenizer.path), val_every=10)
    chunked = datamodule(tmp_path, prepared=str(prepared))
    stream = chunked.train_stream
    assert isinstance(stream, TokenChunks) and len(stream.chunks) > 3
    np.testing.assert_array_equal(np.asarray(stream), np.asarray(memmap.train_stream))
    np.testing.assert_array_equal(np.asarray(chunked.val_stream), np.asarray(memmap.val_stream))
    # blocks by id, including those that straddle a chunk boundary
    straddling = [i for i in range(chunked.num_train_blocks)
                  if np.searchsorted(stream.starts, i * 32 + 32, side="right") >
                  np.searchsorted(stream.starts, i * 32, side="right")]
    assert straddling and chunked.num_train_blocks == memmap.num_train_blocks
    for i in [*straddling, 0, chunked.num_train_blocks - 1]:
        for key, value in chunked.train_blocks()[i].items():
            assert torch.equal(value, memmap.train_blocks()[i][key])
    # the same seeded order, batch for batch, for training and validation
    for a, b in zip(chunked.train_dataloader(), memmap.train_dataloader(), strict=True):
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["sample_id"], b["sample_id"])
    for a, b in zip(chunked.val_dataloader(), memmap.val_dataloader(), strict=True):
        assert torch.equal(a["labels"], b["labels"])
    for split in ("train", "val"):
        assert {k: chunked.meta[split][k] for k in ("documents", "tokens", "bytes")} == memmap.meta[split]
    assert chunked.tokenizer.sha256 == tokenizer.sha256 and chunked.val_every == 10
    assert chunked.settings()["prepared"] == chunked.meta["id"]


def test_the_worker_count_does_not_change_the_dataset(corpus_dir, tokenizer, prepared, tmp_path):
    one = prepare(resolve(str(corpus_dir)), tokenizer, tmp_path / "one", workers=1, val_every=10, **SMALL)
    two = json.loads((prepared / "manifest.json").read_text())
    assert one["id"] == two["id"] and one["workers"] == 1 and two["workers"] == 2
    for split in ("train", "val"):
        np.testing.assert_array_equal(np.asarray(TokenChunks(tmp_path / "one" / split, tmp_path)),
                                      np.asarray(TokenChunks(prepared / split, tmp_path)))


def test_a_uri_reads_through_litdatas_downloader_by_byte_range(prepared, tmp_path):
    local = datamodule(tmp_path / "a", prepared=str(prepared))
    remote = datamodule(tmp_path / "b", prepared=f"local:{prepared}")  # litdata's store for a local path
    assert remote.train_stream._downloader is None  # nothing read yet
    np.testing.assert_array_equal(np.asarray(remote.train_stream), np.asarray(local.train_stream))
    assert remote.train_stream._downloader is not None
    assert remote.cache_folder != prepared and (remote.cache_folder / "manifest.json").is_file()
    assert remote.settings() == local.settings()  # the same dataset, wherever it is read from


def test_litgpts_reader_reads_the_chunks(prepared, tmp_path):
    """The chunks are plain litdata TokensLoader chunks: litgpt's StreamingDataset serves them as they are."""
    stream = TokenChunks(prepared / "train", tmp_path)
    litgpt = StreamingDataset(str(prepared / "train"), item_loader=TokensLoader(block_size=17),
                              cache_dir=str(tmp_path / "litdata"))
    expected = [stream[int(s) + 17 * k : int(s) + 17 * (k + 1)]
                for s, c in zip(stream.starts, stream.chunks) for k in range(c["dim"] // 17)]
    assert len(litgpt) == len(expected)
    for index in (0, 1, len(expected) // 2, len(expected) - 1):
        np.testing.assert_array_equal(np.asarray(litgpt[index]), expected[index])


def test_a_killed_prepare_continues_where_it_stopped(tmp_path):
    out, tok = tmp_path / "out", tmp_path / "tok"
    main(["tokenizer", "train", "--input", "builtin:lee", "--out", str(tok) + ".model", "--vocab_size", "600"])
    argv = ["data", "prepare", "--sources", "builtin:lee,kjv", "--tokenizer", f"{tok}.model", "--out", str(out),
            "--unit_chars", "10000", "--chunk_bytes", "100KB"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    process = subprocess.Popen([sys.executable, "-m", "tinylm.cli", *argv], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    progress = tmp_path / ".out.tinylm-prepare" / "progress.json"
    deadline = time.monotonic() + 120
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if progress.is_file() and json.loads(progress.read_text())["train"]["units"] > 0:
                os.killpg(process.pid, signal.SIGKILL)  # kill -9, mid-prepare
                break
            time.sleep(0.01)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    output = process.communicate()[0].decode()
    assert process.returncode == -signal.SIGKILL, f"the prepare was not killed mid-way:\n{output[-2000:]}"
    assert not out.exists()  # never half-written
    done = json.loads(progress.read_text())["train"]["units"]

    main(argv)  # the same command again continues
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["units_reused"] >= done > 0 and not (tmp_path / ".out.tinylm-prepare").exists()
    memmap = datamodule(tmp_path, sources="builtin:lee,kjv", tokenizer=f"{tok}.model")
    resumed = datamodule(tmp_path, prepared=str(out))
    np.testing.assert_array_equal(np.asarray(resumed.train_stream), np.asarray(memmap.train_stream))
    np.testing.assert_array_equal(np.asarray(resumed.val_stream), np.asarray(memmap.val_stream))


def test_bad_input_is_one_line_exit_2_and_nothing_written(corpus_dir, tokenizer, tmp_path, capsys):
    def refused(*argv: str) -> str:
        with pytest.raises(SystemExit) as stop:
            main(["data", "prepare", "--tokenizer", str(tokenizer.path), *argv])
        assert stop.value.code == 2
        return capsys.readouterr().err.strip()

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert "not written by tinylm" in refused("--sources", str(corpus_dir), "--out", str(foreign), "--overwrite")
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    (tmp_path / "blank").mkdir()
    (tmp_path / "blank" / "a.txt").write_text("  \n")
    message = refused("--sources", str(tmp_path / "blank"), "--out", str(tmp_path / "empty"))
    assert "is empty" in message and len(message.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blank", "foreign"]  # no output, no work folder
    assert "inside" in refused("--sources", str(corpus_dir), "--out", str(corpus_dir / "out"))
    assert "not a positive size" in refused("--sources", str(corpus_dir), "--out", str(tmp_path / "x"),
                                            "--chunk_bytes", "lots")
    assert not (tmp_path / "x").exists() and not (tmp_path / ".x.tinylm-prepare").exists()


def test_a_prepared_dataset_with_another_tokenizer_or_missing_chunks_is_refused(prepared, tmp_path):
    other = tmp_path / "other.model"
    main(["tokenizer", "train", "--input", "builtin:lee", "--out", str(other), "--vocab_size", "500"])
    with pytest.raises(TinyLMError, match="is not the tokenizer"):
        datamodule(tmp_path, prepared=str(prepared), tokenizer=str(other))
    copy = tmp_path / "copy"
    os.system(f"cp -r {prepared} {copy}")
    index = json.loads((copy / "train" / "index.json").read_text())
    index["chunks"] = index["chunks"][:-1]
    (copy / "train" / "index.json").write_text(json.dumps(index))
    with pytest.raises(TinyLMError, match="incomplete or was changed"):
        datamodule(tmp_path, prepared=str(copy))
    with pytest.raises(TinyLMError, match="not a prepared dataset"):
        datamodule(tmp_path, prepared=str(tmp_path))


def test_the_1b_pro_recipe_shrunk_trains_a_few_steps_on_its_prepared_dataset(prepared, tmp_path):
    recipe = yaml.safe_load((REPO / "recipes" / "pretrain" / "pangu-pi-1b-pro.yaml").read_text())
    assert recipe["data"]["prepared"] and "sources" not in recipe["data"]  # the recipe trains from a prepared dataset
    root = tmp_path / "run"
    main(["fit", "--config", str(REPO / "recipes" / "pretrain" / "pangu-pi-1b-pro.yaml"),
          "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.num_nodes", "1",
          "--trainer.strategy", "auto", "--trainer.precision", "32-true", "--trainer.max_steps", "3",
          "--trainer.val_check_interval", "3", "--trainer.limit_val_batches", "2", "--trainer.callbacks", "[]",
          "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
          "--model.init_args.config", "debug", "--data.prepared", str(prepared), "--data.seq_len", "32",
          "--data.num_workers", "0"])
    provenance = json.loads((root / "logs" / "version_0" / "model" / "tinylm.json").read_text())
    assert provenance["tokens_seen"] == 3 * 4 * 32
    assert provenance["data"]["cache"]["id"] == json.loads((prepared / "manifest.json").read_text())["id"]


def test_runs_are_cut_in_order_by_cost_not_count():
    from tinylm.data.prepared import _runs, _Unit

    units = [_Unit([str(i)], cost) for i, cost in enumerate([4, 4, 4] + [1] * 12)]  # 24 in all
    runs = _runs(units, 2)
    assert [u for r in runs for u in r.units] == units  # every unit once, in document order
    assert [sum(u.cost for u in r.units) for r in runs] == [12, 12]  # by count: 17 vs 7
    assert len(_runs(units[:1], 2)) == 1 and len(_runs(units, 1)) == 1
    assert [len(r.units) for r in _runs([_Unit(["x"])] * 6, 3)] == [2, 2, 2]


def test_a_segment_frees_its_text_without_waiting_for_the_collector(corpus_dir, tokenizer, tmp_path, monkeypatch):
    """litdata's recipe holds the segment's units in a reference cycle; prepare collects it after each segment, so
    the parent's memory stays flat in corpus size instead of growing by a segment's text each time."""
    import weakref

    from tinylm.data import prepared as module

    held, encode = [], module._encode_segment

    def spy(units, folder, workers, chunk_bytes):
        assert all(ref() is None for ref in held[:-workers]), "an earlier segment's text is still in memory"
        chunks = encode(units, folder, workers, chunk_bytes)
        held.extend(weakref.ref(u) for u in units)
        return chunks

    monkeypatch.setattr(module, "_encode_segment", spy)
    monkeypatch.setattr(module, "UNITS_PER_WORKER", 1)
    prepare(resolve(str(corpus_dir)), tokenizer, tmp_path / "data", workers=1, val_every=10, unit_chars=30_000)
    assert len(held) > 4
