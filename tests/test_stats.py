"""Statistics of the report: bootstrap intervals inside the data, tests only where they mean something."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from advanced_optimizers.bench.stats import bootstrap_ci, describe, holm, paired_test


def test_bootstrap_interval_is_seeded_and_inside_the_observed_range() -> None:
    dead_run = [0.1135, 0.9921, 0.9872]  # the CNN table's case: t-interval [-55.9, 195.4] (in %)
    low, high = bootstrap_ci(dead_run)
    assert min(dead_run) <= low <= np.mean(dead_run) <= high <= max(dead_run)
    assert bootstrap_ci(dead_run) == (low, high)  # seeded: the same report every time
    t = sps.t.ppf(0.975, 2) * np.std(dead_run, ddof=1) / math.sqrt(3)
    assert np.mean(dead_run) - t < 0  # what the t-interval claimed
    assert bootstrap_ci([0.5, 0.5, 0.5]) == (0.5, 0.5)


def test_describe_reports_ranges_below_three_values() -> None:
    three = describe([0.9, 0.92, 0.95])
    assert three["ci"] == "bootstrap" and three["n"] == 3 and three["median"] == 0.92
    two = describe([0.9, 0.92])
    assert two["ci"] == "range" and math.isnan(two["ci_low"])
    assert (two["min"], two["max"], two["median"]) == (0.9, 0.92, pytest.approx(0.91))
    one = describe([0.9])
    assert one["n"] == 1 and one["mean"] == 0.9 and math.isnan(one["std"])
    assert describe([])["ci"] == "none"


@pytest.mark.parametrize(
    "a, b, reason",
    [
        ([0.95, 0.96, 0.97], [0.94, 0.95, 0.96], "identical differences"),  # round-off only
        ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], "identical differences"),
        ([0.9, 0.8], [0.7, 0.75], "2 pairs < 3"),
        ([], [], "0 pairs < 3"),
    ],
)
def test_paired_test_does_not_test_what_it_cannot(a, b, reason: str) -> None:
    res = paired_test(a, b)
    assert reason in res["reason"]
    assert math.isnan(res["p_value"]) and math.isnan(res["wilcoxon_p"])  # never p = 0


def test_paired_test_matches_scipy_and_holm_skips_untested() -> None:
    a, b = [0.95, 0.96, 0.97, 0.96], [0.94, 0.95, 0.955, 0.955]
    res = paired_test(a, b)
    assert res["reason"] is None
    assert res["p_value"] == pytest.approx(sps.ttest_rel(a, b).pvalue)
    assert res["wilcoxon_p"] == pytest.approx(sps.wilcoxon(np.subtract(a, b)).pvalue)
    assert paired_test(a[1:3], b[1:3], min_pairs=2)["reason"] is None
    adjusted = holm([0.01, math.nan, 0.04])
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1])
    assert adjusted[2] == pytest.approx(0.04)
