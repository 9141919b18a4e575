"""Threshold search: exact = brute force, exact >= the reference's bisection, quantiles = numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mriad.evaluate.threshold import (
    SortedPool,
    bisection_threshold,
    exact_threshold,
    find_threshold,
    fpr_thresholds,
    quantile,
)
from mriad.infra.errors import MriadError


def _dice(scores: np.ndarray, labels: np.ndarray, t: float) -> float:
    pred = scores >= t
    return 2.0 * np.sum(pred & labels) / (pred.sum() + labels.sum())


def _reference_bisection(scores: np.ndarray, labels: np.ndarray, steps: int = 10) -> tuple[float, float]:
    """A plain re-statement of the reference's find_best_val (with >=), for comparison."""
    low, high, best, point = 0.0, float(scores.max()), 0.0, 0.0
    for _ in range(steps):
        if low == high:
            high = 1.0
        centre = low + (high - low) * 0.5
        q1, q3 = low + (high - low) * 0.25, low + (high - low) * 0.75
        d1, d3 = _dice(scores, labels, q1), _dice(scores, labels, q3)
        if d1 >= d3:
            if d1 >= best:
                best, point = d1, q1
            high = centre
        else:
            if d3 >= best:
                best, point = d3, q3
            low = centre
    return point, best


@pytest.mark.parametrize("seed", range(6))
def test_exact_equals_brute_force_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    scores = rng.integers(0, 12, n).astype(np.float32) / 4  # many ties
    labels = rng.random(n) < 0.3
    labels[0] = True
    result = exact_threshold(torch.from_numpy(scores), torch.from_numpy(labels))
    dices = {float(t): _dice(scores, labels, t) for t in np.unique(scores)}
    best = max(dices.values())
    assert result.dice == pytest.approx(best, abs=1e-12)
    assert result.threshold == max(t for t, d in dices.items() if d == best)  # the largest best threshold
    assert _dice(scores, labels, result.threshold) == pytest.approx(result.dice, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_exact_at_least_bisection_and_bisection_matches_reference(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n = 20000
    labels = rng.random(n) < 0.05
    scores = (rng.random(n) * 0.3 + labels * rng.random(n) * (0.2 + 0.5 * seed / 5)).astype(np.float32)
    scores[rng.random(n) < 0.3] = 0  # background zeros, as after the eroded mask
    exact = exact_threshold(torch.from_numpy(scores), torch.from_numpy(labels))
    bisect = bisection_threshold(torch.from_numpy(scores), torch.from_numpy(labels))
    assert exact.dice >= bisect.dice - 1e-12
    point, best = _reference_bisection(scores.astype(np.float64), labels)
    assert bisect.threshold == pytest.approx(point, abs=1e-12)
    assert bisect.dice == pytest.approx(best, abs=1e-12)


def test_dice_at_and_dispatch() -> None:
    scores = torch.tensor([0.9, 0.8, 0.8, 0.1, 0.0])
    labels = torch.tensor([1, 1, 0, 0, 0])
    pool = SortedPool(scores, labels)
    assert pool.dice_at(0.85) == pytest.approx(2 * 1 / (1 + 2))
    assert pool.dice_at(0.8) == pytest.approx(2 * 2 / (3 + 2))
    assert pool.dice_at(5.0) == 0.0
    assert find_threshold(scores, labels, "exact").threshold == pytest.approx(0.8)
    assert find_threshold(scores, labels, "bisection").method == "bisection"
    with pytest.raises(MriadError):
        find_threshold(scores, labels, "golden")
    with pytest.raises(MriadError, match="no lesion"):
        exact_threshold(scores, torch.zeros(5))


def test_quantiles_equal_numpy() -> None:
    rng = np.random.default_rng(9)
    values = np.concatenate([np.zeros(500), rng.random(1001)]).astype(np.float32)
    for q in (0.0, 0.5, 0.9, 0.95, 0.99, 1.0):
        assert quantile(torch.from_numpy(values), q) == pytest.approx(np.quantile(values.astype(np.float64), q))
    thresholds = fpr_thresholds(torch.from_numpy(values))
    assert list(thresholds) == ["1%", "5%", "10%"]
    assert thresholds["1%"] >= thresholds["5%"] >= thresholds["10%"]
    flagged = (values >= thresholds["5%"]).mean()
    assert abs(flagged - 0.05) < 0.002
