"""Voxel-wise metrics: AUPRC, AUROC, oracle Dice (batched, in torch) and Dice after component filtering.

Definitions (chosen to match the libraries a reviewer would check against):

* AUPRC is scikit-learn's ``average_precision_score``: ``sum_n (R_n - R_{n-1}) P_n`` over the
  distinct score values in descending order (step-wise, no interpolation; tied scores enter together).
* AUROC is scikit-learn's ``roc_auc_score``: the trapezoidal ROC area over distinct thresholds, which
  equals the Mann-Whitney U statistic with mid-ranks for ties.
* The oracle Dice is the best Dice reachable with any one threshold on that volume alone (an upper
  bound that says how separable the map is, independent of the validation threshold).

All are computed over the voxels where ``valid`` is true (every voxel when ``valid`` is None: the
``reference`` protocol; the brain mask: the ``brain`` protocol). A volume with no lesion
voxel inside the brain gets NaN for all three (AUPRC/AUROC are undefined; scikit-learn warns and
returns 0 or NaN); one without healthy voxels gets NaN AUROC.

For a batch the scores are laid out as rows ``(B, V)``; voxels outside the brain are set to ``-inf``
so that one descending sort per row puts them last with zero weight, and every sum is a cumulative sum
read at the ends of runs of equal values. No Python loop over voxels or thresholds.

Dice: ``2 |P & G| / (|P| + |G|)``; when both are empty it is NaN (undefined, left out of means and
written as an empty cell), when only one is empty it is 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

# The `brain` protocol's rule: scipy.ndimage.label's default structure in 3D (faces only,
# 6-connectivity), components of fewer than 7 voxels dropped. The reference code differs: skimage
# label(connectivity=3) (26-connectivity) and components of <= 7 voxels dropped (the `reference`
# protocol, mriad.evaluate.protocol).
CONNECTIVITY = 6
MIN_COMPONENT_VOXELS = 7


@dataclass
class RankingMetrics:
    """Per-row results, float64 tensors of shape (B,)."""

    auprc: torch.Tensor
    auroc: torch.Tensor
    oracle_dice: torch.Tensor
    oracle_threshold: torch.Tensor
    positives: torch.Tensor
    negatives: torch.Tensor


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


def _row_sum(x: torch.Tensor) -> torch.Tensor:
    """``x.sum(1)`` of a ``(B, V)`` tensor, each row added up in the same order whatever its batch.

    torch adds a lone row of 32,768 or more elements across its threads (in another order than a
    row of a larger batch, so other last bits); a batch of one is therefore summed as a batch of two.
    A volume's numbers then do not depend on the volumes it is scored with (sharded evaluations).
    """
    if x.shape[0] == 1:
        return x.expand(2, -1).contiguous().sum(1)[:1]
    return x.sum(1)


def ranking_metrics(scores: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor | None = None) -> RankingMetrics:
    """AUPRC, AUROC and oracle Dice of every row (volume) of a batch ``(B, ...)``; with the whole volume
    (``valid`` None), a row's numbers do not depend on the other rows of its batch (on one device)."""
    return _ranking(scores, labels, valid, _row_sum)


def _ranking(
    scores: torch.Tensor,
    labels: torch.Tensor,
    valid: torch.Tensor | None,
    row_sum: Callable[[torch.Tensor], torch.Tensor],
) -> RankingMetrics:
    scores = _rows(scores).to(torch.float32)
    labels = _rows(labels).to(torch.bool)
    valid = torch.ones_like(labels) if valid is None else _rows(valid).to(torch.bool)
    rows, length = scores.shape
    device = scores.device
    keyed = torch.where(valid, scores, torch.full_like(scores, float("-inf")))
    values, order = torch.sort(keyed, dim=1, descending=True)
    # Invalid voxels sort last: keep only as many columns as the fullest row has valid voxels.
    length = max(int(valid.sum(1).max()), 1)
    values, order = values[:, :length], order[:, :length]
    weight = valid.gather(1, order)
    truth = labels.gather(1, order)
    pos = (truth & weight).to(torch.int64)
    neg = (~truth & weight).to(torch.int64)
    del order, truth
    tp = torch.cumsum(pos, 1)
    fp = torch.cumsum(neg, 1)
    n_pos = tp[:, -1]
    n_neg = fp[:, -1]

    index = torch.arange(length, device=device).expand(rows, length)
    is_end = torch.ones_like(weight)
    is_end[:, :-1] = values[:, :-1] != values[:, 1:]
    is_start = torch.ones_like(weight)
    is_start[:, 1:] = values[:, 1:] != values[:, :-1]
    # For every position: index of the last / first element of its run of equal values.
    end = torch.where(is_end, index, torch.full_like(index, length)).flip(1).cummin(1).values.flip(1)
    start = torch.where(is_start, index, torch.zeros_like(index)).cummax(1).values
    del index, is_start

    tp_end = tp.gather(1, end).to(torch.float64)
    fp_end = fp.gather(1, end).to(torch.float64)
    fp_before = (fp.gather(1, start) - neg.gather(1, start)).to(torch.float64)
    del end, start
    posf = pos.to(torch.float64)
    p = n_pos.to(torch.float64)
    n = n_neg.to(torch.float64)

    predicted = tp_end + fp_end
    precision = torch.where(predicted > 0, tp_end / predicted.clamp(min=1), torch.zeros_like(predicted))
    # sum over positives of the precision at their run's end = sum_n (R_n - R_{n-1}) P_n * P
    auprc = row_sum(posf * precision) / p
    auroc = row_sum(posf * (n[:, None] - 0.5 * (fp_end + fp_before))) / (p * n)

    # Oracle Dice at every run end of valid voxels: 2 TP / (predicted + P).
    dice = 2.0 * tp_end / (predicted + p[:, None])
    dice = torch.where(is_end & weight, dice, torch.zeros_like(dice))
    best = torch.argmax(dice, dim=1, keepdim=True)  # first = largest threshold among ties
    oracle = dice.gather(1, best)[:, 0]
    oracle_threshold = values.gather(1, best)[:, 0].to(torch.float64)

    nan = torch.full_like(p, float("nan"))
    no_pos = n_pos == 0
    return RankingMetrics(
        auprc=torch.where(no_pos, nan, auprc),
        auroc=torch.where(no_pos | (n_neg == 0), nan, auroc),
        oracle_dice=torch.where(no_pos, nan, oracle),
        oracle_threshold=torch.where(no_pos, nan, oracle_threshold),
        positives=n_pos,
        negatives=n_neg,
    )


def average_precision(scores: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor | None = None) -> float:
    """AUPRC of one set of voxels (e.g. all test volumes pooled)."""
    return float(_single(scores, labels, valid).auprc[0])


def roc_auc(scores: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor | None = None) -> float:
    """AUROC of one set of voxels."""
    return float(_single(scores, labels, valid).auroc[0])


def _single(scores: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor | None) -> RankingMetrics:
    # One pool, ranked as it always was (a sharded evaluation ranks the same pool, in the same order).
    return _ranking(
        scores.reshape(1, -1),
        labels.reshape(1, -1),
        None if valid is None else valid.reshape(1, -1),
        lambda x: x.sum(1),
    )


@dataclass
class PRCurve:
    """Precision and recall at distinct thresholds (descending scores) and the exact AUPRC."""

    precision: np.ndarray
    recall: np.ndarray
    auprc: float


def precision_recall_curve(scores: torch.Tensor, labels: torch.Tensor, max_points: int | None = None) -> PRCurve:
    """The PR curve of one pool of voxels (e.g. all test volumes) with its AUPRC, memory-lean.

    One sort and ~30 bytes per voxel, so millions of pooled voxels fit on a GPU. ``auprc`` is
    computed on the full curve; ``max_points`` thins only the returned arrays (for plotting).
    """
    values, order = torch.sort(scores.reshape(-1).to(torch.float32), descending=True)
    tp = torch.cumsum(labels.reshape(-1).to(torch.bool)[order], 0)
    del order
    is_end = torch.ones_like(values, dtype=torch.bool)
    is_end[:-1] = values[:-1] != values[1:]
    del values
    ends = is_end.nonzero(as_tuple=True)[0]
    tp_end = tp[ends].to(torch.float64)
    positives = float(tp[-1]) if tp.numel() else 0.0
    del tp
    return _curve(tp_end, (ends + 1).to(torch.float64), positives, max_points)


def precision_recall_from_counts(hits: torch.Tensor, totals: torch.Tensor, max_points: int | None = None) -> PRCurve:
    """:func:`precision_recall_curve` of a pool given as counts per distinct score, in DESCENDING
    score order (``hits``: lesion voxels, ``totals``: all voxels with that score).

    The curve only reads the cumulative counts at the ends of runs of equal scores, so this is the
    same computation, to the last bit, as on the voxels themselves (sharded evaluations merge pools
    this way).
    """
    tp_end = torch.cumsum(hits.reshape(-1).to(torch.int64), 0).to(torch.float64)
    predicted = torch.cumsum(totals.reshape(-1).to(torch.int64), 0).to(torch.float64)
    positives = float(tp_end[-1]) if tp_end.numel() else 0.0
    return _curve(tp_end, predicted, positives, max_points)


def _curve(tp_end: torch.Tensor, predicted: torch.Tensor, positives: float, max_points: int | None) -> PRCurve:
    """Precision, recall and AUPRC from true positives and predicted voxels at every run end."""
    precision = tp_end / predicted
    gained = torch.diff(tp_end, prepend=tp_end.new_zeros(1))
    auprc = float((gained * precision).sum() / positives) if positives else float("nan")
    recall = tp_end / max(positives, 1.0)
    if max_points is not None and precision.numel() > max_points:
        keep = torch.linspace(0, precision.numel() - 1, max_points, device=precision.device).round().long()
        precision, recall = precision[keep], recall[keep]
    return PRCurve(precision.cpu().numpy(), recall.cpu().numpy(), auprc)


def remove_small_components(
    binary: np.ndarray, min_size: int = MIN_COMPONENT_VOXELS, connectivity: int = CONNECTIVITY
) -> np.ndarray:
    """Drop 3D connected components with fewer than ``min_size`` voxels (scipy.ndimage.label).

    ``connectivity`` 6 joins voxels sharing a face, 26 also those sharing an edge or a corner (the
    reference's skimage ``label(connectivity=3)``). "Drop <= 7" is ``min_size=8``.
    """
    from scipy import ndimage

    binary = np.asarray(binary, dtype=bool)
    if min_size <= 1 or not binary.any():
        return binary
    rank = {6: 1, 18: 2, 26: 3}.get(connectivity)
    if rank is None:
        raise ValueError(f"connectivity must be 6, 18 or 26, got {connectivity}")
    labelled, count = ndimage.label(binary, structure=ndimage.generate_binary_structure(3, rank))
    sizes = np.bincount(labelled.ravel(), minlength=count + 1)
    keep = sizes >= min_size
    keep[0] = False
    return keep[labelled]


def dice_score(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two binary volumes; NaN when both are empty (see the module docstring)."""
    prediction = np.asarray(prediction, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    total = int(prediction.sum()) + int(truth.sum())
    if total == 0:
        return float("nan")
    return 2.0 * int(np.logical_and(prediction, truth).sum()) / total


def mean_abs_inside(image: torch.Tensor, reconstruction: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """l1 per volume: mean |x - x_hat| over the brain mask, shape (B,) float64 (NaN for empty masks).

    Multi-channel volumes ``(B, X, Y, Z, C)`` (masks ``(B, X, Y, Z)``): the channel mean of |x - x_hat|.
    """
    inside = _rows(mask).to(torch.bool)
    if image.dim() == mask.dim() + 1:
        diff = _rows((image.to(torch.float64) - reconstruction.to(torch.float64)).abs().mean(-1))
    else:
        diff = (_rows(image).to(torch.float64) - _rows(reconstruction).to(torch.float64)).abs()
    total = _row_sum(diff * inside)
    count = inside.sum(1).to(torch.float64)
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan")))
