"""Batched torch metrics equal scikit-learn (with ties) and plain numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from mriad.evaluate import metrics as M


@pytest.mark.parametrize("seed", range(4))
def test_ranking_metrics_equal_sklearn_with_ties_and_masks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows, length = 6, 2000
    scores = (rng.integers(0, 25, (rows, length)) / 7).astype(np.float32)  # heavy ties
    if seed % 2:
        scores += rng.random((rows, length)).astype(np.float32) * 0.01 * (rng.random((rows, length)) < 0.5)
    labels = rng.random((rows, length)) < rng.uniform(0.01, 0.4, (rows, 1))
    valid = rng.random((rows, length)) < 0.8
    got = M.ranking_metrics(torch.from_numpy(scores), torch.from_numpy(labels), torch.from_numpy(valid))
    for r in range(rows):
        s, y = scores[r][valid[r]], labels[r][valid[r]]
        assert got.auprc[r].item() == pytest.approx(average_precision_score(y, s), abs=1e-6)
        assert got.auroc[r].item() == pytest.approx(roc_auc_score(y, s), abs=1e-6)
        brute = max(2 * np.sum((s >= t) & y) / (np.sum(s >= t) + y.sum()) for t in np.unique(s))
        assert got.oracle_dice[r].item() == pytest.approx(brute, abs=1e-12)
        t = got.oracle_threshold[r].item()
        assert 2 * np.sum((s >= t) & y) / (np.sum(s >= t) + y.sum()) == pytest.approx(brute, abs=1e-12)


def test_ranking_metrics_on_volumes_and_undefined_cases() -> None:
    rng = np.random.default_rng(11)
    scores = rng.random((3, 8, 8, 4)).astype(np.float32)
    labels = np.zeros(scores.shape, dtype=bool)
    labels[0, 2:4, 2:4, 1:3] = True
    labels[2] = True  # no negatives: AUROC undefined
    got = M.ranking_metrics(torch.from_numpy(scores), torch.from_numpy(labels))
    assert got.auprc[0].item() == pytest.approx(average_precision_score(labels[0].ravel(), scores[0].ravel()))
    assert math.isnan(got.auprc[1].item()) and math.isnan(got.auroc[1].item())
    assert math.isnan(got.oracle_dice[1].item())
    assert got.auprc[2].item() == pytest.approx(1.0) and math.isnan(got.auroc[2].item())
    assert int(got.positives[0]) == 8 and int(got.negatives[1]) == 256


def test_single_and_curve_helpers_equal_sklearn() -> None:
    rng = np.random.default_rng(12)
    scores = (rng.integers(0, 50, 5000) / 10).astype(np.float32)
    labels = rng.random(5000) < 0.1
    s, y = torch.from_numpy(scores), torch.from_numpy(labels)
    assert M.average_precision(s, y) == pytest.approx(average_precision_score(labels, scores), abs=1e-6)
    assert M.roc_auc(s, y) == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    curve = M.precision_recall_curve(s, y)
    ref_p, ref_r, _ = precision_recall_curve(labels, scores)
    np.testing.assert_allclose(curve.precision, ref_p[:-1][::-1], atol=1e-12)
    np.testing.assert_allclose(curve.recall, ref_r[:-1][::-1], atol=1e-12)
    assert curve.auprc == pytest.approx(average_precision_score(labels, scores), abs=1e-6)
    thin = M.precision_recall_curve(s, y, max_points=10)
    assert thin.precision.size == 10 and thin.auprc == curve.auprc
    assert math.isnan(M.precision_recall_curve(s, torch.zeros(5000)).auprc)


def test_remove_small_components_equals_plain_loop() -> None:
    rng = np.random.default_rng(13)
    binary = rng.random((20, 20, 10)) > 0.8
    got = M.remove_small_components(binary, 7)
    labelled, count = ndimage.label(binary)  # default = 6-connectivity
    expected = np.zeros_like(binary)
    for index in range(1, count + 1):
        component = labelled == index
        if component.sum() >= 7:
            expected |= component
    np.testing.assert_array_equal(got, expected)
    diagonal = np.zeros((5, 5, 5), dtype=bool)
    for i in range(5):
        diagonal[i, i, i] = True
    assert not M.remove_small_components(diagonal, 2).any()  # 6-connectivity: diagonal voxels are apart
    assert M.remove_small_components(diagonal, 2, connectivity=26).sum() == 5


def test_dice_and_l1_equal_numpy() -> None:
    rng = np.random.default_rng(14)
    a, b = rng.random((10, 10, 5)) > 0.5, rng.random((10, 10, 5)) > 0.6
    assert M.dice_score(a, b) == pytest.approx(2 * np.sum(a & b) / (a.sum() + b.sum()))
    assert math.isnan(M.dice_score(np.zeros(4), np.zeros(4)))
    assert M.dice_score(np.ones(4), np.zeros(4)) == 0.0
    image, rec = rng.random((2, 6, 6, 3)), rng.random((2, 6, 6, 3))
    mask = rng.random((2, 6, 6, 3)) > 0.3
    got = M.mean_abs_inside(torch.from_numpy(image), torch.from_numpy(rec), torch.from_numpy(mask)).numpy()
    for i in range(2):
        assert got[i] == pytest.approx(np.abs(image[i] - rec[i])[mask[i]].mean())
