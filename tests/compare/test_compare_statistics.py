"""The statistics behind `mriad compare`, checked against direct computations."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mriad.compare.statistics import bootstrap_ci, holm, paired_difference, paired_permutation_test


def exact_sign_flip_pvalue(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided p by enumerating all 2^n sign flips of the differences: P(|mean| >= |observed|)."""
    diff = np.asarray(x, float) - np.asarray(y, float)
    observed = abs(diff.mean())
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=diff.size)))
    null = np.abs((signs * diff).mean(axis=1))
    return float(np.mean(null >= observed - 1e-12))


@pytest.mark.parametrize("n", [3, 6, 8, 10])
def test_permutation_p_matches_exact_enumeration(n: int) -> None:
    rng = np.random.default_rng(n)
    for _ in range(3):
        x = rng.normal(size=n)
        y = x + rng.normal(0.3, 1.0, size=n)
        # 2^n <= 10,000 resamples: scipy enumerates exactly, so the match is to float precision.
        assert paired_permutation_test(x, y, resamples=10_000) == pytest.approx(exact_sign_flip_pvalue(x, y))


def test_scipy_two_sample_paired_form_agrees() -> None:
    from scipy.stats import permutation_test

    rng = np.random.default_rng(1)
    x, y = rng.normal(size=9), rng.normal(size=9)
    two_sample = permutation_test(
        (x, y),
        lambda a, b, axis=-1: np.mean(a - b, axis=axis),
        permutation_type="samples",
        vectorized=True,
        n_resamples=10_000,
    )
    assert paired_permutation_test(x, y) == pytest.approx(two_sample.pvalue)


def test_identical_inputs_give_p_one() -> None:
    x = np.random.default_rng(0).uniform(size=50)
    assert paired_permutation_test(x, x.copy()) == 1.0
    assert paired_permutation_test(x, x, resamples=100) == 1.0


def test_obviously_better_model_is_significant_and_seeded() -> None:
    rng = np.random.default_rng(2)
    base = rng.uniform(0.2, 0.5, size=40)
    better = base + 0.1 + rng.normal(0, 0.02, size=40)
    p = paired_permutation_test(better, base, resamples=2000, seed=3)
    assert p < 0.05
    assert p == paired_permutation_test(better, base, resamples=2000, seed=3)


def test_nan_pairs_are_dropped() -> None:
    x = np.array([0.5, 0.6, np.nan, 0.7, 0.2])
    y = np.array([0.4, 0.5, 0.3, np.nan, 0.1])
    keep = np.isfinite(x) & np.isfinite(y)
    assert paired_permutation_test(x, y) == pytest.approx(exact_sign_flip_pvalue(x[keep], y[keep]))
    assert np.isnan(paired_permutation_test([1.0], [2.0]))


def test_bootstrap_ci_contains_the_mean_and_is_seeded() -> None:
    values = np.random.default_rng(4).normal(0.4, 0.1, size=60)
    low, high = bootstrap_ci(values, resamples=2000, seed=1)
    assert low < values.mean() < high
    assert high - low < 0.1
    assert (low, high) == bootstrap_ci(values, resamples=2000, seed=1)
    assert bootstrap_ci(np.full(5, 0.3)) == (0.3, 0.3)
    assert all(np.isnan(bootstrap_ci([np.nan])))


def test_holm_against_hand_computation() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    adjusted = holm([0.02, np.nan, 0.01])
    assert np.isnan(adjusted[1]) and adjusted[[0, 2]] == pytest.approx([0.02, 0.02])
    assert holm([]).size == 0


def test_paired_difference_reports_mean_ci_and_p() -> None:
    rng = np.random.default_rng(5)
    base = rng.uniform(size=30)
    result = paired_difference(base + 0.1, base, resamples=500)
    assert result["n_pairs"] == 30
    assert result["diff_mean"] == pytest.approx(0.1)
    assert result["diff_ci_low"] == pytest.approx(0.1) and result["p_value"] < 0.01
