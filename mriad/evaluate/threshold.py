"""Choosing the binarisation threshold: exact Dice maximisation, the reference's bisection, FPR quantiles.

Conventions (the evaluation protocol, :mod:`mriad.evaluate.protocol`, picks the variant):

* a voxel is predicted anomalous when ``score > threshold`` (``strict``, the reference code) or
  ``score >= threshold`` (the ``brain`` protocol);
* the threshold is chosen on the POOLED voxels of a validation split (every voxel of its volumes, or
  the brain voxels only, as the protocol says);
* Dice over the pooled voxels is ``2 TP / (2 TP + FP + FN) = 2 TP / (predicted + positives)``.

The exact search sorts the pooled scores once (descending) and reads Dice at every boundary between
distinct values from cumulative sums, so every threshold that changes the prediction is tried, in
``O(n log n)``. Among equally good thresholds the largest one (fewest predicted voxels) is returned.
With ``strict`` the same best prediction set is reached with ``score > t`` for ``t`` the next lower
distinct value, and that ``t`` is returned.

The reference code instead runs a 10-step bisection (``find_best_val``): on the range
``[0, max(score)]`` (``[0, 1]`` if the maximum is 0) it evaluates Dice at the 1/4 and 3/4 points,
keeps the better of the two if it beats the best so far, and recurses into the half (lower or upper)
holding the better point. :func:`bisection_threshold` implements that search, binarising with
``score > q`` as the reference does when ``strict`` (``>=`` otherwise: they differ only for voxels
exactly equal to a 1/4 or 3/4 point). Because it reads Dice from the same sorted pool, each step
costs ``O(log n)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mriad.infra.errors import MriadError

SEARCHES = ("exact", "bisection")


@dataclass
class ThresholdResult:
    """A threshold, the pooled Dice it reaches, and how it was found."""

    threshold: float
    dice: float
    method: str


class SortedPool:
    """Pooled scores sorted once, answering "Dice if we predict score >= t" in O(log n).

    ``values`` are the distinct scores in descending order; ``predicted[i]`` and ``hits[i]`` are the
    number of voxels and of lesion voxels with a score >= ``values[i]``.
    """

    def __init__(self, scores: torch.Tensor, labels: torch.Tensor):
        scores = scores.reshape(-1)
        labels = labels.reshape(-1).to(torch.bool)
        if scores.numel() != labels.numel():
            raise ValueError("scores and labels differ in size")
        if scores.numel() == 0:
            raise MriadError("no voxels to choose a threshold from (empty brain masks?)")
        values, order = torch.sort(scores.to(torch.float64), descending=True)
        hits = torch.cumsum(labels[order].to(torch.int64), 0)
        # The last index of every run of equal values: where the prediction set changes.
        is_end = torch.ones_like(values, dtype=torch.bool)
        is_end[:-1] = values[:-1] != values[1:]
        ends = is_end.nonzero(as_tuple=True)[0]
        self.values = values[ends]
        self.predicted = ends + 1
        self.hits = hits[ends]
        self.positives = int(hits[-1])
        self.total = int(scores.numel())

    @classmethod
    def from_counts(cls, values: torch.Tensor, hits: torch.Tensor, totals: torch.Tensor) -> SortedPool:
        """The pool of voxels given as counts per distinct score, scores in DESCENDING order: the same
        pool, to the last bit, as one built from the voxels (sharded evaluations merge pools so)."""
        if values.numel() == 0:
            raise MriadError("no voxels to choose a threshold from (empty brain masks?)")
        pool = cls.__new__(cls)
        pool.values = values.reshape(-1).to(torch.float64)
        pool.predicted = torch.cumsum(totals.reshape(-1).to(torch.int64), 0)
        pool.hits = torch.cumsum(hits.reshape(-1).to(torch.int64), 0)
        pool.positives = int(pool.hits[-1])
        pool.total = int(pool.predicted[-1])
        return pool

    def dice_at(self, threshold: float, strict: bool = False) -> float:
        """Pooled Dice of the prediction ``score >= threshold`` (``score > threshold`` if ``strict``)."""
        # Number of distinct values >= (>) threshold: the values are descending, so search the negation.
        count = int(
            torch.searchsorted(
                -self.values,
                torch.tensor([-threshold], dtype=torch.float64, device=self.values.device),
                right=not strict,
            )
        )
        if count == 0:
            return 0.0 if self.positives else float("nan")
        return 2.0 * float(self.hits[count - 1]) / float(self.predicted[count - 1] + self.positives)

    def dice_curve(self) -> torch.Tensor:
        """Dice at every distinct threshold (aligned with ``values``), in float64."""
        return 2.0 * self.hits.to(torch.float64) / (self.predicted + self.positives).to(torch.float64)

    @property
    def maximum(self) -> float:
        return float(self.values[0])


def _require_lesions(pool: SortedPool) -> None:
    if pool.positives == 0:
        raise MriadError(
            "the validation voxels contain no lesion voxel: a Dice-maximising threshold is undefined "
            "(pass --threshold, or a --val-split with lesions)"
        )


def exact_threshold(
    scores: torch.Tensor, labels: torch.Tensor, pool: SortedPool | None = None, strict: bool = False
) -> ThresholdResult:
    """The threshold maximising pooled Dice over all thresholds that change the prediction."""
    pool = pool or SortedPool(scores, labels)
    _require_lesions(pool)
    curve = pool.dice_curve()
    best = int(torch.argmax(curve))  # first maximum = the largest threshold reaching it
    threshold = float(pool.values[best])
    if strict:  # ``> t`` predicts the same voxels as ``>= values[best]`` for t = the next lower value
        below = pool.values[best + 1] if best + 1 < pool.values.numel() else None
        threshold = float(below) if below is not None else float(np.nextafter(np.float32(threshold), -np.inf))
    return ThresholdResult(threshold, float(curve[best]), "exact")


def bisection_threshold(
    scores: torch.Tensor, labels: torch.Tensor, steps: int = 10, pool: SortedPool | None = None, strict: bool = False
) -> ThresholdResult:
    """The reference code's 10-step bisection on ``[0, max(score)]`` (see the module docstring)."""
    pool = pool or SortedPool(scores, labels)
    _require_lesions(pool)
    low, high = 0.0, pool.maximum
    best_dice, best_point = 0.0, 0.0
    for _ in range(int(steps)):
        if low == high:
            high = 1.0  # the reference's guard against an empty range
        centre = low + (high - low) * 0.5
        q_low = low + (high - low) * 0.25
        q_high = low + (high - low) * 0.75
        d_low, d_high = pool.dice_at(q_low, strict), pool.dice_at(q_high, strict)
        if d_low >= d_high:
            if d_low >= best_dice:
                best_dice, best_point = d_low, q_low
            high = centre
        else:
            if d_high >= best_dice:
                best_dice, best_point = d_high, q_high
            low = centre
    return ThresholdResult(float(best_point), float(best_dice), "bisection")


def find_threshold(
    scores: torch.Tensor, labels: torch.Tensor, method: str = "exact", strict: bool = False
) -> ThresholdResult:
    """Dispatch on ``method`` (``exact`` or ``bisection``); ``strict``: predict ``score > threshold``."""
    if method == "exact":
        return exact_threshold(scores, labels, strict=strict)
    if method == "bisection":
        return bisection_threshold(scores, labels, strict=strict)
    raise MriadError(f"--threshold-search {method!r}: expected one of {', '.join(SEARCHES)}")


def quantile(values: torch.Tensor, q: float) -> float:
    """``numpy.quantile(values, q)`` (linear interpolation), without torch.quantile's size limit."""
    flat = values.reshape(-1).to(torch.float64)
    n = flat.numel()
    if n == 0:
        return float("nan")
    position = q * (n - 1)
    lower = int(position // 1)
    upper = min(lower + 1, n - 1)
    if n > 1 << 24 or flat.device.type != "cpu":
        ordered = torch.sort(flat).values
        low_value, high_value = float(ordered[lower]), float(ordered[upper])
    else:
        low_value = float(torch.kthvalue(flat, lower + 1).values)
        high_value = float(torch.kthvalue(flat, upper + 1).values)
    return low_value + (high_value - low_value) * (position - lower)


def fpr_thresholds(healthy_scores: torch.Tensor, rates: tuple[float, ...] = (0.01, 0.05, 0.1)) -> dict[str, float]:
    """Thresholds flagging a fraction ``rate`` of healthy voxels: the ``1 - rate`` quantiles (linear
    interpolation, so ``score > t`` and ``score >= t`` flag the same fraction up to ties).

    Keys are the rates as percent strings (``"1%"``), the way the paper's discussion names them.
    """
    return {f"{rate * 100:g}%": quantile(healthy_scores, 1.0 - rate) for rate in rates}


def quantile_from_counts(values: torch.Tensor, counts: torch.Tensor, q: float) -> float:
    """:func:`quantile` of voxels given as counts per distinct value, values in ASCENDING order."""
    cumulative = torch.cumsum(counts.reshape(-1).to(torch.int64), 0)
    n = int(cumulative[-1]) if cumulative.numel() else 0
    if n == 0:
        return float("nan")
    position = q * (n - 1)
    lower = int(position // 1)
    upper = min(lower + 1, n - 1)
    # The value of 0-based rank r is the first whose cumulative count exceeds r.
    ranks = torch.tensor([lower, upper], dtype=torch.int64, device=cumulative.device)
    at = torch.searchsorted(cumulative, ranks, right=True)
    low_value, high_value = (float(v) for v in values.reshape(-1).to(torch.float64)[at])
    return low_value + (high_value - low_value) * (position - lower)


def fpr_thresholds_from_counts(
    values: torch.Tensor, counts: torch.Tensor, rates: tuple[float, ...] = (0.01, 0.05, 0.1)
) -> dict[str, float]:
    """:func:`fpr_thresholds` of healthy voxels given as counts per distinct value (ascending)."""
    return {f"{rate * 100:g}%": quantile_from_counts(values, counts, 1.0 - rate) for rate in rates}
