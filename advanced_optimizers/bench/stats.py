"""Statistics over seeds: bootstrap intervals, paired tests, multiple comparisons, time to target.

* ``describe``: what the report shows for one metric over a method's successful runs. With at least
  ``MIN_FOR_CI`` (3) values: mean, sample std and a 95% **bootstrap percentile** interval of the mean
  (``scipy.stats.bootstrap``, ``method="percentile"``, 9 999 resamples, seeded, so a report is
  reproducible). A percentile interval is made of means of resampled observations, so it lies within
  the observed range, hence within the metric's range (an accuracy's interval never leaves [0, 1],
  a time's is never negative) — unlike the t-interval ``mean ± t·s/√n``, which gave a dead run's
  accuracy a CI of [−55.9, 195.4]. With 1 or 2 values no interval is claimed: the median and the
  range (min, max) are reported instead.
* ``mean_ci``: mean, sample std and the Student-t interval ``mean ± t_{n−1, (1+c)/2} · s/√n`` (kept
  for the benchmarks; the report uses ``describe``).
* ``paired_test``: runs under the same seed share the initial weights and the data order, so methods
  are compared by the per-seed differences ``d_s = a_s − b_s``: paired t-test, Cohen's ``d_z =
  mean(d)/std(d)``, and Wilcoxon's signed-rank p-value as a distribution-free check. It tests only
  when there are at least ``min_pairs`` (3) pairs and the differences vary; otherwise every p-value
  is NaN and ``reason`` says why (identical differences give no evidence about their spread: a
  t-statistic of ±∞ is not "p = 0").
* ``holm``: Holm–Bonferroni adjusted p-values for a family of comparisons (untested ones, NaN, are
  not part of the family).
* ``time_to_target``: first epoch (and cumulative training seconds) at which a run reaches a target.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

__all__ = [
    "MIN_FOR_CI",
    "MIN_PAIRS",
    "bootstrap_ci",
    "describe",
    "holm",
    "mean_ci",
    "paired_test",
    "time_to_target",
]

MIN_FOR_CI = 3  # fewer values: median and range, no interval
MIN_PAIRS = 3  # fewer complete pairs: no paired test
BOOTSTRAP_RESAMPLES = 9_999
BOOTSTRAP_SEED = 0


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean, std, and the t-based ``confidence`` interval of ``values`` (NaN bounds when n < 2)."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n == 0:
        raise ValueError("values must hold at least one number")
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if n > 1 else math.nan
    if n > 1:
        half = float(sps.t.ppf((1 + confidence) / 2, n - 1) * std / math.sqrt(n))
    else:
        half = math.nan
    return {"mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half, "n": n}


def bootstrap_ci(
    values: Sequence[float], confidence: float = 0.95, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """The bootstrap percentile ``confidence`` interval of the mean of ``values`` (n >= 2)."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        raise ValueError("a bootstrap interval needs at least 2 values")
    if np.all(x == x[0]):  # every resample has the same mean (scipy would warn "degenerate")
        return float(x[0]), float(x[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        result = sps.bootstrap(
            (x,),
            np.mean,
            confidence_level=confidence,
            n_resamples=BOOTSTRAP_RESAMPLES,
            method="percentile",
            rng=np.random.default_rng(seed),
            vectorized=True,
        )
    low, high = result.confidence_interval
    # a percentile interval is made of resampled means: clamp float round-off to the data's range
    return max(float(low), float(x.min())), min(float(high), float(x.max()))


def describe(values: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """``n, mean, std, median, min, max, ci_low, ci_high, ci`` of ``values`` (see the module doc).

    ``ci`` is ``"bootstrap"`` when ``n >= MIN_FOR_CI`` (then ``ci_low``/``ci_high`` are the
    bootstrap percentile interval of the mean), else ``"range"`` (bounds NaN: report the median and
    min–max) or ``"none"`` for no values (everything NaN).
    """
    x = np.asarray([v for v in values], dtype=float)
    n = len(x)
    nan = math.nan
    if n == 0:
        return {
            "n": 0,
            "mean": nan,
            "std": nan,
            "median": nan,
            "min": nan,
            "max": nan,
            "ci_low": nan,
            "ci_high": nan,
            "ci": "none",
        }
    out: dict[str, Any] = {
        "n": n,
        "mean": float(x.mean()),
        "std": float(x.std(ddof=1)) if n > 1 else nan,
        "median": float(np.median(x)),
        "min": float(x.min()),
        "max": float(x.max()),
        "ci_low": nan,
        "ci_high": nan,
        "ci": "range",
    }
    if n >= MIN_FOR_CI:
        out["ci_low"], out["ci_high"] = bootstrap_ci(x, confidence)
        out["ci"] = "bootstrap"
    return out


def paired_test(
    a: Sequence[float], b: Sequence[float], min_pairs: int = MIN_PAIRS
) -> dict[str, Any]:
    """Paired comparison of ``a`` against ``b`` (same seeds, same order).

    Keys: ``n``, ``mean_diff``, ``p_value`` (paired t), ``cohens_dz``, ``wilcoxon_p``, and
    ``reason``: ``None`` when tested, else why not (fewer than ``min_pairs`` pairs, or differences
    without variance) — then the p-values and ``d_z`` are NaN.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be 1-D of equal length, got {a.shape} and {b.shape}")
    diff = a - b
    n = len(diff)
    out: dict[str, Any] = {
        "n": n,
        "mean_diff": float(diff.mean()) if n else math.nan,
        "p_value": math.nan,
        "cohens_dz": math.nan,
        "wilcoxon_p": math.nan,
        "reason": None,
    }
    if n < max(min_pairs, 2):
        out["reason"] = f"{n} pair{'s' if n != 1 else ''} < {max(min_pairs, 2)}"
        return out
    sd = float(diff.std(ddof=1))
    # float round-off (0.95 − 0.94 ≠ 0.96 − 0.95 in the last bit) is not variance
    if not sd > 1e-12 * max(1.0, float(np.abs(diff).max())):
        out["reason"] = "identical differences: zero variance"
        return out
    out["p_value"] = float(sps.ttest_rel(a, b).pvalue)
    out["cohens_dz"] = float(diff.mean() / sd)
    if np.any(diff != 0):
        out["wilcoxon_p"] = float(sps.wilcoxon(diff).pvalue)
    return out


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (NaN stays NaN and is not counted)."""
    p = np.asarray(p_values, dtype=float)
    valid = np.flatnonzero(~np.isnan(p))
    adjusted = np.full_like(p, np.nan)
    order = valid[np.argsort(p[valid])]
    m = len(order)
    running = 0.0
    for rank, idx in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        adjusted[idx] = running
    return adjusted.tolist()


def time_to_target(
    accuracies: Sequence[float], seconds: Sequence[float], target: float
) -> tuple[float, float]:
    """(epochs, cumulative training seconds) until accuracy first reaches ``target``; inf if never."""
    elapsed = 0.0
    for epoch, (acc, sec) in enumerate(zip(accuracies, seconds, strict=True), start=1):
        elapsed += sec
        if acc >= target:
            return float(epoch), elapsed
    return math.inf, math.inf
