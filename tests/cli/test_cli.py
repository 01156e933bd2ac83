"""The `tinylm` command end to end, and its one-line errors."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest

from tinylm.cli import main

REPO = Path(__file__).resolve().parents[2]


def tinylm(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "tinylm.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_fit_the_quickstart_recipe_writes_a_model_dir_and_logs(corpus_dir, tokenizer, tmp_path):
    result = tinylm("fit", "--config", str(REPO / "recipes" / "quickstart.yaml"), "--data.sources", str(corpus_dir),
                    "--data.tokenizer", str(tokenizer.path), "--data.seq_len", "64", "--model.config", "debug",
                    "--trainer.max_steps", "4", "--trainer.val_check_interval", "2", "--trainer.limit_val_batches",
                    "2", "--trainer.log_every_n_steps", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    run = tmp_path / "runs" / "quickstart"
    assert (run / "logs" / "version_0" / "model" / "model.safetensors").is_file()
    assert (run / "logs" / "version_0" / "config.yaml").is_file()  # the full config saved beside the logs
    metrics = (run / "logs" / "version_0" / "metrics.csv").read_text()
    assert "val/bpb" in metrics and "train/loss" in metrics
    assert (run / "logs" / "version_0" / "checkpoints" / "last.ckpt").is_file()  # for --ckpt_path last


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data.sources", "/no/such/corpus"], "corpus not found: '/no/such/corpus'"),
        (["--model.config", "pangu-9b"], "unknown model preset 'pangu-9b'"),
        (["--model.config.num_heads", "3"], "num_heads=3 does not divide hidden_size=256"),
        (["--data.seq_len", "100000000"], "seq_len=100000000 is larger than the training corpus"),
        (["--trainer.max_stepz", "3"], "unrecognized arguments"),
    ],
)
def test_bad_fit_input_is_one_line_and_exit_2(corpus_dir, tokenizer, tmp_path, args, message):
    base = ["fit", "--config", str(REPO / "recipes" / "quickstart.yaml"), "--data.tokenizer", str(tokenizer.path),
            "--data.sources", str(corpus_dir), "--trainer.max_steps", "1"]
    result = tinylm(*base, *args, cwd=tmp_path)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("tinylm: error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert not (tmp_path / "runs" / "quickstart" / "logs" / "version_0" / "model").exists()


def test_tokenizer_train_command(corpus_dir, tmp_path):
    result = tinylm("tokenizer", "train", "--input", f"[{corpus_dir}]", "--vocab_size", "3000", "--out",
                    str(tmp_path / "t.model"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "t.model").is_file() and "3000 pieces" in result.stdout


def test_tokenizer_train_non_utf8_input(tmp_path):
    (tmp_path / "bad.txt").write_bytes("na\xefve caf\xe9".encode("latin-1"))
    result = tinylm("tokenizer", "train", "--input", f"[{tmp_path / 'bad.txt'}]", "--out", str(tmp_path / "t.model"),
                    cwd=tmp_path)
    assert result.returncode == 2 and "not UTF-8" in result.stderr
    assert not (tmp_path / "t.model").exists()


def test_unknown_command(tmp_path):
    result = tinylm("frobnicate", cwd=tmp_path)
    assert result.returncode == 2 and "unknown command 'frobnicate'" in result.stderr


# ---- resume as the README says, one root for everything ---------------------------------------------------
class Crash(Exception):
    pass


class CrashAt(L.Callback):
    """A crash right after an optimizer step (in-process stand-in for kill -9; test_ddp does the real one)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise Crash


def quick_fit(corpus_dir, tokenizer, root: Path, *extra: str) -> list[str]:
    return ["fit", "--config", str(REPO / "recipes" / "quickstart.yaml"), "--data.sources", str(corpus_dir),
            "--data.tokenizer", str(tokenizer.path), "--data.seq_len", "16", "--data.batch_size", "2",
            "--model.config", "debug", "--trainer.max_steps", "6", "--trainer.val_check_interval", "3",
            "--trainer.limit_val_batches", "1", "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar",
            "false", "--trainer.default_root_dir", str(root), *extra]


def metric_steps(run: Path) -> list[int]:
    with open(run / "metrics.csv", newline="") as handle:
        return [int(row["step"]) for row in csv.DictReader(handle) if row.get("train/loss")]


def test_ckpt_path_last_resumes_the_previous_run_and_appends_its_logs(corpus_dir, tokenizer, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "elsewhere"
    every_3 = {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
               "init_args": {"every_n_train_steps": 3, "save_last": True}}
    crash = {"class_path": "tests.cli.test_cli.CrashAt", "init_args": {"step": 4}}
    (tmp_path / "crash.yaml").write_text(json.dumps({"trainer": {"callbacks": [every_3, crash]}}))
    (tmp_path / "resume.yaml").write_text(json.dumps({"trainer": {"callbacks": [every_3]}}))
    with pytest.raises(Crash):
        main(quick_fit(corpus_dir, tokenizer, root, "--config", str(tmp_path / "crash.yaml")))
    run = root / "logs" / "version_0"
    assert (run / "checkpoints" / "last.ckpt").is_file() and metric_steps(run) == [0, 1, 2]
    main(quick_fit(corpus_dir, tokenizer, root, "--config", str(tmp_path / "resume.yaml"), "--ckpt_path", "last"))
    assert metric_steps(run) == [0, 1, 2, 3, 4, 5]  # the crashed run's logs kept, the resumed steps appended
    assert (run / "model" / "model.safetensors").is_file() and not (root / "logs" / "version_1").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crash.yaml", "elsewhere", "resume.yaml"]  # all moved
    # a fresh run never touches an earlier one; auto resumes when there is something to resume
    main(quick_fit(corpus_dir, tokenizer, root, "--trainer.max_steps", "1"))
    assert (root / "logs" / "version_1" / "model").is_dir() and (run / "model").is_dir()
    fresh = tmp_path / "fresh"
    main(quick_fit(corpus_dir, tokenizer, fresh, "--trainer.max_steps", "1", "--ckpt_path", "auto"))
    assert (fresh / "logs" / "version_0" / "model").is_dir()


def test_overwrite_replaces_only_a_model_dir_tinylm_wrote(corpus_dir, tokenizer, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "model"
    main(quick_fit(corpus_dir, tokenizer, tmp_path / "a", "--trainer.max_steps", "1", "--model.model_dir", str(out)))
    with pytest.raises(SystemExit):
        main(quick_fit(corpus_dir, tokenizer, tmp_path / "b", "--trainer.max_steps", "2", "--model.model_dir",
                       str(out)))
    main(quick_fit(corpus_dir, tokenizer, tmp_path / "c", "--trainer.max_steps", "2", "--model.model_dir", str(out),
                   "--overwrite", "true"))
    assert '"global_step": 2' in (out / "tinylm.json").read_text()
    main(quick_fit(corpus_dir, tokenizer, tmp_path / "d", "--trainer.max_steps", "1", "--model.model_dir", str(out),
                   "--overwrite"))  # a bare flag means true
    assert '"global_step": 1' in (out / "tinylm.json").read_text()


def test_bare_bool_flag_means_true_in_function_commands():
    from tinylm.cli.main import bare_flags_true

    def command(out: str, overwrite: bool = False, limit: int = 0) -> None: ...

    assert bare_flags_true(["--overwrite", "--out", "x"], command) == ["--overwrite", "true", "--out", "x"]
    assert bare_flags_true(["--out", "x", "--overwrite"], command) == ["--out", "x", "--overwrite", "true"]
    assert bare_flags_true(["--overwrite", "false"], command) == ["--overwrite", "false"]
    assert bare_flags_true(["--limit", "3"], command) == ["--limit", "3"]


def test_sigterm_saves_a_checkpoint_and_exits_143(corpus_dir, tokenizer, tmp_path):
    """What a scheduler sends: the run stops at the next step with checkpoints/last.ckpt, and says so in one line."""
    import signal
    import time

    import torch

    args = ["fit", "--config", str(REPO / "recipes" / "quickstart.yaml"), "--data.sources", str(corpus_dir),
            "--data.tokenizer", str(tokenizer.path), "--data.seq_len", "16", "--data.batch_size", "2",
            "--model.config", "debug", "--trainer.max_steps", "100000", "--trainer.enable_progress_bar", "false"]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    process = subprocess.Popen([sys.executable, "-m", "tinylm.cli", *args], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    version = tmp_path / "runs" / "quickstart" / "logs" / "version_0"
    deadline = time.time() + 300
    # well inside training, however slow the machine: after the first periodic checkpoint (every 100 steps)
    while not list(version.glob("checkpoints/*.ckpt")) and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=300)

    assert process.returncode == 143, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("tinylm: stopped by SIGTERM")]
    assert len(lines) == 1, err[-2000:]
    step = int(lines[0].split("after step ")[1].split(";")[0])
    checkpoint = torch.load(version / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert checkpoint["global_step"] == step > 0
    assert not (version / "model").exists()  # an unfinished run writes no model dir


def test_a_finished_run_trains_longer_at_the_floor_lr(corpus_dir, tokenizer, tmp_path, monkeypatch):
    """--ckpt_path last with more steps continues a finished run: its own model dir is replaced (no --overwrite),
    the cosine it was on is kept, and the extra steps train at the floor lr: the lr never jumps back up."""
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "run"
    floor = ["--model.init_args.lr", "1e-3", "--model.init_args.min_lr", "1e-4", "--trainer.log_every_n_steps", "1"]
    main(quick_fit(corpus_dir, tokenizer, root, "--trainer.max_steps", "6", *floor))
    run = root / "logs" / "version_0"
    assert '"global_step": 6' in (run / "model" / "tinylm.json").read_text()
    main(quick_fit(corpus_dir, tokenizer, root, "--trainer.max_steps", "9", "--ckpt_path", "last", *floor))
    assert '"global_step": 9' in (run / "model" / "tinylm.json").read_text()
    with open(run / "metrics.csv", newline="") as handle:
        lrs = [float(row["train/lr"]) for row in csv.DictReader(handle) if row.get("train/lr")]
    assert len(lrs) == 9
    assert all(a >= b for a, b in zip(lrs[1:6], lrs[2:6]))  # the cosine after warmup
    assert lrs[6:] == pytest.approx([1e-4] * 3)  # then the floor, never back up


def test_a_resume_with_another_lr_is_refused(corpus_dir, tokenizer, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "run"
    main(quick_fit(corpus_dir, tokenizer, root, "--trainer.max_steps", "3", "--model.init_args.lr", "1e-3"))
    with pytest.raises(SystemExit) as exit_:
        main(quick_fit(corpus_dir, tokenizer, root, "--trainer.max_steps", "5", "--ckpt_path", "last",
                       "--model.init_args.lr", "5e-3"))
    assert exit_.value.code == 2
    assert "trained with lr=0.001, this run asks for lr=0.005" in capsys.readouterr().err
