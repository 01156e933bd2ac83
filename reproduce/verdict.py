"""Verdicts from numbers: reproduced / not reproduced / inconclusive, by one stated rule.

An experiment's ``results.json`` lists its ``findings``; each is one of

* an **ordering** — ``{"claim", "tag", "kind": "ordering", "arms": {name: [score per seed]}, "expected": [best, ...,
  worst], "higher_is_better": bool}``: the paper says the arms rank in this order;
* a **correlation** — ``{"claim", "tag", "kind": "correlation", "x": [...], "y": [...], "expected_sign": +1 | -1}``:
  the paper says y rises (+1) or falls (−1) with x; Spearman's rho and its p-value (exact permutation p for small
  samples, ``tinylm.architecture.spearman``) are computed here from the data;
* a **threshold** on a deterministic measurement (no seed noise) — ``{"claim", "tag", "kind": "threshold", "value",
  "at_least"}``.

The rule (printed in the report):

* smoke scale never decides anything (it proves the pipeline): inconclusive.
* ordering: for each neighbouring pair the paper ranks (a above b), the gap between their seed means, signed so that
  positive agrees with the paper, is compared with the seed spread (the larger of the two sample standard deviations).
  Every gap > spread → **reproduced**; any gap < −spread → **not reproduced**; otherwise **inconclusive**. One seed
  has no spread to judge against: inconclusive.
* correlation: p < 0.05 with the paper's sign → **reproduced**; p < 0.05 with the other sign → **not reproduced**;
  else (a sample too small to reach p < 0.05 included) **inconclusive**.
* threshold: value ≥ the paper's → **reproduced**, else **not reproduced**.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from tinylm.architecture import EXACT_UP_TO, spearman

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
SIGNIFICANCE = 0.05

RULE = (
    "Smoke scale is always inconclusive. Orderings: each neighbouring pair the paper ranks must differ, in the "
    "paper's direction, by more than the seed spread (larger sample standard deviation of the two) — all pairs: "
    "reproduced; any pair reversed beyond the spread: not reproduced; else (or with one seed) inconclusive. "
    f"Correlations (Spearman; exact permutation p-value up to {EXACT_UP_TO} points): p < {SIGNIFICANCE} with the "
    f"paper's sign: reproduced; p < {SIGNIFICANCE} with the opposite sign: not reproduced; else inconclusive. "
    "Thresholds on deterministic measurements: at least the paper's value: reproduced, else not reproduced."
)


@dataclass(frozen=True)
class Verdict:
    claim: str
    verdict: str
    why: str
    tag: str = "?"


def _spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def judge_ordering(arms: dict[str, list[float]], expected: list[str], higher_is_better: bool) -> tuple[str, str]:
    missing = [name for name in expected if not arms.get(name)]
    if missing:
        return INCONCLUSIVE, f"no measurements for {', '.join(missing)}"
    seeds = min(len(arms[name]) for name in expected)
    sign = 1.0 if higher_is_better else -1.0
    agree, reversed_pairs, notes = 0, [], []
    for better, worse in zip(expected, expected[1:]):
        gap = sign * (statistics.fmean(arms[better]) - statistics.fmean(arms[worse]))
        spread = max(_spread(arms[better]), _spread(arms[worse]))
        notes.append(f"{better} vs {worse}: gap {gap:+.4f}, spread {spread:.4f}")
        if seeds > 1 and gap > spread:
            agree += 1
        elif seeds > 1 and gap < -spread:
            reversed_pairs.append(f"{worse} beats {better}")
    why = "; ".join(notes)
    if seeds < 2:
        return INCONCLUSIVE, f"one seed, no spread to judge against ({why})"
    if reversed_pairs:
        return NOT_REPRODUCED, f"{', '.join(reversed_pairs)} beyond the seed spread ({why})"
    if agree == len(expected) - 1:
        return REPRODUCED, why
    return INCONCLUSIVE, f"some gaps are within the seed spread ({why})"


def judge_correlation(x: list[float], y: list[float], expected_sign: int) -> tuple[str, str]:
    rho, p = spearman(x, y)
    if math.isnan(rho):
        return INCONCLUSIVE, f"no correlation computable from {len(x)} point(s) (too few, or a constant input)"
    why = f"ρ = {rho:+.3f}, p = {p:.3g} (n = {len(x)})"
    if p < SIGNIFICANCE and rho * expected_sign > 0:
        return REPRODUCED, why
    if p < SIGNIFICANCE and rho * expected_sign < 0:
        return NOT_REPRODUCED, why
    return INCONCLUSIVE, why


def judge(finding: dict[str, Any], scale: str) -> Verdict:
    """The verdict on one finding of a results file at ``scale``."""
    claim, tag = finding["claim"], finding.get("tag", "?")
    if finding["kind"] == "ordering":
        verdict, why = judge_ordering(finding["arms"], finding["expected"], finding["higher_is_better"])
    elif finding["kind"] == "correlation":
        verdict, why = judge_correlation(finding["x"], finding["y"], finding["expected_sign"])
    elif finding["kind"] == "threshold":
        holds = finding["value"] >= finding["at_least"]
        verdict = REPRODUCED if holds else NOT_REPRODUCED
        why = f"{finding['value']:.4g} {'≥' if holds else '<'} {finding['at_least']:.4g}"
    else:
        raise ValueError(f"unknown finding kind {finding['kind']!r}")
    if scale == "smoke":
        return Verdict(claim, INCONCLUSIVE, f"smoke scale proves the pipeline, not the finding ({why})", tag)
    return Verdict(claim, verdict, why, tag)


def judge_results(results: dict[str, Any]) -> list[Verdict]:
    return [judge(finding, results.get("scale", "smoke")) for finding in results.get("findings", [])]
