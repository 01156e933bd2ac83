"""The one judge: every finding of every experiment gets its verdict here, and nowhere else.

A finding is declared in its experiment module before anything runs (``Finding``); the experiment measures and
``judge`` rules as ``RULE`` says: paired per-seed differences (95% t interval, two-sided one-sample t-test,
``scipy.stats``), Spearman's rho for correlations (``tinylm.architecture.spearman``), thresholds for deterministic
measurements. Smoke scale and fewer than ``MIN_SEEDS`` seeds are inconclusive; exploratory readings are reported
with their numbers and never judged.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from scipy import stats

from tinylm.architecture import spearman

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, EXPLORATORY = "reproduced", "not reproduced", "inconclusive", "exploratory"
ALPHA = 0.05
MIN_SEEDS = 3
KINDS = ("paired", "correlation", "threshold")

RULE = (
    f"Arms are compared by paired per-seed differences (mean, 95% t interval, two-sided t-test): p < {ALPHA} in the "
    f"paper's direction is reproduced, p < {ALPHA} against it is not reproduced, anything else — or fewer than "
    f"{MIN_SEEDS} seeds, or smoke scale — is inconclusive. Orderings of more than two arms need every neighbouring "
    f"pair reproduced and are not reproduced when any pair is reversed at p < {ALPHA} / pairs; correlations use "
    f"Spearman's p (exact permutation for small samples) with the same rule (over the points of one deterministic "
    "measurement, no seeds are needed); deterministic measurements are "
    "thresholds (at least the paper's value); exploratory readings, chosen after a run, are never judged."
)


@dataclass(frozen=True)
class Finding:
    """A claim of the paper, declared before any run.

    ``arms``: for ``paired``, the arms in the paper's order, best first; for ``correlation``, the names of x and y.
    ``lower_is_better``: the metric's direction (paired); ``sign``: the paper's sign of rho (correlation);
    ``at_least``: the paper's value (threshold). ``tag``: the paper's reliability tag (PAPER.md: P, R, D, ?), or X
    for a claim of other published work named in ``claim``. ``note``: anything a reader must know about the test itself.
    """

    key: str
    claim: str
    tag: str
    metric: str
    arms: tuple[str, ...] = ()
    kind: str = "paired"
    lower_is_better: bool = True
    sign: int = 1
    at_least: float | None = None
    exploratory: bool = False
    note: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"finding {self.key}: kind {self.kind!r} is not one of {KINDS}")
        if self.kind == "paired" and len(self.arms) < 2:
            raise ValueError(f"finding {self.key}: a paired finding compares at least two arms")
        if self.kind == "threshold" and self.at_least is None:
            raise ValueError(f"finding {self.key}: a threshold needs at_least")


@dataclass(frozen=True)
class Verdict:
    verdict: str
    why: str
    n: int = 0
    pairs: list[dict[str, Any]] = field(default_factory=list)  # paired: mean, interval and p of each pair


def paired(better: Sequence[float], worse: Sequence[float], lower_is_better: bool) -> dict[str, Any]:
    """Per-seed differences, signed so that positive agrees with ``better`` being better: mean, 95% t interval,
    two-sided p-value of the one-sample t-test against zero."""
    if len(better) != len(worse):
        raise ValueError(f"paired arms need one value per seed each ({len(better)} vs {len(worse)})")
    diffs = [(w - b) if lower_is_better else (b - w) for b, w in zip(better, worse)]
    n, mean = len(diffs), statistics.fmean(diffs)
    if n < 2:
        return {"n": n, "mean": mean, "low": math.nan, "high": math.nan, "p": math.nan}
    sd = statistics.stdev(diffs)
    if sd == 0:  # identical differences: no spread to test against (a constant shift is certain, zero is nothing)
        p = 1.0 if mean == 0 else 0.0
        return {"n": n, "mean": mean, "low": mean, "high": mean, "p": p}
    half = stats.t.ppf(1 - ALPHA / 2, n - 1) * sd / math.sqrt(n)
    p = float(stats.ttest_1samp(diffs, 0.0).pvalue)
    return {"n": n, "mean": mean, "low": mean - half, "high": mean + half, "p": p}


def _judge_paired(finding: Finding, arms: dict[str, Sequence[float]]) -> Verdict:
    if missing := [a for a in finding.arms if not arms.get(a)]:
        return Verdict(INCONCLUSIVE, f"no measurements for {', '.join(missing)}")
    n = min(len(arms[a]) for a in finding.arms)
    results = [{"better": better, "worse": worse, **paired(arms[better][:n], arms[worse][:n], finding.lower_is_better)}
               for better, worse in zip(finding.arms, finding.arms[1:])]
    why = "; ".join(f"{r['better']} vs {r['worse']}: Δ {r['mean']:+.4g} [{r['low']:+.4g}, {r['high']:+.4g}], "
                    f"p = {r['p']:.3g}" for r in results) + f" (n = {n}, + favours the paper)"
    if n < MIN_SEEDS:
        return Verdict(INCONCLUSIVE, f"{n} seed(s), at least {MIN_SEEDS} are needed to judge ({why})", n, results)
    agree = [r for r in results if r["p"] < ALPHA and r["mean"] > 0]
    reversed_at = ALPHA / len(results) if len(results) > 1 else ALPHA
    if any(r["p"] < reversed_at and r["mean"] < 0 for r in results):
        return Verdict(NOT_REPRODUCED, why, n, results)
    return Verdict(REPRODUCED if len(agree) == len(results) else INCONCLUSIVE, why, n, results)


def _judge_correlation(finding: Finding, data: dict[str, Sequence[float]], seeds: int,
                       deterministic: bool = False) -> Verdict:
    x, y = data["x"], data["y"]
    rho, p = spearman(x, y)
    if math.isnan(rho):
        return Verdict(INCONCLUSIVE, f"no correlation computable from {len(x)} point(s) (too few, or constant)",
                       len(x))
    why = f"ρ = {rho:+.3f}, p = {p:.3g} over {len(x)} points, paper's sign {finding.sign:+d}"
    if seeds < MIN_SEEDS and not deterministic:  # deterministic points: no seed could change them
        return Verdict(INCONCLUSIVE, f"{seeds} seed(s), at least {MIN_SEEDS} are needed to judge ({why})", len(x))
    if p < ALPHA:
        return Verdict(REPRODUCED if rho * finding.sign > 0 else NOT_REPRODUCED, why, len(x))
    return Verdict(INCONCLUSIVE, why, len(x))


def judge(finding: Finding, data: Any, scale: str, seeds: int, deterministic: bool = False) -> Verdict:
    """The verdict on one declared finding, from what the experiment measured for it."""
    if finding.kind == "paired":
        verdict = _judge_paired(finding, data)
    elif finding.kind == "correlation":
        verdict = _judge_correlation(finding, data, seeds, deterministic)
    else:
        holds = data["value"] >= finding.at_least
        verdict = Verdict(REPRODUCED if holds else NOT_REPRODUCED,
                          f"deterministic: {data['value']:.4g} {'≥' if holds else '<'} {finding.at_least:.4g}")
    if finding.exploratory:
        return Verdict(EXPLORATORY, f"exploratory, not judged ({verdict.why})", verdict.n, verdict.pairs)
    if scale == "smoke":
        return Verdict(INCONCLUSIVE, f"smoke scale proves the pipeline, not the finding ({verdict.why})", verdict.n,
                       verdict.pairs)
    return verdict


def judged(findings: Sequence[Finding], measured: dict[str, Any], scale: str, seeds: int,
           deterministic: bool = False) -> list[dict[str, Any]]:
    """Every declared finding with its measurements and verdict, in declaration order. The measured keys must be
    exactly the declared ones: nothing is judged that was not declared, nothing declared goes unreported."""
    declared = [f.key for f in findings]
    if len(set(declared)) != len(declared):
        raise ValueError(f"findings declared twice: {declared}")
    if set(measured) != set(declared):
        raise ValueError(f"measured findings {sorted(measured)} differ from the declared ones {sorted(declared)}")
    return [{**asdict(finding), "data": measured[finding.key],
             **asdict(judge(finding, measured[finding.key], scale, seeds, deterministic))} for finding in findings]
