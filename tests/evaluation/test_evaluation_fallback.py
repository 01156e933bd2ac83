"""A local task without its files that lm-eval also ships runs as lm-eval's hub-backed task, and says so.

The hub is never reached: ``datasets.load_dataset`` (what lm-eval's tasks call to download) is replaced by a stub
that serves a tiny in-memory ARC-Easy, or raises what ``datasets`` raises offline.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import datasets
import pytest
from datasets import Dataset, DatasetDict

from tinylm.cli import main
from tinylm.errors import TinyLMError
from tinylm.evaluation import tasks
from tinylm.evaluation.tasks import HUB_TASKS, load_tasks, local_task_names, paper_table, registry

NOTE = "using lm-eval's hub-backed task 'arc_easy'"
# allenai/ai2_arc's fields, which lm-eval's arc_easy reads
HUB_ROWS = [{"id": f"hub-{i}", "question": f"Which number comes after {i}?",
             "choices": {"text": [str(i + 1), str(i + 2), str(i + 3)], "label": ["A", "B", "C"]}, "answerKey": "A"}
            for i in range(3)]


@pytest.fixture(scope="module")
def model_dir(model_dir_factory):
    return model_dir_factory("debug")


@pytest.fixture
def hub(monkeypatch):
    """The stubbed hub: records every load; set ``hub.error`` to make it fail as ``datasets`` does offline."""
    state = SimpleNamespace(calls=[], error=None)

    def load_dataset(path: str, name: str | None = None, **_) -> DatasetDict:
        state.calls.append((path, name))
        if state.error is not None:
            raise state.error
        return DatasetDict({split: Dataset.from_list(HUB_ROWS) for split in ("train", "validation", "test")})

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # anything the stub misses fails, never downloads
    tasks._announce.cache_clear()  # the note is printed once per process; each test starts afresh
    yield state
    tasks._announce.cache_clear()


@pytest.fixture
def no_local_files(monkeypatch):
    monkeypatch.delenv("TINYLM_EVAL_DATA", raising=False)


def write_local_arc(root):
    """An ARC-Easy folder in AI2's nested format, two questions per split."""
    (root / "arc_easy").mkdir(parents=True)
    for name in ("ARC-Easy-Test.jsonl", "ARC-Easy-Dev.jsonl"):
        rows = [{"id": f"local-{i}", "answerKey": "B",
                 "question": {"stem": f"Local question {i}?",
                              "choices": [{"label": "A", "text": "no"}, {"label": "B", "text": "yes"}]}}
                for i in range(2)]
        (root / "arc_easy" / name).write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_without_files_tinylm_eval_runs_lm_evals_task_and_says_so(model_dir, hub, no_local_files, tmp_path, capsys):
    out = tmp_path / "results.json"
    main(["eval", "--model", str(model_dir), "--tasks", "arc_easy", "--limit", "2", "--output", str(out)])
    assert hub.calls == [("allenai/ai2_arc", "ARC-Easy")]
    stdout = capsys.readouterr().out
    assert f"tinylm: arc_easy: no local files (set TINYLM_EVAL_DATA or --data_dir); {NOTE}" in stdout.splitlines()
    record = json.loads(out.read_text())
    assert record["n-samples"]["arc_easy"] == {"original": len(HUB_ROWS), "effective": 2}
    assert record["configs"]["arc_easy"]["dataset_path"] == "allenai/ai2_arc"  # the provenance shows it


def test_a_folder_without_the_benchmark_falls_back_once_per_process(hub, tmp_path, capsys):
    for _ in range(2):
        (task,) = load_tasks(["arc_easy"], data_dir=tmp_path)
        assert [doc["id"] for doc in task.eval_docs] == [row["id"] for row in HUB_ROWS]
    assert capsys.readouterr().out.splitlines() == [
        f"tinylm: arc_easy: no arc_easy folder in {tmp_path} (set TINYLM_EVAL_DATA or --data_dir); {NOTE}"]


def test_local_files_win_and_lm_eval_prefix_still_reaches_the_hub(hub, tmp_path, monkeypatch, capsys):
    write_local_arc(tmp_path)
    monkeypatch.setenv("TINYLM_EVAL_DATA", str(tmp_path))
    (task,) = load_tasks(["arc_easy"])
    assert [doc["id"] for doc in task.eval_docs] == ["local-0", "local-1"]
    assert hub.calls == [] and "hub-backed" not in capsys.readouterr().out
    # lm_eval:<name> is lm-eval's task even where tinylm has one of that name (its YAMLs must not shadow lm-eval's)
    (task,) = load_tasks(["lm_eval:arc_easy"])
    assert [doc["id"] for doc in task.eval_docs] == [row["id"] for row in HUB_ROWS]
    assert hub.calls == [("allenai/ai2_arc", "ARC-Easy")] and "hub-backed" not in capsys.readouterr().out


def test_offline_without_files_is_one_line_and_exit_2(model_dir, hub, no_local_files, capsys):
    hub.error = ConnectionError("Couldn't reach 'allenai/ai2_arc' on the Hub (OfflineModeIsEnabled)")
    with pytest.raises(SystemExit) as stop:
        main(["eval", "--model", str(model_dir), "--tasks", "arc_easy", "--limit", "2"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("tinylm:")]
    assert line == ("tinylm: error: arc_easy: lm-eval's hub-backed task 'arc_easy' could not load its data "
                    "(ConnectionError: Couldn't reach 'allenai/ai2_arc' on the Hub (OfflineModeIsEnabled)); "
                    "set TINYLM_EVAL_DATA or --data_dir to the folder of the benchmark files, or go online")


def test_a_task_lm_eval_lacks_still_needs_its_files(hub, no_local_files, capsys):
    with pytest.raises(TinyLMError, match="no benchmark folder is set"):
        load_tasks(["c3"])
    assert hub.calls == [] and "hub-backed" not in capsys.readouterr().out


def test_hub_tasks_are_lm_evals_own_names():
    lm_eval_names = set(registry().all_tasks)
    assert set(HUB_TASKS) <= set(local_task_names()) and set(HUB_TASKS.values()) <= lm_eval_names
    # every other local task lm-eval names too is deliberately left out (xsum: see HUB_TASKS' comment); c3, axb,
    # eprstmt, ... are not in lm-eval, so they keep needing the files
    assert {name for name in local_task_names() if name in lm_eval_names} - set(HUB_TASKS) == {"xsum"}


def test_paper_table_reads_a_benchmark_under_lm_evals_name():
    assert "| Examination | C-Eval | 50.00 |" in paper_table({"ceval-valid": {"acc,none": 0.5}})
