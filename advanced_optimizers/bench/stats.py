"""Statistics over seeds: means with t-based confidence intervals, paired tests, multiple comparisons.

* ``mean_ci``: mean, sample std and the Student-t interval ``mean ± t_{n−1, (1+c)/2} · s/√n``.
* ``paired_test``: runs under the same seed share the initial weights and the data order, so methods
  are compared by the per-seed differences ``d_s = a_s − b_s``: paired t-test, Cohen's ``d_z =
  mean(d)/std(d)``, and Wilcoxon's signed-rank p-value as a distribution-free check.
* ``holm``: Holm–Bonferroni adjusted p-values for a family of comparisons.
* ``time_to_target``: first epoch (and cumulative training seconds) at which a run reaches a target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps

__all__ = ["holm", "mean_ci", "paired_test", "time_to_target"]


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


def paired_test(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Paired comparison of ``a`` against ``b`` (same seeds, same order)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be 1-D of equal length, got {a.shape} and {b.shape}")
    diff = a - b
    n = len(diff)
    out = {
        "n": n,
        "mean_diff": float(diff.mean()),
        "p_value": math.nan,
        "cohens_dz": math.nan,
        "wilcoxon_p": math.nan,
    }
    if n < 2:
        return out
    sd = float(diff.std(ddof=1))
    if sd == 0.0:
        out["p_value"] = 1.0 if diff.mean() == 0 else 0.0
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
