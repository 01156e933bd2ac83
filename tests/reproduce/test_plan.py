"""Plans and provenance: a plan derived from the declarations with a stable hash; small and paper scale refuse a
dirty tree; every result records commit, dirty flag, plan hash, threads and versions; a result under an earlier
plan moves to history/ and the report says so (cache keys and their code version: tests/artifacts/test_cache.py)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import lightning
import pytest
import torch

import tinylm
from reproduce import plan as plans
from reproduce.experiment import Experiment, Measured, Options
from reproduce.report import EXPERIMENTS, load, summary, write_report
from reproduce.runner import run
from reproduce.verdict import Finding
from tinylm.errors import TinyLMError

FINDING = Finding("f", "a beats b", "P", "bpb", ("a", "b"))


def toy(name: str = "coverage", *findings: Finding) -> Experiment:
    """A one-finding experiment under a report name (so the report has a section for it), measured instantly."""
    findings = findings or (FINDING,)
    return Experiment(name, "a toy", {"smoke": {"steps": 1}}, findings,
                      lambda setting, options, folder: Measured(
                          "| toy |", {f.key: {"a": [1.0], "b": [2.0]} for f in findings}))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_has_a_plan_derived_from_its_declarations(name):
    experiment = load(name)
    for scale in ("smoke", "small", "paper"):
        planned = plans.plan(experiment, scale)
        assert [f["key"] for f in planned["findings"]] == [f.key for f in experiment.findings]
        assert [tuple(f.get("arms", ())) for f in planned["findings"]] == [f.arms for f in experiment.findings]
        assert planned["seeds"] == ("deterministic" if experiment.deterministic else experiment.seeds[scale])
        assert json.loads(json.dumps(planned)) == planned  # plain data
        assert plans.plan_hash(experiment, scale) == plans.plan_hash(load(name), scale)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_scale_is_a_frozen_dataclass(name):
    """One scale form for every experiment: a frozen dataclass per scale (a ``Recipe`` where it trains), so its plan
    states each setting by name and nothing changes a setting after it is declared."""
    for scale, setting in load(name).scales.items():
        assert dataclasses.is_dataclass(setting) and type(setting).__dataclass_params__.frozen, (name, scale)


def test_the_plan_hash_is_stable_across_processes_and_changes_with_the_plan():
    code = ("from reproduce.report import load; from reproduce.plan import plan_hash; "
            "print(plan_hash(load('ladder'), 'small'))")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           cwd=Path(__file__).resolve().parents[2]).stdout.strip()
    ladder = load("ladder")
    assert other == plans.plan_hash(ladder, "small")
    reworded = dataclasses.replace(ladder, findings=(dataclasses.replace(ladder.findings[0], claim="reworded"),
                                                     *ladder.findings[1:]))
    assert plans.plan_hash(reworded, "small") != other
    resized = dataclasses.replace(ladder, scales={**ladder.scales,
                                                  "small": dataclasses.replace(ladder.scales["small"], train_tokens=1)})
    assert plans.plan_hash(resized, "small") != other
    effect = dataclasses.replace(ladder, findings=(dataclasses.replace(ladder.findings[0], smallest_effect=0.05),
                                                   *ladder.findings[1:]))
    assert plans.plan_hash(effect, "small") != other
    assert plans.plan_hash(ladder, "paper") != other  # each scale has its own plan


def test_every_reference_to_another_finding_names_a_declared_one_of_the_same_kind():
    declared = {f"{name}/{f.key}": f for name in EXPERIMENTS for f in load(name).findings}
    for key, finding in declared.items():
        if finding.same_as:
            assert finding.same_as in declared, key
            assert declared[finding.same_as].kind == finding.kind and not declared[finding.same_as].same_as, key


def _git(folder: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=folder, check=True,
                   capture_output=True)


@pytest.mark.parametrize("scale", ["small", "paper"])
def test_the_committed_plan_files_are_what_the_declarations_say(scale):
    """A declaration changed without `python -m reproduce plan` (and a commit) fails here, before any run."""
    for name in EXPERIMENTS:
        experiment = load(name)
        written = json.loads(plans.plan_file(name, scale).read_text())
        assert written == {"plan_hash": plans.plan_hash(experiment, scale), **plans.plan(experiment, scale)}, name
        plans.check_plan_written(experiment, scale)


def test_a_small_run_refuses_declarations_that_differ_from_the_plan_file(tmp_path, monkeypatch):
    monkeypatch.setattr(plans, "PLANS", tmp_path / "plans")
    coverage = load("coverage")
    with pytest.raises(TinyLMError, match="has no plan file"):
        run(coverage, Options(scale="small", out=tmp_path / "out"))
    plans.write_plan(coverage, "small")
    resized = dataclasses.replace(coverage, seeds={**coverage.seeds, "small": 7}, deterministic=False)
    with pytest.raises(TinyLMError, match="differs from its plan file"):
        run(resized, Options(scale="small", out=tmp_path / "out"))
    assert not (tmp_path / "out").exists()  # refused before any work


def test_small_scale_refuses_a_dirty_tree_and_smoke_records_it(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "code.py").write_text("x = 1\n")
    _git(repo, "add", "code.py")
    _git(repo, "commit", "-q", "-m", "one")
    monkeypatch.setattr(plans, "REPO", repo)
    commit, dirty = plans.checked_tree("small", ())
    assert len(commit) == 40 and dirty is False
    (repo / "results").mkdir()
    (repo / "results" / "new.json").write_text("{}")  # what the run writes is not code
    assert plans.checked_tree("small", (repo / "results",)) == (commit, False)
    (repo / "code.py").write_text("x = 2\n")
    with pytest.raises(TinyLMError, match="uncommitted changes"):
        plans.checked_tree("small", (repo / "results",))
    with pytest.raises(TinyLMError, match="uncommitted changes"):
        plans.checked_tree("paper", ())
    assert plans.checked_tree("smoke", ()) == (commit, True)
    (repo / "code.py").write_text("x = 1\n")
    (repo / "new_module.py").write_text("y = 1\n")  # an uncommitted module can be imported by the run
    with pytest.raises(TinyLMError):
        plans.checked_tree("small", ())
    monkeypatch.setattr(plans, "REPO", tmp_path / "not-a-checkout")
    (tmp_path / "not-a-checkout").mkdir()
    with pytest.raises(TinyLMError, match="not a git checkout"):
        plans.checked_tree("small", ())


def test_the_command_refuses_small_scale_results_from_a_dirty_tree_before_any_work(tmp_path, monkeypatch, capsys):
    from reproduce.__main__ import main

    monkeypatch.setattr(plans, "git_state", lambda root, outside=(): ("0" * 40, True))
    assert main(["coverage", "--scale", "small", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "uncommitted changes" in err
    assert not list(tmp_path.iterdir())


def test_a_result_records_its_provenance(tmp_path):

    experiment = toy()
    folder, record = run(experiment, Options(out=tmp_path))
    assert record["plan_hash"] == plans.plan_hash(experiment, "smoke") and record["plan"] == plans.plan(experiment,
                                                                                                        "smoke")
    commit, dirty = plans.git_state(plans.REPO, (tmp_path,))
    assert (record["commit"], record["dirty"]) == (commit, dirty)
    assert record["torch_threads"] == torch.get_num_threads()
    assert record["versions"] == {"tinylm": tinylm.__version__, "python": sys.version.split()[0],
                                  "torch": torch.__version__, "lightning": lightning.__version__}
    assert record["plan_hash"] in (folder / "table.md").read_text()
    assert json.loads((folder / "results.json").read_text())["plan_hash"] == record["plan_hash"]


def test_a_tree_that_changes_while_a_run_measures_is_said(tmp_path, monkeypatch):
    states = iter([("a" * 40, False)] * 2 + [("b" * 40, True)])
    monkeypatch.setattr(plans, "git_state", lambda root, outside=(): next(states))
    _, record = run(toy(), Options(out=tmp_path))
    assert (record["commit"], record["dirty"]) == ("a" * 40, False)
    assert record["tree_changed_during_run"] == f"commit {'b' * 40}, dirty True at the end"
    assert "The git tree changed while it ran" in write_report(tmp_path).read_text()


def test_a_result_under_another_plan_moves_to_history_and_the_report_says_so(tmp_path):
    first = toy()
    folder, old = run(first, Options(out=tmp_path))
    (folder / "figure.png").write_bytes(b"png")
    second = toy("coverage", dataclasses.replace(FINDING, claim="a beats b, declared again"))
    assert plans.plan_hash(second, "smoke") != old["plan_hash"]
    with pytest.raises(TinyLMError, match="--overwrite"):  # still never replaced silently
        run(second, Options(out=tmp_path))
    folder, new = run(second, Options(out=tmp_path, overwrite=True))
    kept = folder / "history" / old["plan_hash"]
    assert json.loads((kept / "results.json").read_text()) == json.loads(json.dumps(old))
    assert (kept / "table.md").is_file() and (kept / "figure.png").read_bytes() == b"png"
    assert new["plan_changed"]["from"] == old["plan_hash"] and new["plan_changed"]["to"] == new["plan_hash"]
    report = write_report(tmp_path).read_text()
    assert "The plan changed" in report and f"coverage/history/{old['plan_hash']}/" in report
    folder, same = run(second, Options(out=tmp_path, overwrite=True))  # same plan: replaced, history kept
    assert same["plan_changed"] == new["plan_changed"]  # the move that plan's first result made is not forgotten
    assert (folder / "history" / old["plan_hash"] / "results.json").is_file()
    assert [e["plan_hash"] for e in plans.history(folder)] == [old["plan_hash"]]


def test_a_committed_result_rerun_at_another_commit_is_kept_beside_the_new_one(tmp_path):
    """Same plan, other code: the earlier run stays under history/<plan>-<commit>/ (a rerun's differences are a
    result too) and the report calls it an earlier run of this plan; a rerun at the same commit, or of a smoke
    result, just replaces it."""
    old, new = tmp_path / "ladder", tmp_path / "new"
    old.mkdir()
    record = {"experiment": "ladder", "scale": "small", "plan_hash": "p" * 16, "commit": "a" * 40, "seeds": 5,
              "findings": []}
    (old / "results.json").write_text(json.dumps(record))
    (old / "table.md").write_text("| old |")
    assert plans.keep_history(old, new, "p" * 16, "a" * 40) is None and not (new / "history").exists()
    assert plans.keep_history(old, new, "p" * 16, "b" * 40) is None  # the plan did not change
    kept = new / "history" / f"{'p' * 16}-{'a' * 10}"
    assert json.loads((kept / "results.json").read_text()) == record and (kept / "table.md").read_text() == "| old |"
    smoke = tmp_path / "smoke"
    smoke.mkdir()
    (smoke / "results.json").write_text(json.dumps({**record, "scale": "smoke"}))
    assert plans.keep_history(smoke, tmp_path / "smoke-new", "p" * 16, "b" * 40) is None
    assert not (tmp_path / "smoke-new" / "history").exists()
    (new / "results.json").write_text(json.dumps({**record, "commit": "b" * 40, "table": "| new |",
                                                  "wall_seconds": 1.0, "hardware": "CPU"}))
    shutil.rmtree(old)
    new.rename(old)
    assert "An earlier run of this plan: `ladder/history/" in write_report(tmp_path).read_text()


def test_results_from_before_plans_move_to_history_too(tmp_path):
    (tmp_path / "coverage").mkdir()
    (tmp_path / "coverage" / ".tinylm").write_text("written by tinylm\n")
    (tmp_path / "coverage" / "results.json").write_text(json.dumps({"experiment": "coverage", "findings": []}))
    folder, record = run(toy(), Options(out=tmp_path, overwrite=True))
    moved = record["plan_changed"]["moved_to"]
    assert moved.startswith("history/unplanned-") and (folder / moved / "results.json").is_file()


def test_a_result_from_before_provenance_says_what_git_knows_and_no_more():
    from reproduce.report import _provenance

    later = {"committed_in": "80caa317e771", "code_commit": None, "dirty": None, "plan_hash": None}
    line = _provenance({"recorded_later": later})
    assert "committed in `80caa317e7`" in line and "code commit not recorded" in line and "no plan hash" in line
    assert "code commit `b9533f8b8f`" in _provenance({"recorded_later": {**later, "code_commit": "b9533f8b8f57"}})
    assert "no commit recorded" in _provenance({})


def test_the_report_says_which_results_ran_under_an_earlier_plan_and_what_they_cost(tmp_path):
    import shutil

    for name in ("coverage", "tokenizer"):
        shutil.copytree(Path(__file__).resolve().parents[2] / "results" / name, tmp_path / name)
    record = json.loads((tmp_path / "tokenizer" / "results.json").read_text())
    current = plans.plan_hash(load("tokenizer"), record["scale"])
    (tmp_path / "tokenizer" / "results.json").write_text(json.dumps({**record, "plan_hash": "0" * 16}))
    report = write_report(tmp_path).read_text()
    assert report.count("**Under an earlier plan.**") == 1 and f"(`{current}`, `reproduce/plans/tokenizer" in report
    rows = {line.split(" | ")[0].strip("| "): line for line in report.splitlines() if line.startswith("| ")}
    assert rows["coverage"].endswith("| yes |") and rows["tokenizer"].endswith("| no: rerun pending |")
    hours = record["wall_seconds"] * record["torch_threads"] / 3600
    assert f"| {hours:.2f} |" in rows["tokenizer"] and rows["architecture"].endswith("| not run | – |")


def test_the_smoke_summary_marks_committed_verdicts_that_ran_under_an_earlier_plan(tmp_path):
    """A newcomer's first run prints the committed verdicts beside its own: one from a plan since replaced must
    say so, or it reads as the current finding."""
    committed = tmp_path / "committed"
    for name in ("coverage", "tokenizer"):
        shutil.copytree(Path(__file__).resolve().parents[2] / "results" / name, committed / name)
    record = json.loads((committed / "tokenizer" / "results.json").read_text())
    (committed / "tokenizer" / "results.json").write_text(json.dumps({**record, "plan_hash": "0" * 16}))
    run(toy(), Options(out=tmp_path / "smoke"))
    lines = {line.split()[0]: line for line in summary(tmp_path / "smoke", committed).splitlines() if line.strip()}
    assert lines["tokenizer"].endswith("(an earlier plan's; its rerun is pending)")
    assert "earlier plan" not in lines["coverage"] and lines["coverage"].endswith("reproduced")
