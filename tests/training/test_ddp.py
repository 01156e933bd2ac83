"""Two real processes (DDP over gloo on CPU): a multi-round ``tinylm fit`` finishes and writes one model dir, its
round-2 plan equals one process's with the same global batch, data and seed, and a kill -9 followed by
``--ckpt_path last`` reproduces the uninterrupted losses bitwise — from the memmap cache, and with the 1B-Pro
recipe (shrunk) from a prepared dataset, where the final weights are compared too. Every run has a hard timeout that
kills the whole process group, so a hang fails the test instead of blocking CI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "optimization" / "multi_round.yaml"
# The README's two-process command; the test adds only tiny data and model sizes and its recording callbacks.
DDP = ["--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--trainer.devices", "2"]
TIMEOUT = 240  # seconds for one two-process run; a hang is killed and fails


class LossLog(L.Callback):
    """Rank 0's training loss of every step, appended to a JSON-lines file as it happens (survives a kill)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.is_global_zero:
            with open(self.path, "a") as handle:
                handle.write(json.dumps({"step": trainer.global_step, "loss": outputs["loss"].item()}) + "\n")


class KillAt(L.Callback):
    """kill -9 of every rank right after an optimizer step: the crash a resume must recover from."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from tinylm.data.corpus import BUILTIN

    folder = tmp_path_factory.mktemp("ddp") / "corpus"
    folder.mkdir()
    for index, doc in enumerate(BUILTIN["lee"]()):
        if index == 6:
            break
        (folder / f"{index:03d}.txt").write_text(doc, encoding="utf-8")
    return folder


def args(corpus: Path, root: Path, batch_size: int, callbacks: list[dict], *extra: str) -> list[str]:
    config = root.parent / f"{root.name}-callbacks.yaml"
    config.write_text(json.dumps({"trainer": {"callbacks": callbacks}}))
    return ["fit", "--config", str(RECIPE), "--config", str(config), "--trainer.default_root_dir", str(root),
            "--data.sources", str(corpus), "--data.vocab_size", "400", "--data.seq_len", "16",
            "--data.batch_size", str(batch_size), "--data.val_every", "6", "--model.config", "debug",
            "--model.init_args.lr", "3e-3", "--trainer.limit_val_batches", "0", "--trainer.log_every_n_steps", "1",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", *extra]


def callbacks(log: Path, checkpoint_every: int = 1000, kill_at: int | None = None) -> list[dict]:
    chosen = [
        {"class_path": "tinylm.training.rounds.MultiRoundTraining",
         "init_args": {"rounds": 2, "rate": 0.5, "granularity": 4, "seed": 5}},
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
         "init_args": {"every_n_train_steps": checkpoint_every, "save_last": True}},
        {"class_path": "tests.training.test_ddp.LossLog", "init_args": {"path": str(log)}},
    ]
    if kill_at is not None:
        chosen.append({"class_path": "tests.training.test_ddp.KillAt", "init_args": {"step": kill_at}})
    return chosen


def two_processes(*argv: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.Popen([sys.executable, "-m", "tinylm.cli", *argv], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def finish(process: subprocess.Popen) -> tuple[int, str]:
    """Wait with a hard timeout; whatever happens, no process of the group outlives the test."""
    try:
        output, _ = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"two-process run hung for {TIMEOUT} s and was killed:\n{output[-3000:]}")
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # rank 1 if rank 0 died alone
        except ProcessLookupError:
            pass
    return process.returncode, output


def losses(path: Path) -> dict[int, float]:
    return {row["step"]: row["loss"] for row in map(json.loads, path.read_text().splitlines())}


def test_two_processes_finish_plan_as_one_and_resume_bitwise_after_kill(corpus, tmp_path):
    from tinylm.cli import main
    from tinylm.data.datamodule import TextDataModule
    from tinylm.training.rounds import num_draws

    data = TextDataModule(sources=str(corpus), vocab_size=400, seq_len=16, batch_size=8, val_every=6)
    data.prepare_data()  # the tokenizer and packed cache every run below shares
    data.setup("fit")
    first_round = data.num_train_blocks // 8
    second_round = num_draws(data.num_train_blocks // 4, 0.5) * 4 // 8
    saved_at = first_round + second_round // 2  # a checkpoint in the middle of round 2
    # two processes: uninterrupted, and killed (kill -9, both ranks) two steps after a checkpoint, side by side;
    # the killed run is resumed as the README says (same command, --ckpt_path last) while the other finishes
    full = two_processes(*args(corpus, tmp_path / "full", 4, callbacks(tmp_path / "full.jsonl")), *DDP)
    killed = two_processes(*args(corpus, tmp_path / "crash", 4,
                                 callbacks(tmp_path / "killed.jsonl", saved_at, kill_at=saved_at + 2)), *DDP)
    # meanwhile one process, twice the per-device batch: the same global batches, the reference plan
    main(args(corpus, tmp_path / "one", 8, callbacks(tmp_path / "one.jsonl"), "--trainer.devices", "1",
              "--trainer.accelerator", "cpu"))
    one = np.load(tmp_path / "one" / "logs" / "version_0" / "rounds" / "round_1.npz")
    assert len(losses(tmp_path / "one.jsonl")) == first_round + second_round
    code, output = finish(killed)
    assert code == -signal.SIGKILL, output[-3000:]
    assert (tmp_path / "crash" / "logs" / "version_0" / "checkpoints" / "last.ckpt").is_file()
    resumed = two_processes(*args(corpus, tmp_path / "crash", 4, callbacks(tmp_path / "resumed.jsonl", saved_at)),
                            *DDP, "--ckpt_path", "last")
    code, output = finish(full)
    assert code == 0, output[-3000:]

    run = tmp_path / "full" / "logs" / "version_0"
    assert (run / "model" / "model.safetensors").is_file()
    assert [p.parent for p in tmp_path.joinpath("full").rglob("tinylm.json")] == [run / "model"]  # one model dir
    two = np.load(run / "rounds" / "round_1.npz")
    np.testing.assert_array_equal(two["plan"], one["plan"])
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-4)
    reference = losses(tmp_path / "full.jsonl")
    assert sorted(reference) == sorted(losses(tmp_path / "one.jsonl"))  # the same steps in every round

    code, output = finish(resumed)
    assert code == 0, output[-3000:]
    after = losses(tmp_path / "resumed.jsonl")
    assert min(after) == saved_at + 1  # continued from the checkpoint, not from scratch
    assert after == {step: loss for step, loss in reference.items() if step > saved_at}  # bitwise
    assert losses(tmp_path / "killed.jsonl") == {s: v for s, v in reference.items() if s <= saved_at + 2}
    assert (tmp_path / "crash" / "logs" / "version_0" / "model" / "model.safetensors").is_file()
    assert not (tmp_path / "crash" / "logs" / "version_1").exists()

    # one process cannot continue a two-process plan: a one-line refusal that says why
    with pytest.raises(SystemExit) as exit_:
        main(args(corpus, tmp_path / "other", 4, callbacks(tmp_path / "other.jsonl"), "--trainer.devices", "1",
                  "--trainer.accelerator", "cpu", "--ckpt_path", str(run / "checkpoints" / "last.ckpt")))
    assert exit_.value.code == 2
    assert not (tmp_path / "other" / "logs" / "version_0" / "model").exists()


RECIPE_1B = REPO / "recipes" / "pretrain" / "pangu-pi-1b-pro.yaml"
# Lightning refuses FSDP without a GPU ("The strategy `fsdp` requires a GPU accelerator"), and torch's
# FullyShardedDataParallel too ("FSDP needs a non-CPU accelerator device"): on CPU the recipe runs as DDP, its closest.
SHRUNK_ON_CPU = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.num_nodes", "1",
                 "--trainer.strategy", "ddp", "--trainer.precision", "32-true", "--trainer.limit_val_batches", "0",
                 "--trainer.val_check_interval", "1.0", "--trainer.enable_progress_bar", "false",
                 "--trainer.enable_model_summary", "false", "--trainer.log_every_n_steps", "1",
                 "--model.config", "debug", "--model.init_args.lr", "3e-3", "--data.seq_len", "16",
                 "--data.batch_size", "4", "--data.num_workers", "0"]


def test_the_1b_pro_recipe_prepared_two_processes_two_rounds_kill_resume_bitwise(corpus, tmp_path):
    """prepare → the 1B-Pro recipe shrunk (2 gloo processes) → two rounds, planned as one process plans them → kill -9
    mid-round 2 → resume: the final weights equal the uninterrupted run's bit for bit."""
    from safetensors.torch import load_file

    from tinylm.cli import main
    from tinylm.data.datamodule import TextDataModule
    from tinylm.training.rounds import num_draws

    tokenizer, prepared = tmp_path / "tok.model", tmp_path / "prepared"
    main(["tokenizer", "train", "--input", str(corpus), "--out", str(tokenizer), "--vocab_size", "400"])
    main(["data", "prepare", "--sources", str(corpus), "--tokenizer", str(tokenizer), "--out", str(prepared),
          "--workers", "2", "--val_every", "6", "--unit_chars", "1000", "--chunk_bytes", "2KB"])
    data = TextDataModule(prepared=str(prepared), seq_len=16, batch_size=8, cache_dir=str(tmp_path / "cache"))
    data.setup("fit")
    assert len(data.train_stream.chunks) > 2  # blocks are addressed across several chunks
    first_round = data.num_train_blocks // 8
    saved_at = first_round + num_draws(data.num_train_blocks // 4, 0.5) * 4 // 8 // 2  # mid round 2

    def run(name: str, root: str, kill_at: int | None = None, *extra: str) -> subprocess.Popen:
        config = tmp_path / f"{name}-callbacks.yaml"
        config.write_text(json.dumps({"trainer": {"callbacks": callbacks(tmp_path / f"{name}.jsonl", saved_at,
                                                                           kill_at)}}))
        return two_processes("fit", "--config", str(RECIPE_1B), "--config", str(config), *SHRUNK_ON_CPU,
                             "--data.prepared", str(prepared), "--trainer.default_root_dir", str(tmp_path / root),
                             *extra)

    full, killed = run("full", "full"), run("killed", "crash", saved_at + 2)
    # meanwhile one process, twice the per-device batch: the reference plan
    one_config = tmp_path / "one-callbacks.yaml"
    one_config.write_text(json.dumps({"trainer": {"callbacks": callbacks(tmp_path / "one.jsonl")}}))
    main(["fit", "--config", str(RECIPE_1B), "--config", str(one_config), *SHRUNK_ON_CPU, "--trainer.devices", "1",
          "--trainer.strategy", "auto", "--data.batch_size", "8", "--data.prepared", str(prepared),
          "--trainer.default_root_dir", str(tmp_path / "one")])
    code, output = finish(killed)
    assert code == -signal.SIGKILL, output[-3000:]
    resumed = run("resumed", "crash", None, "--ckpt_path", "last")
    for process in (full, resumed):
        code, output = finish(process)
        assert code == 0, output[-3000:]
    reference = losses(tmp_path / "full.jsonl")
    assert first_round < saved_at < max(reference)  # the kill came in round 2
    assert losses(tmp_path / "resumed.jsonl") == {s: v for s, v in reference.items() if s > saved_at}
    two, one = (np.load(tmp_path / root / "logs" / "version_0" / "rounds" / "round_1.npz") for root in ("full", "one"))
    np.testing.assert_array_equal(two["plan"], one["plan"])  # scored on two ranks, drawn as on one
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-4)
    full_weights, resumed_weights = (load_file(tmp_path / root / "logs" / "version_0" / "model" / "model.safetensors")
                                     for root in ("full", "crash"))
    assert full_weights.keys() == resumed_weights.keys()
    for name, tensor in full_weights.items():
        assert tensor.dtype == resumed_weights[name].dtype and torch.equal(tensor, resumed_weights[name]), name
