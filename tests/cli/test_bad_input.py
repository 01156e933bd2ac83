"""The catalogue of bad input, as one table: every row is a command, the exit status it must end with, the words
its one-line error must contain, and a destination that must be exactly as it was before (a user's folder with a
file in it, or nothing at all). Commands run in-process through ``tinylm.cli.main``."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tinylm.cli import main

QUICKSTART = str(Path(__file__).resolve().parents[2] / "recipes" / "quickstart.yaml")


def fit(*extra: str) -> list[str]:
    return ["fit", "--config", QUICKSTART, "--data.sources", "{corpus}", "--data.tokenizer", "{tok}",
            "--data.seq_len", "16", "--data.batch_size", "2", "--model.config", "debug", "--trainer.max_steps", "2",
            "--trainer.default_root_dir", "{tmp}/run", "--trainer.enable_progress_bar", "false", *extra]


def inherit(*extra: str) -> list[str]:
    return ["inherit", "--source", "{model}", "--target", '{{"num_layers": 1}}', "--criterion", "l1", *extra]


def evaluate(*extra: str) -> list[str]:
    return ["eval", "--model", "{model}", "--tasks", "arc_easy", "--limit", "2", *extra]


# (id, command, exit status, words the one error line must contain, destination that must stay as it was)
# Destinations: "user/..." is a folder holding a user's file; "run" is the fit root; anything else starts absent.
CATALOGUE = [
    # 1. never destroy a user's files
    ("inherit-out-existing", inherit("--out", "{tmp}/user/out"), 2, ["exists and is not empty", "--overwrite"],
     "user/out"),
    ("inherit-out-existing-overwrite", inherit("--out", "{tmp}/user/out", "--overwrite", "true"), 2,
     ["not written by tinylm"], "user/out"),
    ("inherit-out-dot", inherit("--out", "."), 2, ["refused", "working directory"], "user/work"),
    ("inherit-out-dotdot", inherit("--out", "..", "--overwrite", "true"), 2, ["refused"], "user"),
    ("inherit-out-source", inherit("--out", "{model}", "--overwrite", "true"), 2, ["refused"], "model"),
    ("fit-model-dir-is-run-root", fit("--model.model_dir", "{tmp}/run", "--overwrite", "true"), 2,
     ["refused", "this run also writes"], "run"),
    ("fit-model-dir-dot", fit("--model.model_dir", "."), 2, ["refused"], "user/work"),
    ("fit-model-dir-existing", fit("--model.model_dir", "{tmp}/user/out"), 2, ["not empty"], "user/out"),
    ("compact-out-existing", ["tokenizer", "compact", "--tokenizer", "{tok}", "--freq", "{tmp}/freq",
                              "--vocab_size", "300", "--out", "{tmp}/user/out"], 2, ["not empty"], "user/out"),
    ("remap-out-existing", ["tokenizer", "remap", "--model", "{model}", "--tokenizer", "{tok}", "--out",
                            "{tmp}/user/out", "--overwrite", "true"], 2, ["not written by tinylm"], "user/out"),
    # 5. bad data
    ("empty-jsonl", fit("--data.sources", "{tmp}/empty.jsonl"), 2, ["is empty"], "run"),
    ("non-utf8-jsonl", fit("--data.sources", "{tmp}/latin1.jsonl"), 2, ["not UTF-8", "iconv"], "run"),
    # 4./5. settings that train nothing or make no sense
    ("lr-zero", fit("--model.init_args.lr", "0"), 2, ["learning rate must be positive"], "run"),
    ("lr-negative", fit("--model.init_args.lr=-1e-3"), 2, ["learning rate must be positive"], "run"),
    ("max-steps-zero", fit("--trainer.max_steps", "0"), 2, ["max_steps 0", "trains nothing"], "run"),
    ("max-steps-negative", fit("--trainer.max_steps", "-5"), 2, ["max_steps -5"], "run"),
    ("inherit-target-json", ["inherit", "--source", "{model}", "--target", '{{"hidden_size": 32,', "--out",
                             "{tmp}/small"], 2, ["--target is not valid JSON"], "small"),
    # 3./5. resume
    ("ckpt-missing", fit("--ckpt_path", "{tmp}/nope.ckpt"), 2, ["does not exist"], "run"),
    ("ckpt-truncated", fit("--ckpt_path", "{tmp}/truncated.ckpt"), 2, ["truncated"], "run"),
    ("ckpt-last-nothing", fit("--ckpt_path", "last"), 2, ["nothing to resume", "--ckpt_path auto"], "run"),
    ("ckpt-other-vocab", fit("--data.tokenizer", "{tok2}", "--ckpt_path", "{ckpt}"), 2,
     ["vocab_size=", "start a new run"], "run"),
    ("ckpt-other-hidden-size", fit("--model.config.hidden_size", "32", "--ckpt_path", "{ckpt}"), 2,
     ["hidden_size=64", "hidden_size=32"], "run"),
    ("ckpt-other-seq-len", fit("--data.seq_len", "8", "--ckpt_path", "{ckpt}"), 2, ["data.seq_len=16"], "run"),
    # 5. evaluation, refused before anything is loaded
    ("eval-limit-negative", evaluate("--limit", "-3"), 2, ["--limit -3"], "out.json"),
    ("eval-batch-size-zero", evaluate("--batch_size", "0"), 2, ["--batch_size 0"], "out.json"),
    ("eval-device-missing", evaluate("--device", "cuda:99"), 2, ["cuda:99"], "out.json"),
    ("eval-truncated-benchmark", evaluate("--data_dir", "{tmp}/bench"), 2, ["ARC-Easy-Test.jsonl", "truncated"],
     "out.json"),
    # 1./5. outputs that cannot be written, refused before the work
    ("eval-output-under-a-file", evaluate("--output", "{tmp}/a_file/out.json"), 2, ["is a file"], "a_file/out.json"),
    ("eval-output-is-a-folder", evaluate("--output", "{tmp}/user/out"), 2, ["is a folder"], "user/out"),
    ("inherit-out-under-a-file", inherit("--out", "{tmp}/a_file/small"), 2, ["is a file"], "a_file/small"),
    ("fit-model-dir-under-a-file", fit("--model.model_dir", "{tmp}/a_file/model"), 2, ["is a file"], "run"),
    ("tokenizer-train-out-under-a-file", ["tokenizer", "train", "--input", "builtin", "--vocab_size", "300",
                                          "--out", "{tmp}/a_file/t.model"], 2, ["is a file"], "a_file/t.model"),
    ("count-out-under-a-file", ["tokenizer", "count", "--tokenizer", "{tok}", "--input", "{corpus}", "--out",
                                "{tmp}/a_file/freq"], 2, ["is a file"], "a_file/freq"),
    ("compact-out-under-a-file", ["tokenizer", "compact", "--tokenizer", "{tok}", "--freq", "{tmp}/freq",
                                  "--vocab_size", "300", "--out", "{tmp}/a_file/compact"], 2, ["is a file"],
     "a_file/compact"),
    ("count-bad-corpus-leaves-nothing", ["tokenizer", "count", "--tokenizer", "{tok}", "--input",
                                         "{tmp}/latin1.jsonl", "--out", "{tmp}/freq_out"], 2, ["not UTF-8"],
     "freq_out"),
    # 2. wrong results accepted silently
    ("fit-init-from-another-tokenizer-of-the-same-size", fit("--model.init_from", "{model}", "--data.tokenizer",
                                                             "{tok_same_size}"), 2,
     ["trained with another tokenizer", "tinylm tokenizer remap"], "run"),
    ("convert-swapped-tokenizer-model", ["convert", "--source", "{swapped_model}", "--out", "{tmp}/converted"], 2,
     ["tokenizer.model", "not the file the model was written with"], "converted"),
    ("eval-swapped-tokenizer-json", evaluate("--model", "{swapped_json}", "--output", "{tmp}/out.json"), 2,
     ["tokenizer.json", "not the file the model was written with"], "out.json"),
    ("eval-non-finite-weights", evaluate("--model", "{nan_weights}", "--output", "{tmp}/out.json"), 2,
     ["non-finite"], "out.json"),
    ("ckpt-flipped-bytes", fit("--ckpt_path", "{ckpt_flipped}"), 2, ["corrupted", "CRC"], "run"),
    ("fit-max-steps-without-an-end", fit("--trainer.max_steps", "-1"), 2, ["no end", "--trainer.max_epochs"], "run"),
    ("convert-sliding-window", ["convert", "--source", "{sliding}", "--out", "{tmp}/converted"], 2,
     ["sliding_window=16"], "converted"),
    # 3. tracebacks that are one line
    ("inherit-target-field-not-a-number", ["inherit", "--source", "{model}", "--target", '{{"num_layers": "two"}}',
                                           "--out", "{tmp}/small"], 2, ["num_layers='two'", "positive whole"],
     "small"),
    ("inherit-target-field-null", ["inherit", "--source", "{model}", "--target", '{{"hidden_size": null}}',
                                   "--out", "{tmp}/small"], 2, ["hidden_size=None"], "small"),
    ("pro-target-field-not-a-number", ["pro", "--source", "{model}", "--target", '{{"num_layers": "two"}}', "--out",
                                       "{tmp}/pro"], 2, ["num_layers='two'"], "pro"),
    ("pro-target-larger-than-the-source", ["pro", "--source", "{model}", "--target", "1B", "--out", "{tmp}/pro"], 2,
     ["not smaller than the source"], "pro"),
    ("fit-root-unwritable", fit("--trainer.default_root_dir", "/proc/tinylm-run"), 2, ["cannot be written"], "run"),
    ("fit-model-dir-in-sys", fit("--model.model_dir", "/sys/tinylm-model"), 2, ["cannot be written"], "run"),
    ("convert-out-in-proc", ["convert", "--source", "{model}", "--out", "/proc/tinylm-model"], 2,
     ["cannot be written"], "converted"),
    ("eval-output-in-proc", evaluate("--output", "/proc/out.json"), 2, ["cannot be written"], "out.json"),
    ("eval-config-binary", evaluate("--model", "{config_binary}"), 2, ["not a JSON file"], "out.json"),
    ("eval-config-list", evaluate("--model", "{config_list}"), 2, ["JSON list"], "out.json"),
    ("eval-config-not-a-number", evaluate("--model", "{config_big}"), 2, ["hidden_size='big'"], "out.json"),
    ("ckpt-malicious-pickle", fit("--ckpt_path", "{ckpt_evil}"), 2, ["pickled objects", "never loads"], "run"),
    ("ckpt-last-malicious-pickle", fit("--trainer.default_root_dir", "{evil_run}", "--ckpt_path", "last"), 2,
     ["pickled objects"], "run"),
    ("validate-malicious-pickle", ["validate", "--config", QUICKSTART, "--data.sources", "{corpus}",
                                   "--data.tokenizer", "{tok}", "--model.config", "debug", "--ckpt_path",
                                   "{ckpt_evil}", "--trainer.default_root_dir", "{tmp}/run"], 2, ["pickled objects"],
     "run"),
]


class Evil:
    """A pickle that would run a command when loaded (it never may be)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def corrupt_world(root: Path, world: dict[str, str]) -> dict[str, str]:
    """Bad copies of good inputs: a same-size tokenizer with two pieces swapped, model dirs with a swapped
    tokenizer file, NaN weights or a bad config, a checkpoint with flipped bytes, and malicious pickles."""
    import json
    import shutil
    import struct
    import zipfile

    import torch
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2

    proto = sp_pb2.ModelProto()
    proto.ParseFromString(Path(world["tok"]).read_bytes())
    a, b = proto.pieces[500], proto.pieces[501]
    (a.piece, a.score), (b.piece, b.score) = (b.piece, a.score), (a.piece, b.score)
    (root / "same_size.model").write_bytes(proto.SerializeToString())
    out = {"tok_same_size": str(root / "same_size.model")}

    def copy(name: str) -> Path:
        shutil.copytree(world["model"], root / name)
        out[name] = str(root / name)
        return root / name

    shutil.copy(root / "same_size.model", copy("swapped_model") / "tokenizer.model")
    with open(copy("swapped_json") / "tokenizer.json", "a") as handle:
        handle.write("\n")
    weights = copy("nan_weights") / "model.safetensors"
    data = bytearray(weights.read_bytes())
    start = 8 + struct.unpack("<Q", data[:8])[0]
    data[start + 64:start + 128] = b"\xff" * 64
    weights.write_bytes(bytes(data))
    (copy("config_binary") / "config.json").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    (copy("config_list") / "config.json").write_text("[1, 2, 3]")
    config = json.loads((Path(world["model"]) / "config.json").read_text())
    (copy("config_big") / "config.json").write_text(json.dumps({**config, "hidden_size": "big"}))
    (copy("sliding") / "config.json").write_text(json.dumps({**config, "sliding_window": 16}))
    flipped = bytearray(Path(world["ckpt"]).read_bytes())
    with zipfile.ZipFile(world["ckpt"]) as archive:
        entry = max(archive.infolist(), key=lambda info: info.file_size)
    name_len, extra_len = struct.unpack("<HH", flipped[entry.header_offset + 26:entry.header_offset + 30])
    at = entry.header_offset + 30 + name_len + extra_len + entry.file_size // 2
    flipped[at:at + 8] = bytes(255 - x for x in flipped[at:at + 8])
    (root / "flipped.ckpt").write_bytes(bytes(flipped))
    out["ckpt_flipped"] = str(root / "flipped.ckpt")
    torch.save({"state_dict": {}, "evil": Evil(root / "pwned")}, root / "evil.ckpt")
    out["ckpt_evil"] = str(root / "evil.ckpt")
    last = root / "evil_run" / "logs" / "version_0" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    shutil.copy(root / "evil.ckpt", last)
    out["evil_run"] = str(root / "evil_run")
    return out


def snapshot(path: Path) -> dict[str, str] | None:
    """Every file under ``path`` with a hash of its bytes (None when ``path`` does not exist)."""
    if not path.exists():
        return None
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(path.rglob("*"))}


@pytest.fixture(scope="module")
def world(corpus_dir, tokenizer, tmp_path_factory, model_dir_factory) -> dict[str, str]:
    """The inputs the catalogue refers to; built once (a checkpoint to resume, a second tokenizer, bad files)."""
    from tinylm.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("inputs")
    texts = [p.read_text(encoding="utf-8") for p in sorted(corpus_dir.glob("*.txt"))]
    other = train_tokenizer(texts, root / "other.model", vocab_size=3000)
    main(["fit", "--config", QUICKSTART, "--data.sources", str(corpus_dir), "--data.tokenizer", str(tokenizer.path),
          "--data.seq_len", "16", "--data.batch_size", "2", "--model.config", "debug", "--trainer.max_steps", "2",
          "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1", "--trainer.default_root_dir",
          str(root / "trained"), "--trainer.enable_progress_bar", "false"])
    ckpt = root / "trained" / "logs" / "version_0" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    world = {"corpus": str(corpus_dir), "tok": str(tokenizer.path), "tok2": str(other.path), "ckpt": str(ckpt),
             "model": str(model_dir_factory("debug"))}
    return {**world, **corrupt_world(root, world)}


@pytest.mark.parametrize("name, argv, code, words, destination", CATALOGUE, ids=[row[0] for row in CATALOGUE])
def test_bad_input_is_one_line_exit_2_and_leaves_the_destination_as_it_was(world, tmp_path, monkeypatch, capsys,
                                                                           name, argv, code, words, destination):
    user = tmp_path / "user"
    for folder in (user / "out", user / "work"):
        folder.mkdir(parents=True)
        (folder / "week_of_checkpoints.txt").write_text("precious")
    (tmp_path / "run" / "logs").mkdir(parents=True)
    (tmp_path / "run" / "logs" / "notes.txt").write_text("a previous run's logs")
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "latin1.jsonl").write_bytes('{"text": "caf\xe9 na\xefve"}\n'.encode("latin-1"))
    (tmp_path / "truncated.ckpt").write_bytes(Path(world["ckpt"]).read_bytes()[:1000])
    (tmp_path / "freq").mkdir()
    bench = tmp_path / "bench" / "arc_easy"
    bench.mkdir(parents=True)
    (bench / "ARC-Easy-Test.jsonl").write_text('{"id": "Mercury_1", "question": {"stem": "Which')
    (bench / "ARC-Easy-Dev.jsonl").write_text("")
    target = Path(world["model"]) if destination == "model" else tmp_path / destination
    before = snapshot(target)
    monkeypatch.chdir(user / "work")
    capsys.readouterr()

    with pytest.raises(SystemExit) as exit_:
        main([arg.format(tmp=tmp_path, **world) for arg in argv])

    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("tinylm: error:")]
    assert exit_.value.code == code, err[-2000:]
    assert len(errors) == 1, err[-2000:]
    for word in words:
        assert word in errors[0], errors[0]
    assert snapshot(target) == before
    assert not [p for p in tmp_path.rglob("*") if "tinylm-tmp" in p.name or "tinylm-old" in p.name]
    assert not (Path(world["ckpt_evil"]).parent / "pwned").exists()  # no pickle ever ran


# ---- data loss: an output that is, contains or lies inside an input, and folders tinylm did not write -----------
# Inputs and outputs: M a model dir tinylm wrote, T a compact tokenizer folder, F a count folder, RUN a `tinylm pro`
# run, U a user's folder that happens to hold a shards/ subfolder, R a user's folder with results.md. Each holds the
# user's notes.txt; every one must be exactly as it was after the command.
DATA_LOSS = [
    ("count-out-is-its-tokenizer", ["tokenizer", "count", "--tokenizer", "{M}", "--input", "{corpus}", "--out", "{M}",
                                    "--overwrite"], ["input of this command"]),
    ("count-out-holds-its-tokenizer", ["tokenizer", "count", "--tokenizer", "{RUN}/1-tokenizer/source", "--input",
                                       "{corpus}", "--out", "{RUN}", "--overwrite"], ["input of this command"]),
    ("count-out-inside-its-tokenizer", ["tokenizer", "count", "--tokenizer", "{M}", "--input", "{corpus}", "--out",
                                        "{M}/freq"], ["input of this command"]),
    ("count-out-user-folder-with-shards", ["tokenizer", "count", "--tokenizer", "{tok}", "--input", "{corpus}",
                                           "--out", "{U}"], ["not empty"]),
    ("count-out-user-folder-with-shards-overwrite", ["tokenizer", "count", "--tokenizer", "{tok}", "--input",
                                                     "{corpus}", "--out", "{U}", "--overwrite"],
     ["not written by tinylm"]),
    ("remap-out-is-its-model", ["tokenizer", "remap", "--model", "{M}", "--tokenizer", "{T}", "--out", "{M}",
                                "--overwrite"], ["input of this command"]),
    ("remap-out-is-its-tokenizer", ["tokenizer", "remap", "--model", "{M}", "--tokenizer", "{T}", "--out", "{T}",
                                    "--overwrite"], ["input of this command"]),
    ("convert-out-is-its-source", ["convert", "--source", "{M}", "--out", "{M}", "--overwrite"],
     ["input of this command"]),
    ("compact-out-is-its-tokenizer", ["tokenizer", "compact", "--tokenizer", "{T}", "--freq", "{F}", "--vocab_size",
                                      "300", "--out", "{T}", "--overwrite"], ["input of this command"]),
    ("compact-out-is-its-freq", ["tokenizer", "compact", "--tokenizer", "{T}", "--freq", "{F}", "--vocab_size",
                                 "300", "--out", "{F}", "--overwrite"], ["input of this command"]),
    ("coverage-out-is-its-freq", ["tokenizer", "coverage", "--freq", "{F}", "--out", "{F}", "--overwrite"],
     ["input of this command"]),
    ("fit-model-dir-is-init-from", fit("--model.init_from", "{M}", "--model.model_dir", "{M}", "--overwrite", "true"),
     ["input of this command"]),
    ("fit-model-dir-is-data-tokenizer", fit("--data.tokenizer", "{M}", "--model.model_dir", "{M}", "--overwrite",
                                            "true"), ["input of this command"]),
    ("fit-root-inside-init-from", fit("--model.init_from", "{M}", "--trainer.default_root_dir", "{M}/run"),
     ["input of this command"]),
    ("inherit-out-inside-source", ["inherit", "--source", "{M}", "--target", '{{"num_layers": 1}}', "--criterion",
                                   "l1", "--out", "{M}/small"], ["input of this command"]),
    ("eval-output-md-is-a-users-file", evaluate("--output", "{R}/results.json"), ["results.md", "exists"]),
    ("eval-output-md-is-a-users-file-overwrite", evaluate("--output", "{R}/results.json", "--overwrite"),
     ["results.md", "not written by tinylm"]),
    ("eval-output-inside-the-model", evaluate("--output", "{model}/results.json"), ["input of this command"]),
    ("pro-out-holds-its-source", ["pro", "--source", "{RUN}/1-tokenizer/source", "--target", "debug", "--out",
                                  "{RUN}", "--overwrite"], ["input of this command"]),
]


@pytest.fixture
def precious(world, tmp_path) -> dict[str, str]:
    """Copies of tinylm-written folders and user folders, each with the user's notes.txt inside."""
    import shutil

    from tinylm.artifacts.io import MARKER

    paths = {name: tmp_path / name for name in ("M", "T", "F", "RUN", "U", "R")}
    shutil.copytree(world["model"], paths["M"])
    paths["T"].mkdir()
    shutil.copy(world["tok"], paths["T"] / "tokenizer.model")
    paths["F"].mkdir()
    (paths["F"] / "frequencies.json").write_text("{}")
    shutil.copytree(world["model"], paths["RUN"] / "1-tokenizer" / "source")
    (paths["RUN"] / "pro.json").write_text("{}")
    (paths["U"] / "shards").mkdir(parents=True)
    (paths["R"]).mkdir()
    (paths["R"] / "results.md").write_text("my own results, not tinylm's")
    for name in ("T", "F", "RUN"):
        (paths[name] / MARKER).write_text("written by tinylm")
    for path in paths.values():
        (path / "notes.txt").write_text("precious")
    return {name: str(path) for name, path in paths.items()}


@pytest.mark.parametrize("name, argv, words", DATA_LOSS, ids=[row[0] for row in DATA_LOSS])
def test_no_command_destroys_its_inputs_or_a_users_folder(world, precious, tmp_path, monkeypatch, capsys,
                                                          name, argv, words):
    before = {path: snapshot(Path(path)) for path in [*precious.values(), world["model"], world["tok"]]}
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()

    with pytest.raises(SystemExit) as exit_:
        main([arg.format(tmp=tmp_path, **world, **precious) for arg in argv])

    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("tinylm: error:")]
    assert exit_.value.code == 2, err[-2000:]
    assert len(errors) == 1, err[-2000:]
    for word in words:
        assert word in errors[0], errors[0]
    assert {path: snapshot(Path(path)) for path in before} == before
    assert not [p for p in tmp_path.rglob("*") if "tinylm-tmp" in p.name or "tinylm-old" in p.name]
