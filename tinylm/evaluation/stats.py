"""Seed-paired statistics: two arms measured once per seed, compared by their per-seed differences (mean, sample
SD, 95% t interval, two-sided one-sample t-test against zero, minimal detectable effect). ``tinylm pro``'s report
and ``reproduce``'s judge both read their differences here, so the numbers they print are computed once."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from scipy import stats

ALPHA = 0.05  # two-sided: the interval is 95%
POWER = 0.8  # for the minimal detectable effect
# A spread below this share of the measured values' size is float rounding, not the seed: a seed-free number
# recomputed under another machine or thread count moves in its 8th digit, which a t-test reads as p = 1e-30.
ROUNDING = 1e-6


def t_quantile(q: float, df: int) -> float:
    """The ``q`` quantile of Student's t with ``df`` degrees of freedom."""
    return float(stats.t.ppf(q, df))


def mde(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Minimal detectable effect of a paired two-sided t-test at ``n`` seeds: the true mean difference it finds at
    ``alpha`` with probability ``power``, given the spread ``sd`` of the differences (t-based approximation)."""
    if n < 2:
        return math.inf
    return (t_quantile(1 - alpha / 2, n - 1) + t_quantile(power, n - 1)) * sd / math.sqrt(n)


def no_spread(sd: float, scale: float) -> bool:
    """Whether differences of sample SD ``sd`` vary by no more than float rounding of values of size ``scale``."""
    return sd <= ROUNDING * scale


def paired_t(differences: Sequence[float], scale: float | None = None) -> dict[str, Any]:
    """One difference per seed: ``n``, ``mean``, the 95% t interval (``low``, ``high``), the two-sided p of the
    one-sample t-test against zero, the sample ``sd`` and the minimal detectable effect ``mde``. One seed has no
    interval and no p (nan). Differences with no spread beyond float rounding of values of size ``scale`` (by
    default the largest difference) give p = nan and ``seed_free``: a constant shift across seeds says the arms
    did not depend on the seed, so seeds give no evidence either way (no p = 0 shortcut)."""
    diffs = list(differences)
    n, mean = len(diffs), statistics.fmean(diffs)
    result = {"n": n, "mean": mean, "low": math.nan, "high": math.nan, "p": math.nan, "sd": math.nan,
              "mde": math.inf, "seed_free": False}
    if n < 2:
        return result
    sd = statistics.stdev(diffs)
    if no_spread(sd, max(abs(d) for d in diffs) if scale is None else scale):
        return {**result, "low": mean, "high": mean, "sd": sd, "mde": math.nan, "seed_free": True}
    half = t_quantile(1 - ALPHA / 2, n - 1) * sd / math.sqrt(n)
    p = float(stats.ttest_1samp(diffs, 0.0).pvalue)
    return {**result, "low": mean - half, "high": mean + half, "p": p, "sd": sd, "mde": mde(sd, n)}
