"""The one judge on synthetic data: a real effect is reproduced, pure noise is inconclusive at the stated rate, a
reversed effect is not reproduced; and every experiment declares its findings before it runs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from reproduce.report import EXPERIMENTS, load
from reproduce.verdict import (ALPHA, EXPLORATORY, INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, Finding, judge, judged,
                               paired)

PAIR = Finding("f", "a beats b", "P", "bpb", ("a", "b"))  # lower is better


def arms(rng, effect: float, seeds: int = 5, noise: float = 0.02) -> dict[str, list[float]]:
    """Per-seed scores sharing a seed effect (paired), ``a`` lower than ``b`` by ``effect`` on average."""
    shared = rng.normal(3.0, 0.1, seeds)
    return {"a": list(shared - effect + rng.normal(0, noise, seeds)), "b": list(shared + rng.normal(0, noise, seeds))}


def test_a_real_effect_at_five_seeds_is_reproduced():
    rng = np.random.default_rng(0)
    verdicts = [judge(PAIR, arms(rng, effect=0.1), "small", 5).verdict for _ in range(200)]
    assert verdicts.count(REPRODUCED) == 200


def test_pure_noise_is_inconclusive_at_the_stated_rate():
    rng = np.random.default_rng(1)
    draws = 4000
    verdicts = [judge(PAIR, arms(rng, effect=0.0), "small", 5).verdict for _ in range(draws)]
    inconclusive = verdicts.count(INCONCLUSIVE) / draws
    assert abs(inconclusive - (1 - ALPHA)) < 0.015  # two-sided: 2.5% each way
    assert abs(verdicts.count(REPRODUCED) / draws - ALPHA / 2) < 0.01


def test_a_reversed_effect_is_not_reproduced():
    rng = np.random.default_rng(2)
    verdicts = [judge(PAIR, arms(rng, effect=-0.1), "small", 5).verdict for _ in range(200)]
    assert verdicts.count(NOT_REPRODUCED) == 200


def test_interval_and_p_value_are_the_paired_t_test():
    rng = np.random.default_rng(3)
    data = arms(rng, effect=0.03)
    result = paired(data["a"], data["b"], lower_is_better=True)
    diffs = np.array(data["b"]) - np.array(data["a"])
    assert result["p"] == pytest.approx(stats.ttest_rel(data["b"], data["a"]).pvalue)
    low, high = stats.t.interval(0.95, len(diffs) - 1, loc=diffs.mean(), scale=stats.sem(diffs))
    assert (result["low"], result["high"]) == (pytest.approx(low), pytest.approx(high))
    assert (result["p"] < ALPHA) == (result["low"] > 0 or result["high"] < 0)  # the interval and the test agree


def test_too_few_seeds_smoke_and_exploratory_decide_nothing():
    strong = {"a": [1.0, 1.1], "b": [2.0, 2.1]}
    assert judge(PAIR, strong, "small", 2).verdict == INCONCLUSIVE
    strong3 = {"a": [1.0, 1.1, 1.05], "b": [2.0, 2.1, 2.02]}
    assert judge(PAIR, strong3, "small", 3).verdict == REPRODUCED
    assert judge(PAIR, strong3, "smoke", 3).verdict == INCONCLUSIVE
    exploratory = Finding("e", "c", "P", "bpb", ("a", "b"), exploratory=True)
    assert judge(exploratory, strong3, "small", 3).verdict == EXPLORATORY
    assert judge(PAIR, {"a": [1.0, 1.0, 1.0]}, "small", 3).verdict == INCONCLUSIVE  # an arm not measured


def test_orderings_need_every_pair_and_correct_reversals_for_the_number_of_pairs():
    chain = Finding("c", "a > b > c", "P", "bpb", ("a", "b", "c"))
    rng = np.random.default_rng(4)
    base = rng.normal(3.0, 0.1, 5)
    good = {"a": list(base), "b": list(base + 0.1 + rng.normal(0, 0.01, 5)), "c": list(base + 0.2)}
    assert judge(chain, good, "small", 5).verdict == REPRODUCED
    flat = {**good, "c": list(np.array(good["b"]) + rng.normal(0, 0.01, 5))}
    assert judge(chain, flat, "small", 5).verdict in (INCONCLUSIVE, NOT_REPRODUCED)
    assert judge(chain, {**good, "c": list(base + 0.05)}, "small", 5).verdict == NOT_REPRODUCED


def test_correlations_and_thresholds():
    depth = Finding("d", "deeper is better", "?", "bpb", ("depth", "bpb"), kind="correlation", sign=-1)
    x = [1, 2, 3, 4, 5, 6, 7, 8]
    assert judge(depth, {"x": x, "y": [8, 7, 6, 4, 5, 3, 2, 1]}, "small", 3).verdict == REPRODUCED
    assert judge(depth, {"x": x, "y": [1, 2, 3, 5, 4, 6, 7, 8]}, "small", 3).verdict == NOT_REPRODUCED
    assert judge(depth, {"x": x, "y": [3, 1, 4, 8, 5, 2, 6, 7]}, "small", 3).verdict == INCONCLUSIVE
    assert judge(depth, {"x": x, "y": [8, 7, 6, 4, 5, 3, 2, 1]}, "small", 2).verdict == INCONCLUSIVE
    assert judge(depth, {"x": [2, 4, 8, 16], "y": [4, 3, 2, 1]}, "small", 3).verdict == INCONCLUSIVE  # p = 1/12
    # the points of one deterministic measurement (one model, one fixed sample) need no seeds; smoke decides nothing
    assert judge(depth, {"x": x, "y": [8, 7, 6, 4, 5, 3, 2, 1]}, "small", 1, deterministic=True).verdict == REPRODUCED
    assert judge(depth, {"x": x, "y": [8, 7, 6, 4, 5, 3, 2, 1]}, "smoke", 1, deterministic=True).verdict == INCONCLUSIVE
    share = Finding("s", "coverage", "P", "share", kind="threshold", at_least=0.9786)
    verdict = judge(share, {"value": 0.99}, "small", 1)
    assert verdict.verdict == REPRODUCED and "deterministic" in verdict.why
    assert judge(share, {"value": 0.93}, "small", 1).verdict == NOT_REPRODUCED


def test_only_declared_findings_are_judged():
    findings = (PAIR, Finding("g", "c", "P", "bpb", ("a", "b")))
    data = {"a": [1.0, 1.1, 1.2], "b": [2.0, 2.1, 2.3]}
    assert [f["key"] for f in judged(findings, {"f": data, "g": data}, "small", 3)] == ["f", "g"]
    with pytest.raises(ValueError, match="differ from the declared"):
        judged(findings, {"f": data}, "small", 3)
    with pytest.raises(ValueError, match="differ from the declared"):
        judged(findings, {"f": data, "g": data, "h": data}, "small", 3)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_declares_its_findings_before_running(name):
    """Findings are module-level data, complete before any measure runs; keys unique; arms named."""
    experiment = load(name)
    assert experiment.name == name and experiment.findings
    keys = [f.key for f in experiment.findings]
    assert len(set(keys)) == len(keys)
    assert set(experiment.scales) >= {"smoke", "small", "paper"}
    for finding in experiment.findings:
        assert finding.claim and finding.tag in {"P", "R", "D", "?", "X"} and finding.metric
    if not experiment.deterministic:
        assert experiment.seeds["small"] >= 3
