"""Paired significance tests, multiple-testing correction and bootstrap intervals for `mriad compare`.

The paper compares per-volume metrics of two models with a paired permutation test (10,000
resamples). Here it is ``scipy.stats.permutation_test`` with ``permutation_type="samples"`` on the
paired differences: under the null hypothesis the two models are exchangeable *within each subject*,
so swapping the two values of a subject flips the sign of its difference; scipy's one-sample
"samples" test does exactly these sign flips (the two-sample paired form gives the same null
distribution, but is about three times slower). When ``2**n`` does not exceed the requested resamples
scipy enumerates every sign pattern (an exact test), otherwise it draws random ones. Each test gets
its own generator seeded with ``seed`` so a result does not depend on which other tests ran before it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Resampled statistics are computed in chunks of about this many elements: large enough to be fast
# (numpy per-call overhead), small enough that a 10,000 x n matrix never dominates memory.
_CHUNK_ELEMENTS = 2_000_000


def _paired_arrays(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(x, dtype=np.float64).ravel()
    b = np.asarray(y, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired samples need equal lengths, got {a.size} and {b.size}")
    return a, b


def _mean(d: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(d, axis=axis)


def paired_permutation_test(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    *,
    resamples: int = 10_000,
    seed: int = 0,
    alternative: str = "two-sided",
) -> float:
    """Two-sided p-value of the mean paired difference ``mean(x - y)`` under within-pair exchange.

    Pairs where either value is NaN are dropped (a metric that does not apply to a subject). Fewer
    than two remaining pairs give NaN: no test is possible. Identical samples give exactly 1.
    """
    from scipy.stats import permutation_test

    a, b = _paired_arrays(x, y)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if a.size < 2:
        return float("nan")
    if np.array_equal(a, b):
        return 1.0  # the whole null distribution is 0 = the observed statistic
    diff = a - b
    result = permutation_test(
        (diff,),
        _mean,
        permutation_type="samples",
        vectorized=True,
        n_resamples=max(int(resamples), 1),
        batch=max(1, _CHUNK_ELEMENTS // diff.size),
        alternative=alternative,
        rng=np.random.default_rng(seed),
    )
    return float(result.pvalue)


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1); NaNs stay NaN.

    Sorted ascending, the i-th smallest of m p-values (i from 0) is multiplied by ``m - i`` and the
    running maximum is taken so that the adjusted values keep the order of the raw ones.
    """
    p = np.asarray(pvalues, dtype=np.float64).ravel()
    adjusted = np.full_like(p, np.nan)
    valid = np.flatnonzero(np.isfinite(p))
    m = valid.size
    if m == 0:
        return adjusted
    order = valid[np.argsort(p[valid], kind="stable")]
    scaled = p[order] * (m - np.arange(m))
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, *, resamples: int = 10_000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (NaNs dropped); ``(nan, nan)`` without data.

    A seeded numpy percentile bootstrap rather than scipy's default BCa: BCa returns NaN with a
    warning for constant data (e.g. a metric that is 0 for every subject), percentile does not.
    """
    data = np.asarray(values, dtype=np.float64).ravel()
    data = data[np.isfinite(data)]
    if data.size == 0:
        return float("nan"), float("nan")
    if data.size == 1 or np.all(data == data[0]):
        return float(data[0]), float(data[0])
    rng = np.random.default_rng(seed)
    resamples = max(int(resamples), 1)
    chunk = max(1, _CHUNK_ELEMENTS // data.size)
    means = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        index = rng.integers(0, data.size, size=(stop - start, data.size))
        means[start:stop] = data[index].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def paired_difference(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    *,
    resamples: int = 10_000,
    seed: int = 0,
) -> dict[str, float]:
    """Everything the comparison table reports for one model against the baseline on one metric."""
    a, b = _paired_arrays(x, y)
    keep = np.isfinite(a) & np.isfinite(b)
    diff = a[keep] - b[keep]
    low, high = bootstrap_ci(diff, resamples=resamples, seed=seed)
    return {
        "n_pairs": int(diff.size),
        "diff_mean": float(diff.mean()) if diff.size else float("nan"),
        "diff_ci_low": low,
        "diff_ci_high": high,
        "p_value": paired_permutation_test(a[keep], b[keep], resamples=resamples, seed=seed),
    }
