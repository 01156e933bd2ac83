"""The reproduce harness: verdicts follow the stated rule, and the report has a section per experiment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reproduce.report import TITLES, write_report
from reproduce.verdict import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, judge, judge_results

ORDER = ["taylor", "l2", "base"]


def ordering(arms, expected=ORDER, higher=True):
    return {"claim": "c", "tag": "P", "kind": "ordering", "arms": arms, "expected": expected,
            "higher_is_better": higher}


def test_the_papers_ordering_beyond_the_seed_spread_is_reproduced():
    arms = {"taylor": [48.0, 48.2, 47.9], "l2": [47.0, 46.9, 47.1], "base": [42.0, 42.3, 41.9]}
    assert judge(ordering(arms), "small").verdict == REPRODUCED


def test_a_reversal_beyond_the_spread_is_not_reproduced():
    arms = {"taylor": [46.0, 46.1, 45.9], "l2": [47.0, 46.9, 47.1], "base": [42.0, 42.3, 41.9]}
    verdict = judge(ordering(arms), "small")
    assert verdict.verdict == NOT_REPRODUCED and "l2 beats taylor" in verdict.why


def test_gaps_inside_the_spread_are_inconclusive():
    arms = {"taylor": [48.0, 46.0, 47.5], "l2": [47.0, 47.5, 46.8], "base": [42.0, 42.3, 41.9]}
    assert judge(ordering(arms), "small").verdict == INCONCLUSIVE


def test_lower_is_better_metrics_flip_the_direction():
    bpb = {"taylor": [1.10, 1.11, 1.09], "l2": [1.20, 1.21, 1.19], "base": [1.50, 1.52, 1.49]}
    assert judge(ordering(bpb, higher=False), "small").verdict == REPRODUCED
    assert judge(ordering(bpb, higher=True), "small").verdict == NOT_REPRODUCED


def test_one_seed_and_smoke_scale_decide_nothing():
    arms = {"taylor": [48.0], "l2": [47.0], "base": [42.0]}
    assert judge(ordering(arms), "small").verdict == INCONCLUSIVE
    strong = {"taylor": [48.0, 48.1], "l2": [47.0, 47.1], "base": [42.0, 42.1]}
    assert judge(ordering(strong), "smoke").verdict == INCONCLUSIVE


def test_missing_arm_is_inconclusive():
    assert judge(ordering({"taylor": [1.0, 1.0]}), "small").verdict == INCONCLUSIVE


@pytest.mark.parametrize("y, sign, expected", [
    ([1, 2, 3, 5, 4, 6, 7, 8], 1, REPRODUCED),  # rho 0.98, exact p < 0.05, the paper's sign
    ([8, 7, 6, 4, 5, 3, 2, 1], 1, NOT_REPRODUCED),  # the same strength, the other sign
    ([8, 7, 6, 4, 5, 3, 2, 1], -1, REPRODUCED),
    ([3, 1, 4, 8, 5, 2, 6, 7], 1, INCONCLUSIVE),  # weak: p > 0.05
])
def test_correlations_are_judged_from_the_data(y, sign, expected):
    finding = {"claim": "depth", "kind": "correlation", "x": [1, 2, 3, 4, 5, 6, 7, 8], "y": y, "expected_sign": sign}
    assert judge(finding, "small").verdict == expected


def test_a_perfect_order_of_four_points_is_not_significant():
    """Exact p for 4 points is at least 1/12: the speed table's four variants alone can never decide a correlation."""
    finding = {"claim": "speed", "kind": "correlation", "x": [2, 4, 8, 16], "y": [40, 30, 20, 10], "expected_sign": -1}
    verdict = judge(finding, "small")
    assert verdict.verdict == INCONCLUSIVE and "p = 0.0833" in verdict.why
    assert judge({**finding, "y": [1, 1, 1, 1]}, "small").verdict == INCONCLUSIVE


def test_thresholds():
    finding = {"claim": "coverage", "kind": "threshold", "value": 0.9971, "at_least": 0.9786}
    assert judge(finding, "small").verdict == REPRODUCED
    assert judge({**finding, "value": 0.93}, "small").verdict == NOT_REPRODUCED


def test_report_from_a_hand_made_results_file(tmp_path):
    (tmp_path / "inheritance").mkdir()
    record = {"experiment": "inheritance", "scale": "small", "seeds": 3, "wall_seconds": 12.0, "hardware": "CPU",
              "table": "| ours | paper |", "figures": ["inheritance/curves.png"],
              "findings": [ordering({"taylor": [48.0, 48.2, 47.9], "l2": [47.0, 46.9, 47.1],
                                     "base": [42.0, 42.3, 41.9]})]}
    (tmp_path / "inheritance" / "results.json").write_text(json.dumps(record))
    assert [v.verdict for v in judge_results(record)] == [REPRODUCED]
    report = write_report(tmp_path).read_text()
    for name in TITLES:
        assert f"## {name}:" in report
    assert report.count("## ") == 12
    assert "**reproduced**" in report and "Not run yet: `python -m reproduce ladder" in report
    assert "![inheritance: curves](inheritance/curves.png)" in report


def test_reproduce_all_at_smoke_scale_writes_the_full_report(tmp_path):
    """The README's main job, end to end on the built-in data (about 10 minutes on 2 cores)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONWARNINGS="ignore")
    result = subprocess.run([sys.executable, "-m", "reproduce", "all", "--scale", "smoke", "--out", str(tmp_path)],
                            cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True,
                            timeout=40 * 60)
    assert result.returncode == 0, result.stderr[-4000:]
    report = (tmp_path / "REPORT.md").read_text()
    assert report.count("\n## ") == 12 and "| not run |" not in report
    assert not list(tmp_path.glob("*/runs")), "training runs belong in temp dirs, not beside the results"
    for name in TITLES:
        record = json.loads((tmp_path / name / "results.json").read_text())
        assert record["scale"] == "smoke" and record["table"], name
        assert all(v.verdict == INCONCLUSIVE for v in judge_results(record)), name  # smoke never decides


@pytest.mark.parametrize("scale", ["smoke", "small", "paper"])
def test_every_architecture_scale_has_its_shapes(scale):
    """The sampled shapes and the speed table's depth grid exist inside each scale's budget (no training)."""
    from reproduce.architecture import SCALES
    from tinylm.architecture import grid, sample

    setting = SCALES[scale]
    assert len(sample(setting.space, setting.configs)) == setting.configs
    assert [c.num_layers for c in grid(setting.space, setting.speed_depths, [setting.speed_expansion])] == \
        list(setting.speed_depths)


def test_results_files_write_the_home_folder_as_a_tilde(tmp_path):
    from reproduce.common import write_results

    model = str(Path.home() / ".cache" / "tinylm" / "ladder" / "seed0")
    folder = write_results(tmp_path, "ladder", {"table": f"source {model}", "rows": [{"model_dirs": [model]}]},
                           "small", 2, 1.0)
    record = json.loads((folder / "results.json").read_text())
    assert record["rows"][0]["model_dirs"] == ["~/.cache/tinylm/ladder/seed0"]
    assert str(Path.home()) + "/" not in (folder / "table.md").read_text()


@pytest.mark.parametrize("scale", ["smoke", "small", "paper"])
def test_every_ladder_scale_is_a_fair_ladder(scale):
    """+arch spends about what the compact vocabulary freed (same total as base, within 5%, at the inherited
    tokenizer's size), is deeper than base, and fits inside the source model it inherits from (no training)."""
    from reproduce.ladder import PAPER_FRACTION, SCALES
    from tinylm.model import ModelConfig

    setting = SCALES[scale]
    big = setting.big_vocab or 32_000
    compact = round(big * PAPER_FRACTION)
    base, deep, source = (ModelConfig(**getattr(setting, part)) for part in ("base", "deep", "source"))
    if scale == "small":  # the smoke ladder only proves the pipeline; the paper's shapes are the paper's
        assert deep.with_vocab(compact).num_params() == pytest.approx(base.with_vocab(big).num_params(), rel=0.05)
    assert deep.num_layers > base.num_layers
    assert source.num_layers > deep.num_layers and source.hidden_size >= deep.hidden_size
    assert source.num_heads >= deep.num_heads and source.intermediate_size >= deep.intermediate_size
    assert source.head_dim == deep.head_dim  # width pruning removes whole heads


def test_ladder_judges_every_step_and_the_whole_recipe():
    from reproduce.ladder import STEPS, findings

    rows = [{"step": step, "bpb_seeds": [3.0 - 0.1 * i, 3.01 - 0.1 * i]} for i, step in enumerate(STEPS)]
    judged = [judge(f, "small") for f in findings(rows)]
    assert len(judged) == len(STEPS) and all(v.verdict == REPRODUCED for v in judged)
    rows[1]["bpb_seeds"] = [3.5, 3.51]  # +tokenizer worse than base (and so +arch "improves" on it)
    verdicts = [judge(f, "small").verdict for f in findings(rows)]
    assert verdicts == [NOT_REPRODUCED, REPRODUCED, REPRODUCED, REPRODUCED, REPRODUCED]


def test_smoke_runs_stay_out_of_the_committed_results(tmp_path, monkeypatch):
    """Without --out, smoke writes under runs/smoke (git-ignored); small and paper write results/."""
    from reproduce.__main__ import main
    from reproduce.common import default_out

    assert default_out("smoke") == Path("runs/smoke") and default_out("small") == default_out("paper") == Path("results")
    monkeypatch.chdir(tmp_path)
    assert main(["report"]) == 2 and not (tmp_path / "results").exists()  # nothing to report on
    (tmp_path / "results" / "inheritance").mkdir(parents=True)
    record = {"experiment": "inheritance", "scale": "small", "seeds": 2, "wall_seconds": 1.0, "hardware": "CPU",
              "table": "| ours |", "findings": []}
    (tmp_path / "results" / "inheritance" / "results.json").write_text(json.dumps(record))
    assert main(["report"]) == 0 and (tmp_path / "results" / "REPORT.md").is_file()
    assert not (tmp_path / "runs").exists()
