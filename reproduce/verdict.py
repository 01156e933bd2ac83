"""The one judge: every finding of every experiment gets its verdict here, and nowhere else.

A finding is declared in its experiment module before anything runs (``Finding``); the experiment measures and
``judge`` rules as ``RULE`` says: paired per-seed differences (95% t interval, two-sided one-sample t-test, from
``tinylm.evaluation.stats``, which ``tinylm pro``'s report shares) with the minimal detectable effect at the run's
n, two one-sided tests (TOST) against a declared margin for claims of no difference, Spearman's rho for
correlations (``reproduce.shapes.spearman``), thresholds for deterministic measurements. ``across`` then judges
the whole report at once: Holm–Bonferroni over every counted test, each comparison counted once. Smoke scale and
fewer than ``MIN_SEEDS`` seeds are inconclusive; exploratory readings are reported with their numbers and never
judged.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
from scipy import stats

from reproduce.shapes import spearman
from tinylm.evaluation.stats import ALPHA, POWER, ROUNDING, mde, no_spread, paired_t, t_quantile

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, EXPLORATORY = "reproduced", "not reproduced", "inconclusive", "exploratory"
UNDERPOWERED = "underpowered"  # not significant, and the run could not have seen the effect that matters
SAME_AS = "same as"  # a finding that reuses another's runs: judged (and Holm-counted) there, once
MIN_SEEDS = 3
MAX_SEEDS = 100_000  # seeds_needed gives up beyond this
KINDS = ("paired", "equivalence", "correlation", "threshold")
# The smallest held-out bits-per-byte difference that matters, declared before the plan-v2 reruns: 0.02 bpb is
# ~0.7% of the ~2.8 bpb our small models reach; a smaller gap does not reorder models on any benchmark we score.
# Findings on bpb use it as their smallest effect (paired) or margin (equivalence).
SMALLEST_BPB = 0.02
SEED_FREE = ("the differences do not vary with the seed (the arms did not depend on it), so seeds give no "
             "evidence: p = nan; a seed-free measurement needs a bootstrap over held-out items (verdict.bootstrap)")

RULE = (
    f"Arms are compared by paired per-seed differences (mean, 95% t interval, two-sided t-test): p < {ALPHA} in the "
    f"paper's direction is reproduced, p < {ALPHA} against it is not reproduced. Orderings of more than two arms need "
    f"every neighbouring pair reproduced and are not reproduced when any pair is reversed at p < {ALPHA} / pairs. "
    "Every paired test reports its minimal detectable effect at the run's n from the measured spread "
    f"((t(1 − α/2, n − 1) + t({POWER}, n − 1)) · sd / √n, two-sided α = {ALPHA}, power {POWER}); when a test is not "
    "significant and that exceeds the finding's declared smallest effect that matters, the verdict is underpowered, "
    "never not reproduced, with the seeds that effect would need. Differences that do not vary with the seed (by "
    f"more than float rounding, {ROUNDING:g} of the values' size) give no evidence from seeds (p = nan, "
    "inconclusive). Claims of no difference are equivalence tests against a declared "
    f"margin (two one-sided t-tests): reproduced when the 90% interval lies inside ± margin (p < {ALPHA}), not "
    "reproduced when the 95% interval lies wholly outside it, underpowered when the run could not show equivalence "
    "even for a true difference of zero, otherwise inconclusive. Correlations use Spearman's p (exact permutation "
    f"for small samples) with the same rule (over the points of one deterministic measurement, no seeds are "
    "needed); seed-free measurements are thresholds (at least the paper's value), decided by their 95% bootstrap "
    "interval over held-out documents, benchmark items or timed rounds where they have one. Over the whole report, "
    "every counted p-value is Holm–Bonferroni adjusted (each comparison of the same numbers counted once) and the verdicts "
    "are decided again with the adjusted p, which can only turn a verdict inconclusive or underpowered. A finding "
    "that reuses another finding's runs refers to that verdict instead of being judged again. Fewer than "
    f"{MIN_SEEDS} seeds or smoke scale are inconclusive; exploratory readings, chosen after a run, are never judged."
)


@dataclass(frozen=True)
class Finding:
    """A claim of the paper, declared before any run.

    ``arms``: for ``paired``, the arms in the paper's order, best first; for ``equivalence``, the two arms claimed
    to differ by less than ``margin`` (metric units); for ``correlation``, the names of x and y.
    ``lower_is_better``: the metric's direction (paired); ``sign``: the paper's sign of rho (correlation);
    ``at_least``: the paper's value (threshold). ``smallest_effect``: the smallest difference that matters (or the
    paper's effect) in metric units, so that a run too small to see it is called underpowered, not refuted.
    ``same_as``: ``"<experiment>/<finding key>"`` when this finding compares the very runs of another one; the
    report refers to that verdict. ``tag``: the paper's reliability tag (docs/paper.md: P, R, D, ?), or X for a claim
    of other published work named in ``claim``. ``note``: anything a reader must know about the test itself.
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
    margin: float | None = None
    smallest_effect: float | None = None
    same_as: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"finding {self.key}: kind {self.kind!r} is not one of {KINDS}")
        if self.kind == "paired" and len(self.arms) < 2:
            raise ValueError(f"finding {self.key}: a paired finding compares at least two arms")
        if self.kind == "equivalence" and (len(self.arms) != 2 or not (self.margin or 0) > 0):
            raise ValueError(f"finding {self.key}: an equivalence compares two arms within a declared margin > 0")
        if self.kind == "threshold" and self.at_least is None:
            raise ValueError(f"finding {self.key}: a threshold needs at_least")
        if self.smallest_effect is not None and not self.smallest_effect > 0:
            raise ValueError(f"finding {self.key}: smallest_effect is a positive difference in metric units")
        if self.same_as and self.same_as.count("/") != 1:
            raise ValueError(f"finding {self.key}: same_as names '<experiment>/<finding key>', not {self.same_as!r}")

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Finding:
        """The finding as a results.json stored it (fields added since then take their defaults)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in record.items() if k in known}
        return cls(**{**values, "arms": tuple(values.get("arms", ()))})


@dataclass(frozen=True)
class Verdict:
    verdict: str
    why: str
    n: int = 0
    pairs: list[dict[str, Any]] = field(default_factory=list)  # one entry per test: its numbers and p
    counted: bool = False  # its p-values decide it, so they enter the report's Holm family


# ---- the statistics ------------------------------------------------------------------------------------------


def equivalence_mde(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest margin TOST shows at ``n`` seeds with probability ``power`` when the true difference is zero."""
    if n < 2:
        return math.inf
    return (t_quantile(1 - alpha, n - 1) + t_quantile(1 - (1 - power) / 2, n - 1)) * sd / math.sqrt(n)


def seeds_needed(sd: float, effect: float, equivalence: bool = False) -> int | None:
    """The fewest seeds whose minimal detectable effect (or provable margin) is at most ``effect``, solved from
    the measured ``sd``; None beyond ``MAX_SEEDS``."""
    detectable = equivalence_mde if equivalence else mde
    if sd == 0:
        return 2
    n = 2
    while detectable(sd, n) > effect:  # t quantiles shrink with n: step up (doubling, then bisect)
        n *= 2
        if n > MAX_SEEDS:
            return None
    low = n // 2
    while low + 1 < n:
        mid = (low + n) // 2
        low, n = (mid, n) if detectable(sd, mid) > effect else (low, mid)
    return n


def _comparison(*columns: Sequence[float], kind: str = "paired") -> str:
    """A short id of the numbers compared: two findings testing the same numbers are one comparison (Holm counts
    it once). Arms are sorted, so a pair read in either order is the same comparison."""
    cols = [[round(float(v), 12) for v in c] for c in columns]
    if kind != "correlation":
        cols = sorted(cols)
    return hashlib.sha256(json.dumps([kind, cols]).encode()).hexdigest()[:12]


def _differences(better: Sequence[float], worse: Sequence[float], lower_is_better: bool) -> list[float]:
    if len(better) != len(worse):
        raise ValueError(f"paired arms need one value per seed each ({len(better)} vs {len(worse)})")
    return [(w - b) if lower_is_better else (b - w) for b, w in zip(better, worse)]


def paired(better: Sequence[float], worse: Sequence[float], lower_is_better: bool) -> dict[str, Any]:
    """Per-seed differences, signed so that positive agrees with ``better`` being better, summarized by
    ``tinylm.evaluation.stats.paired_t``: mean, 95% t interval, two-sided p of the one-sample t-test against zero,
    spread and minimal detectable effect; no spread beyond float rounding of the arms' values gives p = nan and
    ``seed_free`` (no p = 0 shortcut)."""
    return paired_t(_differences(better, worse, lower_is_better), scale=_size(better, worse))


def _size(*arms: Sequence[float]) -> float:
    """The size of the measured values, against which a spread of their differences is told from float rounding."""
    return max(abs(float(v)) for arm in arms for v in arm)


def tost(a: Sequence[float], b: Sequence[float], margin: float) -> dict[str, Any]:
    """Two one-sided t-tests that the mean per-seed difference ``a - b`` lies within ``± margin``.

    ``p_tost`` (the larger one-sided p) < alpha exactly when the 90% interval lies inside the margin;
    ``p_outside`` (twice the smaller one-sided p that it lies beyond one side) < alpha exactly when the 95% interval
    lies wholly outside. ``p`` is the one the estimate points to: ``p_tost`` inside the margin, ``p_outside``
    beyond it (the other is at least 0.5 there), and it is this p that the report Holm-adjusts."""
    diffs = _differences(a, b, lower_is_better=False)
    n, mean = len(diffs), statistics.fmean(diffs)
    result = {"n": n, "mean": mean, "margin": margin, "low": math.nan, "high": math.nan, "low90": math.nan,
              "high90": math.nan, "p_tost": math.nan, "p_outside": math.nan, "p": math.nan, "sd": math.nan,
              "mde": math.inf, "seed_free": False, "inside": abs(mean) <= margin}
    if n < 2:
        return result
    sd = statistics.stdev(diffs)
    if no_spread(sd, _size(a, b)):
        return {**result, "low": mean, "high": mean, "low90": mean, "high90": mean, "sd": sd, "mde": math.nan,
                "seed_free": True}
    se, df = sd / math.sqrt(n), n - 1
    p_tost = max(float(stats.t.sf((mean + margin) / se, df)), float(stats.t.cdf((mean - margin) / se, df)))
    p_outside = min(1.0, 2 * min(float(stats.t.sf((mean - margin) / se, df)),
                                 float(stats.t.cdf((mean + margin) / se, df))))
    half90, half95 = t_quantile(1 - ALPHA, df) * se, t_quantile(1 - ALPHA / 2, df) * se
    return {**result, "low": mean - half95, "high": mean + half95, "low90": mean - half90, "high90": mean + half90,
            "p_tost": p_tost, "p_outside": p_outside, "p": p_tost if result["inside"] else p_outside, "sd": sd,
            "mde": equivalence_mde(sd, n)}


def bootstrap(values_a: Sequence[float], values_b: Sequence[float] | None = None, n_boot: int = 10_000,
              seed: int = 0) -> dict[str, float]:
    """Percentile bootstrap over items (held-out documents, benchmark items) for a seed-free measurement: the
    mean per-item difference ``a - b`` (or of ``values_a`` as differences when ``values_b`` is None), its 95%
    percentile interval and a two-sided bootstrap p, ``(1 + resamples on the far side of 0) / (1 + n_boot)``
    doubled: never 0, since n_boot resamples cannot rule out what they did not draw."""
    a = np.asarray(values_a, dtype=np.float64)
    diffs = a if values_b is None else a - np.asarray(values_b, dtype=np.float64)
    if diffs.ndim != 1 or len(diffs) < 2:
        raise ValueError(f"bootstrap needs one value per item for at least two items (got shape {diffs.shape})")
    rng, n = np.random.default_rng(seed), len(diffs)
    chunk = max(1, 10_000_000 // n)  # bounded memory for many items
    means = np.concatenate([diffs[rng.integers(0, n, (min(chunk, n_boot - start), n))].mean(axis=1)
                            for start in range(0, n_boot, chunk)])
    low, high = np.percentile(means, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    below, above = int((means <= 0).sum()), int((means >= 0).sum())
    p = min(1.0, 2 * (1 + min(below, above)) / (1 + n_boot))
    return {"n": n, "mean": float(diffs.mean()), "low": float(low), "high": float(high), "p": p}


def bootstrap_statistic(items: int, statistic: Callable[[np.ndarray], float], n_boot: int = 2_000,
                        seed: int = 0) -> dict[str, float]:
    """Percentile bootstrap of any ``statistic`` of the items (it gets an array of item indices, drawn with
    replacement): its 95% interval, for seed-free measurements that are not a plain mean (a ratio of sums, a
    minimum over positions)."""
    if items < 2:
        raise ValueError(f"bootstrap needs at least two items (got {items})")
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, items, items)) for _ in range(n_boot)])
    low, high = np.percentile(values, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    return {"n": items, "low": float(low), "high": float(high)}


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni step-down adjusted p-values, in the input order: the i-th smallest of m is multiplied by
    m − i + 1, then made non-decreasing and capped at 1. NaN (no test) stays NaN and is not counted in m."""
    order = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    adjusted, running = [math.nan] * len(pvalues), 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p))
        adjusted[i] = running
    return adjusted


# ---- the verdicts --------------------------------------------------------------------------------------------


def _needs(r: Mapping[str, Any], effect: float, equivalence: bool = False) -> str:
    needed = seeds_needed(r["sd"], effect, equivalence)
    return f"more than {MAX_SEEDS:,} seeds" if needed is None else f"{needed} seeds"


def _decide_paired(finding: Finding, results: Sequence[Mapping[str, Any]], p_key: str = "p") -> tuple[str, str]:
    """The verdict of a paired finding from its pairs' ``p_key`` p-values (raw, or Holm-adjusted), and why."""
    reversed_at = ALPHA / len(results) if len(results) > 1 else ALPHA
    if any(r[p_key] < reversed_at and r["mean"] < 0 for r in results):
        return NOT_REPRODUCED, ""
    if all(r[p_key] < ALPHA and r["mean"] > 0 for r in results):
        return REPRODUCED, ""
    if free := [r for r in results if r["seed_free"]]:
        return INCONCLUSIVE, "; ".join(f"{r['better']} vs {r['worse']}: {SEED_FREE}" for r in free)
    effect = finding.smallest_effect
    weak = [r for r in results if not r[p_key] < ALPHA and effect is not None and r["mde"] > effect]
    if weak:  # not significant, and the run could not have seen the effect that matters: no refutation
        return UNDERPOWERED, "; ".join(
            f"{r['better']} vs {r['worse']}: detectable {r['mde']:.3g} > smallest effect {effect:.3g}, which needs "
            f"{_needs(r, effect)} at sd {r['sd']:.3g}" for r in weak)
    if effect is not None:  # the run could have seen the effect that matters and did not: still no refutation
        return INCONCLUSIVE, f"powered for the smallest effect {effect:.3g}, and none found at p < {ALPHA}"
    return INCONCLUSIVE, ""


def _judge_paired(finding: Finding, arms: Mapping[str, Sequence[float]]) -> Verdict:
    if missing := [a for a in finding.arms if not arms.get(a)]:
        return Verdict(INCONCLUSIVE, f"no measurements for {', '.join(missing)}")
    n = min(len(arms[a]) for a in finding.arms)
    results = [{"better": better, "worse": worse, "comparison": _comparison(arms[better][:n], arms[worse][:n]),
                **paired(arms[better][:n], arms[worse][:n], finding.lower_is_better)}
               for better, worse in zip(finding.arms, finding.arms[1:])]
    why = "; ".join(f"{r['better']} vs {r['worse']}: Δ {r['mean']:+.4g} [{r['low']:+.4g}, {r['high']:+.4g}], "
                    f"p = {r['p']:.3g}, detectable {r['mde']:.3g}" for r in results) + \
        f" (n = {n}, + favours the paper)"
    if n < MIN_SEEDS:
        return Verdict(INCONCLUSIVE, f"{n} seed(s), at least {MIN_SEEDS} are needed to judge ({why})", n, results)
    verdict, reason = _decide_paired(finding, results)
    return Verdict(verdict, f"{reason} ({why})" if reason else why, n, results, counted=True)


def _decide_equivalence(finding: Finding, r: Mapping[str, Any], p_key: str = "p") -> tuple[str, str]:
    if r["seed_free"]:
        return INCONCLUSIVE, SEED_FREE
    if r[p_key] < ALPHA:
        return (REPRODUCED, "") if r["inside"] else (NOT_REPRODUCED, "")
    if r["mde"] > finding.margin:  # even a true zero difference would rarely be shown equivalent at this n
        return UNDERPOWERED, (f"provable margin {r['mde']:.3g} > declared {finding.margin:.3g}, which needs "
                              f"{_needs(r, finding.margin, equivalence=True)} at sd {r['sd']:.3g}")
    return INCONCLUSIVE, ""


def _judge_equivalence(finding: Finding, arms: Mapping[str, Sequence[float]]) -> Verdict:
    if missing := [a for a in finding.arms if not arms.get(a)]:
        return Verdict(INCONCLUSIVE, f"no measurements for {', '.join(missing)}")
    a, b = finding.arms
    n = min(len(arms[a]), len(arms[b]))
    r = {"better": a, "worse": b, "comparison": _comparison(arms[a][:n], arms[b][:n], kind="equivalence"),
         **tost(arms[a][:n], arms[b][:n], finding.margin)}
    why = (f"{a} − {b}: Δ {r['mean']:+.4g}, 90% [{r['low90']:+.4g}, {r['high90']:+.4g}] against "
           f"± {finding.margin:.4g}, p(TOST) = {r['p_tost']:.3g}, p(outside) = {r['p_outside']:.3g}, "
           f"provable margin {r['mde']:.3g} (n = {n})")
    if n < MIN_SEEDS:
        return Verdict(INCONCLUSIVE, f"{n} seed(s), at least {MIN_SEEDS} are needed to judge ({why})", n, [r])
    verdict, reason = _decide_equivalence(finding, r)
    return Verdict(verdict, f"{reason} ({why})" if reason else why, n, [r], counted=True)


def _judge_correlation(finding: Finding, data: Mapping[str, Sequence[float]], seeds: int,
                       deterministic: bool = False) -> Verdict:
    x, y = data["x"], data["y"]
    rho, p = spearman(x, y)
    if math.isnan(rho):
        return Verdict(INCONCLUSIVE, f"no correlation computable from {len(x)} point(s) (too few, or constant)",
                       len(x))
    tests = [{"rho": rho, "p": p, "n": len(x), "inside": True, "comparison": _comparison(x, y, kind="correlation")}]
    why = f"ρ = {rho:+.3f}, p = {p:.3g} over {len(x)} points, paper's sign {finding.sign:+d}"
    if seeds < MIN_SEEDS and not deterministic:  # deterministic points: no seed could change them
        return Verdict(INCONCLUSIVE, f"{seeds} seed(s), at least {MIN_SEEDS} are needed to judge ({why})", len(x),
                       tests)
    return Verdict(_decide_correlation(finding, tests[0]), why, len(x), tests, counted=True)


def _decide_correlation(finding: Finding, r: Mapping[str, Any], p_key: str = "p") -> str:
    if r[p_key] < ALPHA:
        return REPRODUCED if r["rho"] * finding.sign > 0 else NOT_REPRODUCED
    return INCONCLUSIVE


def _judge_threshold(finding: Finding, data: Mapping[str, float]) -> Verdict:
    """A seed-free measurement against the paper's value. With a 95% bootstrap interval (``low``, ``high`` over
    held-out documents, benchmark items or timed rounds) the interval decides: wholly at or above the value is
    reproduced, wholly below is not, straddling it is inconclusive. Without one, the point value decides."""
    value, at_least = data["value"], finding.at_least
    if "low" not in data:
        holds = value >= at_least
        return Verdict(REPRODUCED if holds else NOT_REPRODUCED,
                       f"deterministic: {value:.4g} {'≥' if holds else '<'} {at_least:.4g}")
    interval = f"{value:.4g} [{data['low']:.4g}, {data['high']:.4g}] (95% bootstrap over {data.get('n', '?')} items)"
    if data["low"] >= at_least:
        return Verdict(REPRODUCED, f"{interval} ≥ {at_least:.4g}")
    if data["high"] < at_least:
        return Verdict(NOT_REPRODUCED, f"{interval} < {at_least:.4g}")
    return Verdict(INCONCLUSIVE, f"{interval} straddles {at_least:.4g}")


def judge(finding: Finding, data: Any, scale: str, seeds: int, deterministic: bool = False) -> Verdict:
    """The verdict on one declared finding, from what the experiment measured for it."""
    if finding.kind == "paired":
        verdict = _judge_paired(finding, data)
    elif finding.kind == "equivalence":
        verdict = _judge_equivalence(finding, data)
    elif finding.kind == "correlation":
        verdict = _judge_correlation(finding, data, seeds, deterministic)
    else:
        verdict = _judge_threshold(finding, data)
    if finding.exploratory:
        return Verdict(EXPLORATORY, f"exploratory, not judged ({verdict.why})", verdict.n, verdict.pairs)
    if scale == "smoke":
        return Verdict(INCONCLUSIVE, f"smoke scale proves the pipeline, not the finding ({verdict.why})", verdict.n,
                       verdict.pairs)
    if finding.same_as:  # its runs are another finding's: that one is judged and counted, this one refers to it
        return Verdict(SAME_AS, f"the same comparison as {finding.same_as}, judged there ({verdict.why})", verdict.n,
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


# ---- the whole report ----------------------------------------------------------------------------------------


def _redecide(finding: Finding, tests: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    if finding.kind == "paired":
        return _decide_paired(finding, tests, "holm")
    if finding.kind == "equivalence":
        return _decide_equivalence(finding, tests[0], "holm")
    return _decide_correlation(finding, tests[0], "holm"), ""


def across(records: Mapping[str, Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Every experiment's findings as the report shows them: judged again under ``RULE`` from the measurements
    each ``results.json`` holds, then Holm–Bonferroni over every counted test of the whole report (the same
    numbers compared twice are one test) and decided again with the adjusted p. Each finding gains
    ``raw_verdict`` (at the raw p) and per test ``holm``; a ``same_as`` finding takes the verdict it refers to.
    A finding stored without its measurements (or from before the one judge) is passed through as stored."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name, record in records.items():
        deterministic = record.get("seeds") == "deterministic"
        seeds = 1 if deterministic else int(record.get("seeds") or 0)
        out[name] = []
        for stored in record.get("findings", []):
            if "verdict" not in stored or "data" not in stored:
                out[name].append(dict(stored))
                continue
            finding = Finding.from_record(stored)
            verdict = judge(finding, stored["data"], record.get("scale", "smoke"), seeds, deterministic)
            out[name].append({**stored, **asdict(finding), **asdict(verdict), "raw_verdict": verdict.verdict})
    counted = [f for found in out.values() for f in found if f.get("counted")]
    unique = {t["comparison"]: t["p"] for f in counted for t in f["pairs"]}  # one comparison, one test
    adjusted = dict(zip(unique, holm(list(unique.values()))))
    tests = sum(not math.isnan(p) for p in unique.values())  # the family's size m
    for f in counted:
        f["pairs"] = [{**t, "holm": adjusted[t["comparison"]]} for t in f["pairs"]]
        verdict, reason = _redecide(Finding.from_record(f), f["pairs"])
        if verdict != f["raw_verdict"]:
            holms = ", ".join(f"{t['holm']:.3g}" for t in f["pairs"])
            f["why"] = (f"{f['raw_verdict']} at the raw p; Holm over {tests} tests: p = {holms}"
                        + (f"; {reason}" if reason else "") + f" ({f['why']})")
        f["verdict"] = verdict
    index = {f"{name}/{f.get('key')}": f for name, found in out.items() for f in found}
    for found in out.values():
        for f in found:
            if f.get("verdict") == SAME_AS:
                target = index.get(f["same_as"])
                if target is None or target.get("verdict") in (None, SAME_AS):
                    f["verdict"], f["why"] = INCONCLUSIVE, f"refers to {f['same_as']}, which has no verdict here"
                else:
                    f["verdict"] = target["verdict"]
                    f["why"] = f"the same comparison as {f['same_as']}: its verdict, counted once there"
                f["refers_to"] = f["same_as"]
    return out

