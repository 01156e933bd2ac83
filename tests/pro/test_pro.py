"""``tinylm pro``: the whole chain on a tiny random-init source, stage skipping and resuming (also when the code
changes, and over several seeds), the seed-by-seed report, bad input."""

from __future__ import annotations

import importlib
import inspect
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from tinylm.artifacts.cache import code_version
from tinylm.errors import TinyLMError
from tinylm.evaluation.stats import paired_t
from tinylm.model import ModelConfig
from tinylm.pro import (
    command,
    interleave,
    kv_heads_for,
    paper_depth,
    parse_budget,
    pro,
    read_target,
    shape_for_budget,
)

REPO = Path(__file__).resolve().parents[2]
STAGE_FOLDERS = ["1-tokenizer", "2-architecture", "3-inherit", "data", "4-train/pro-seed1234",
                 "4-train/scratch-seed1234", "4-train/distill-seed1234"]


@pytest.fixture(scope="module")
def source(tokenizer, tmp_path_factory) -> Path:
    """A random-init GQA source (head size 32, 2 query heads per KV head) with the SentencePiece test tokenizer."""
    from tinylm.artifacts.model_dir import save_model_dir
    from tinylm.model import Transformer

    torch.manual_seed(0)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2,
                         intermediate_size=256, max_seq_len=256)
    return save_model_dir(tmp_path_factory.mktemp("pro-source") / "model", Transformer(config), tokenizer)


def small_run(source: Path, corpus: Path, out: Path, **overrides):
    settings = dict(source=str(source), target="300k", data=[str(corpus)], out=str(out), tokens=6000, seq_len=32,
                    batch_size=4, calibration_size=4, heldout_chars=5000, tasks=["arc_easy"],
                    eval_data_dir=str(out.parent / "no-benchmarks"), distill=0.5)
    return pro(**{**settings, **overrides})


@pytest.fixture(scope="module")
def finished(source, corpus_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pro") / "run"
    small_run(source, corpus_dir, out)
    return out


def test_whole_chain_on_a_tiny_source(finished):
    report = json.loads((finished / "report.json").read_text())
    scores = report["scores"]
    assert list(scores) == ["source", "compact source", "random init", "inherited (step 0)",
                            "Pro (inherited + rounds), seed 1234", "scratch (same shape, same tokens), seed 1234",
                            "Pro + distill, seed 1234"]
    assert all(row["bpb"] > 0 for row in scores.values())
    assert sorted(p.name for p in (finished / "5-report").iterdir()) == \
        ["Pro-distill-seed1234", "Pro-seed1234", "compact-source", "inherited", "random-init", "scratch-seed1234",
         "source"]
    assert all(row["tasks"] == {"arc_easy": None} for row in scores.values())  # no benchmark files: n/a
    text = (finished / "report.md").read_text()
    assert "n/a" in text and "loss_curves.png" in text and (finished / "loss_curves.png").stat().st_size > 0
    made_by = report["provenance"]  # the code and machine behind the numbers
    assert made_by["commit"] is None or len(made_by["commit"]) == 40
    assert set(made_by["versions"]) == {"tinylm", "python", "torch", "lightning"} and made_by["torch_threads"] >= 1
    assert "Made by " in text
    # 1. the kept pieces cover the asked share and the compact source has that many rows
    tok = report["tokenizer"]
    assert tok["counted_coverage"] >= 0.9786 and scores["compact source"]["vocab_size"] == tok["vocab_size"]
    # 2. the budget's shape follows the depth rule
    assert scores["Pro (inherited + rounds), seed 1234"]["layers"] == paper_depth(300_000) == 4
    # 4. every arm trained on the same tokens, in two rounds
    training = {arm: by_seed["1234"] for arm, by_seed in report["training"].items()}
    assert len({arm["tokens"] for arm in training.values()}) == 1 and training["pro"]["tokens"] > 0
    assert (finished / "4-train" / "pro-seed1234" / "rounds" / "round_1.npz").is_file()
    assert training["pro"]["lr"] == pytest.approx((4 * 32 / 2048) ** 0.5 * 1e-3)
    # the rule's settings carry LanguageModel's names (tinylm fit's --model.lr ...), the report prints it as math
    assert {k: report["recipe"][k] for k in ("lr", "lr_scaling_bs0", "lr_scaling_r")} == \
        {"lr": 1e-3, "lr_scaling_bs0": 2048, "lr_scaling_r": 0.5}
    assert "lr = (bs / bs0)^r × lr0 = (128/2048)^0.5 × 0.001 = 2.50e-04" in text
    # 3. the inherited model is the compact source's both-ends layers, and training moved it
    from tinylm.artifacts.model_dir import load_model_dir

    inherited, _ = load_model_dir(finished / "3-inherit" / "model")
    trained, _ = load_model_dir(finished / "4-train" / "pro-seed1234" / "model")
    assert not torch.equal(inherited.model.embed_tokens.weight, trained.model.embed_tokens.weight)
    assert json.loads((finished / "3-inherit" / "stage.json").read_text())["result"]["layers"] == [0, 1, 2, 3]
    # one seed: the difference is reported as the single draw it is, with no interval or p
    assert report["seeds"] == [1234] and report["comparisons"]["Pro − scratch"]["n"] == 1
    assert math.isnan(report["comparisons"]["Pro − scratch"]["p"])
    pro_bpb, scratch_bpb = (scores[f"{name}, seed 1234"]["bpb"] for name in ("Pro (inherited + rounds)",
                                                                             "scratch (same shape, same tokens)"))
    assert f"- Pro − scratch: {pro_bpb - scratch_bpb:+.4f} bpb from one seed (1234): one draw, so no interval" in text
    assert "trained with one seed (1234): every number below is one draw" in text and "95% t interval" not in text


def test_a_rerun_skips_every_finished_stage(finished, source, corpus_dir, capsys):
    before = {name: (finished / name / "stage.json").stat().st_mtime_ns for name in STAGE_FOLDERS}
    small_run(source, corpus_dir, finished)
    log = capsys.readouterr().out
    assert {name: (finished / name / "stage.json").stat().st_mtime_ns for name in STAGE_FOLDERS} == before
    for name in STAGE_FOLDERS:
        assert f"{Path(name).name}: skipped" in log


def test_a_killed_run_resumes_at_the_stage_it_had_not_finished(source, corpus_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real_train = command.train_arm

    def killed(tmp, arm, *args, **kwargs):
        if arm == "scratch":
            raise KeyboardInterrupt  # killed while training the scratch arm
        return real_train(tmp, arm, *args, **kwargs)

    monkeypatch.setattr(command, "train_arm", killed)
    with pytest.raises(KeyboardInterrupt):
        small_run(source, corpus_dir, out, distill=0.0, tasks=[])
    assert (out / "4-train" / "pro-seed1234" / "stage.json").is_file()
    assert not (out / "4-train" / "scratch-seed1234").exists()
    # the half-written arm left no temp folder; only its (marked) work folder, which the rerun resumes from
    assert [p.name.rpartition("-")[0] for p in (out / "4-train").glob(".scratch*")] == [".scratch-seed1234.work"]
    hashes = {name: json.loads((out / name / "stage.json").read_text())["hash"] for name in STAGE_FOLDERS[:5]}
    weights = (out / "4-train" / "pro-seed1234" / "model" / "model.safetensors").stat().st_mtime_ns
    capsys.readouterr()

    monkeypatch.setattr(command, "train_arm", real_train)
    small_run(source, corpus_dir, out, distill=0.0, tasks=[])
    log = capsys.readouterr().out
    assert all(f"{Path(name).name}: skipped" in log for name in hashes)
    assert "scratch-seed1234: running" in log and (out / "report.md").is_file()
    assert "tinylm-tmp" not in log  # final paths
    assert f"scratch model dir (seed 1234): {out / '4-train' / 'scratch-seed1234' / 'model'}" in log
    assert (out / "4-train" / "pro-seed1234" / "model" / "model.safetensors").stat().st_mtime_ns == weights
    # a changed training setting redoes training, not the tokenizer, shape or inheritance
    small_run(source, corpus_dir, out, distill=0.0, tasks=[], lr=2e-3)
    log = capsys.readouterr().out
    assert "1-tokenizer: skipped" in log and "3-inherit: skipped" in log and "pro-seed1234: running" in log


def test_stages_runs_a_subset(source, corpus_dir, tmp_path, capsys):
    out = tmp_path / "run"
    result = small_run(source, corpus_dir, out, stages="tokenizer,architecture")
    assert set(result) == {"tokenizer", "architecture"} and not (out / "3-inherit").exists()
    with pytest.raises(Exception, match="stage inherit has not run"):
        small_run(source, corpus_dir, out, stages="train")


@pytest.mark.parametrize("args, message", [
    (["--target", "banana"], "--target 'banana' is neither a parameter budget"),
    (["--target", "1k"], "no shape of the source's heads lands near a budget of 1,000"),
    (["--target", '{"hidden_size": 512, "num_heads": 16}'], "larger than the source's"),
    (["--stages", "tokenizer,fly"], "--stages tokenizer,fly: choose from"),
    (["--coverage", "1.5"], "--coverage 1.5 must be a share"),
    (["--criterion", "magic"], "--criterion 'magic'"),
    (["--distill", "2"], "--distill 2.0 must be a weight"),
    (["--lr_scaling_bs0", "0"], "--lr_scaling_bs0 0 must be positive"),
    (["--seeds", "0"], "--seeds 0 must be at least 1"),
])
def test_bad_input_is_one_line(source, corpus_dir, tmp_path, capsys, args, message):
    from tinylm.cli import main

    base = ["pro", "--source", str(source), "--target", "300k", "--data", str(corpus_dir), "--out",
            str(tmp_path / "run"), "--tokens", "6000", "--seq_len", "32", "--batch_size", "4", "--tasks", "[]"]
    with pytest.raises(SystemExit) as exit_info:
        main(base + args)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and message in err and len(err.splitlines()) == 1


def test_out_is_never_a_foreign_folder_and_a_missing_source_is_named(source, corpus_dir, tmp_path, capsys):
    from tinylm.cli import main

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    for out, src, message in [(foreign, str(source), "was not written by tinylm"),
                              (tmp_path / "new", str(tmp_path / "nowhere"), "is not a model dir")]:
        with pytest.raises(SystemExit):
            main(["pro", "--source", src, "--target", "300k", "--data", str(corpus_dir), "--out", str(out)])
        assert message in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def test_depth_rule_and_budget_shapes():
    assert [paper_depth(b) for b in (1e9, 1e8, 1e7, 1e6)] == [20, 13, 8, 5]
    assert [parse_budget(t) for t in ("10M", "1.5B", "500k", "10e6", "12345", "ten")] == \
        [10_000_000, 1_500_000_000, 500_000, 10_000_000, 12345, None]
    smollm2 = ModelConfig(vocab_size=11357, hidden_size=576, num_layers=30, num_heads=9, num_kv_heads=3,
                          intermediate_size=1536, tie_embeddings=True)
    assert kv_heads_for(4, smollm2) == 2 and kv_heads_for(5, smollm2) is None and kv_heads_for(9, smollm2) == 3
    shape = shape_for_budget(10_000_000, smollm2, 11357)
    assert (shape.num_layers, shape.hidden_size, shape.num_heads, shape.num_kv_heads) == (8, 256, 4, 2)
    assert shape.intermediate_size == 688 and shape.head_dim == 64 and shape.tie_embeddings
    preset, how = read_target("tiny", smollm2, 11357)
    assert (preset.hidden_size, preset.num_kv_heads, how) == (256, 2, "preset tiny")


BUDGETS = (1_000, 100_000, 300_000, 1_000_000, 3_000_000, 10_000_000, 30_000_000, 100_000_000, 500_000_000)
# (layers, width, heads, KV heads, FFN) picked per budget when pro solved budgets on its own, before it shared
# tinylm.model.shapes with the architecture study; None: no shape lands within half the budget
BUDGET_SHAPES = [
    (ModelConfig(vocab_size=11357, hidden_size=576, num_layers=30, num_heads=9, num_kv_heads=3, intermediate_size=1536,
                 tie_embeddings=True),
     [None, None, None, (5, 64, 1, 1, 176), (6, 128, 2, 1, 336), (8, 256, 4, 2, 688), (10, 384, 6, 2, 1024),
      (13, 576, 9, 3, 1536), None]),
    (ModelConfig(vocab_size=32000, hidden_size=2048, num_layers=22, num_heads=32, num_kv_heads=4,
                 intermediate_size=5632),
     [None, None, None, None, (6, 64, 1, 1, 176), (8, 128, 2, 1, 352), (10, 320, 5, 1, 880), (13, 640, 10, 2, 1760),
      (17, 1536, 24, 3, 4224)]),
    (ModelConfig(vocab_size=48000, hidden_size=1792, num_layers=21, num_heads=14, intermediate_size=4864,
                 rope_theta=5e5, norm_eps=1e-6),
     [None, None, None, None, None, (8, 128, 1, 1, 352), (10, 256, 2, 2, 688), (13, 512, 4, 4, 1392),
      (17, 1280, 10, 10, 3472)]),
    (ModelConfig(vocab_size=5000, hidden_size=384, num_layers=12, num_heads=6, num_kv_heads=2, head_dim=96,
                 intermediate_size=1000),  # heads wider than hidden / heads: the FFN stops at the source's
     [None, None, None, None, (6, 192, 2, 1, 496), (8, 288, 3, 1, 752), (10, 576, 6, 2, 1000), None, None]),
]


@pytest.mark.parametrize("source, expected", BUDGET_SHAPES, ids=["smollm2", "gqa-8", "mha", "wide-heads"])
def test_budget_shapes_are_the_ones_pro_picked_before_the_solver_was_shared(source, expected):
    for budget, want in zip(BUDGETS, expected):
        if want is None:
            with pytest.raises(TinyLMError, match=f"lands near a budget of {budget:,} parameters"):
                shape_for_budget(budget, source, source.vocab_size)
            continue
        shape = shape_for_budget(budget, source, source.vocab_size)
        assert (shape.num_layers, shape.hidden_size, shape.num_heads, shape.num_kv_heads,
                shape.intermediate_size) == want
        assert (shape.head_dim, shape.rope_theta, shape.norm_eps, shape.tie_embeddings, shape.max_seq_len) == \
            (source.head_dim, source.rope_theta, source.norm_eps, source.tie_embeddings, source.max_seq_len)


def test_interleave_lets_the_datamodule_hold_out_exactly_the_heldout_documents():
    for n_train, n_held in [(7, 3), (100, 9), (5, 5), (1, 4)]:
        train, held = [f"t{i}" for i in range(n_train)], [f"h{i}" for i in range(n_held)]
        docs, every, count = interleave(train, held)
        split = [d for i, d in enumerate(docs) if i % every == every - 1]
        assert split == held[:count] and [d for d in docs if d.startswith("t")] == train and count >= 1


def test_recipe_parses_as_the_command_config():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_function_arguments(pro)
    parser.add_argument("--config", action="config")
    for recipe in sorted((REPO / "recipes" / "pro").glob("*.yaml")):
        config = parser.parse_args(["--config", str(recipe)])
        assert config.source and config.target and config.tokens > 0


def test_a_killed_training_stage_resumes_from_its_checkpoint_exactly(source, corpus_dir, tmp_path):
    """kill -9 in the middle of the training stage: the rerun resumes inside the stage from its last checkpoint,
    and every logged loss equals an uninterrupted run's."""
    import csv
    import os
    import signal
    import subprocess
    import sys
    import time

    settings = dict(tokens=40000, scratch=False, distill=0.0, stages="tokenizer,architecture,inherit,train")
    whole = tmp_path / "whole"
    small_run(source, corpus_dir, whole, **settings)

    killed = tmp_path / "killed"
    args = ["pro", "--source", str(source), "--target", "300k", "--data", str(corpus_dir), "--out", str(killed),
            "--tokens", "40000", "--seq_len", "32", "--batch_size", "4", "--calibration_size", "4", "--heldout_chars",
            "5000", "--scratch", "false", "--distill", "0", "--stages", settings["stages"]]
    process = subprocess.Popen([sys.executable, "-m", "tinylm.cli", *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    def logged_past_checkpoint() -> bool:
        """A checkpoint is on disk and the row of its last batch too: Lightning logs that row just after the
        checkpoint hook, so a kill inside that window loses one logged row (not a trained step)."""
        found = list((killed / "4-train").glob(".pro-seed1234.work-*/checkpoints/last.ckpt"))
        metrics = list((killed / "4-train").glob(".pro-seed1234.work-*/logs/version_*/metrics.csv"))
        if not found or not metrics:
            return False
        import torch

        step = torch.load(found[0], map_location="cpu", weights_only=True, mmap=True)["global_step"]
        with open(metrics[0], newline="") as handle:
            return any(int(row["step"]) >= step - 1 for row in csv.DictReader(handle) if row.get("train/loss"))

    deadline = time.time() + 300
    while time.time() < deadline:
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        try:
            if logged_past_checkpoint():
                break
        except (OSError, RuntimeError, EOFError, KeyError, ValueError):
            pass  # a file being written
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "4-train" / "pro-seed1234" / "stage.json").exists()  # killed inside the stage

    record = small_run(source, corpus_dir, killed, **settings)  # the same command again: resumes
    assert record["pro-seed1234"]["steps"] == json.loads(
        (whole / "4-train" / "pro-seed1234" / "stage.json").read_text())["result"]["steps"]
    assert not list((killed / "4-train").glob(".pro-seed1234.work-*"))  # removed once the stage is done

    def losses(run: Path) -> dict[int, float]:
        with open(next((run / "4-train" / "pro-seed1234" / "logs").glob("version_*/metrics.csv")),
                  newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if row.get("train/loss")]
        steps = [int(row["step"]) for row in rows]
        assert len(steps) == len(set(steps)), "a step logged twice"
        return {int(row["step"]): float(row["train/loss"]) for row in rows}

    expected, resumed = losses(whole), losses(killed)
    assert list(resumed) == list(expected) and len(expected) > 20
    assert resumed == pytest.approx(expected, abs=0, rel=0)


def test_a_resumable_stage_removes_only_the_work_folders_it_made(tmp_path):
    from tinylm.artifacts.io import MARKER
    from tinylm.pro.stages import run_stage

    folder = tmp_path / "4-train" / "pro"
    foreign, stale = tmp_path / "4-train" / ".pro.work-mine", tmp_path / "4-train" / ".pro.work-old"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("a user's file that happens to match the name")
    stale.mkdir()
    (stale / MARKER).touch()
    seen = []

    def build(tmp, work):
        seen.append(work)
        assert (work / MARKER).is_file()  # made and marked before the stage runs
        return {}

    run_stage(folder, {"a": 1}, build, ("tinylm.pro.stages",), resumable=True)
    assert (foreign / "notes.txt").read_text().startswith("a user's")  # never removed
    assert not stale.exists() and not seen[0].exists()  # an older settings' leftover, and this stage's own, are


def test_a_stage_is_redone_when_the_code_that_computes_it_changes(tmp_path, monkeypatch, capsys):
    from tinylm.pro.stages import run_stage

    monkeypatch.syspath_prepend(str(tmp_path))
    module = tmp_path / "stage_code_under_test.py"
    module.write_text("def value():\n    return 1\n")
    code = ("stage_code_under_test", "tinylm.pro.stages")
    folder, built = tmp_path / "run" / "1-stage", []

    def build(tmp):
        built.append(1)
        return {"n": len(built)}

    first = run_stage(folder, {"a": 1}, build, code)
    assert run_stage(folder, {"a": 1}, build, code)["hash"] == first["hash"] and len(built) == 1  # unchanged: skipped
    assert "1-stage: skipped" in capsys.readouterr().out
    module.write_text("def value():\n    return 2\n")  # the same inputs, computed by changed code
    second = run_stage(folder, {"a": 1}, build, code)
    assert second["hash"] != first["hash"] and len(built) == 2 and second["result"] == {"n": 2}
    assert json.loads((folder / "stage.json").read_text())["code"] == {"modules": list(code),
                                                                      "version": code_version(*code)}
    sys.modules.pop("stage_code_under_test", None)


@pytest.mark.parametrize("stage, module", [
    ("tokenizer", "tinylm.vocab.counting"), ("architecture", "tinylm.model.shapes"), ("data", "tinylm.pro.data"),
    ("inherit", "tinylm.inherit.importance"), ("train", "tinylm.training.rounds"),
    ("train", "tinylm.data.datamodule"), ("report", "tinylm.model.scoring"), ("report", "tinylm.evaluation.adapter"),
])
def test_each_stage_key_carries_the_version_of_the_code_that_computes_it(stage, module, monkeypatch):
    """A changed line in a module a stage runs changes that stage's code version, hence its key (a package in
    ``CODE`` stands for every file under it); the other stages' versions stay."""
    before = {name: code_version(*code) for name, code in command.CODE.items()}
    path = Path(inspect.getsourcefile(importlib.import_module(module)))
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: real(self) + (b"\n# changed\n" if self == path else b""))
    after = {name: code_version(*code) for name, code in command.CODE.items()}
    assert after[stage] != before[stage]
    assert after["architecture"] == before["architecture"] or stage == "architecture"


def test_seeds_train_every_arm_per_seed_resume_and_report_mean_interval_and_p(source, corpus_dir, tmp_path,
                                                                              monkeypatch, capsys):
    """--seeds 3: the tokenizer, shape, sample and inherited model once; each (arm, seed) its own stage, so a run
    killed in the second seed keeps the first; the report gives each seed's bpb and the paired statistics."""
    out = tmp_path / "run"
    real_train = command.train_arm

    def killed(tmp, arm, shape, init, data, compact, recipe, *args):
        if (arm, recipe["seed"]) == ("scratch", 1235):
            raise KeyboardInterrupt  # killed in the second seed's scratch arm
        return real_train(tmp, arm, shape, init, data, compact, recipe, *args)

    monkeypatch.setattr(command, "train_arm", killed)
    with pytest.raises(KeyboardInterrupt):
        small_run(source, corpus_dir, out, distill=0.0, tasks=[], seeds=3)
    finished = ["pro-seed1234", "scratch-seed1234", "pro-seed1235"]
    assert sorted(p.name for p in (out / "4-train").iterdir() if not p.name.startswith(".")) == sorted(finished)
    capsys.readouterr()

    monkeypatch.setattr(command, "train_arm", real_train)
    report = small_run(source, corpus_dir, out, distill=0.0, tasks=[], seeds=3)
    log = capsys.readouterr().out
    assert all(f"{name}: skipped" in log for name in ["1-tokenizer", "3-inherit", *finished])
    assert all(f"{name}: running" in log for name in ["scratch-seed1235", "pro-seed1236", "scratch-seed1236"])
    inherits = [json.loads((out / f"4-train/pro-seed{s}/stage.json").read_text())["inputs"]["init"]
                for s in (1234, 1235, 1236)]
    assert len(set(inherits)) == 1  # one inherited model, trained from at every seed

    heldout = {arm: {int(s): v for s, v in by_seed.items()} for arm, by_seed in
               json.loads((out / "report.json").read_text())["heldout_bpb"].items()}
    assert report["seeds"] == [1234, 1235, 1236] and sorted(heldout) == ["pro", "scratch"]
    assert all(sorted(by_seed) == [1234, 1235, 1236] for by_seed in heldout.values())
    assert len(set(heldout["scratch"].values())) == 3 and len(set(heldout["pro"].values())) == 3  # seeds differ
    expected = paired_t([heldout["pro"][s] - heldout["scratch"][s] for s in (1234, 1235, 1236)])
    c = report["comparisons"]["Pro − scratch"]
    assert c["n"] == 3 and c["mean"] == pytest.approx(expected["mean"]) and 0 < c["p"] <= 1
    assert c["low"] < c["mean"] < c["high"] and c["p"] == pytest.approx(expected["p"])
    text = (out / "report.md").read_text()
    assert "trained with 3 seeds (1234, 1235, 1236), each a row of its own" in text
    assert f"| 1235 | {heldout['pro'][1235]:.4f} | {heldout['scratch'][1235]:.4f} |" in text
    assert (f"- Pro − scratch over 3 seeds: mean {c['mean']:+.4f} bpb, 95% t interval [{c['low']:+.4f}, "
            f"{c['high']:+.4f}], paired two-sided p = {c['p']:.3g}") in text
    assert "one draw" not in text
