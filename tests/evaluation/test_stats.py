"""Seed-paired statistics (``tinylm.evaluation.stats``): the numbers ``tinylm pro``'s report and the reproduce judge
print, checked against scipy's own t interval and test."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from tinylm.evaluation.stats import paired_t


def test_paired_t_is_scipys_one_sample_t_interval_and_test():
    diffs = [-0.61, -0.70, -0.52, -0.66]
    result = paired_t(diffs)
    test = stats.ttest_1samp(diffs, 0.0)
    low, high = test.confidence_interval(0.95)
    assert (result["n"], result["mean"]) == (4, pytest.approx(-0.6225))
    assert (result["low"], result["high"], result["p"]) == (pytest.approx(low), pytest.approx(high),
                                                            pytest.approx(test.pvalue))
    assert result["sd"] == pytest.approx(stats.tstd(diffs)) and 0 < result["mde"] < math.inf


def test_one_seed_has_no_interval_and_no_p_and_no_spread_is_no_evidence():
    one = paired_t([-0.4])
    assert one["mean"] == -0.4 and all(math.isnan(one[k]) for k in ("low", "high", "p", "sd"))
    constant = paired_t([0.25, 0.25, 0.25])  # the arms did not depend on the seed: no p = 0 shortcut
    assert constant["seed_free"] and math.isnan(constant["p"]) and constant["low"] == constant["high"] == 0.25
