"""Ignored voxels (WMH's label 2, "other pathology"): every number counts them neither as lesion nor
as healthy. Hand-built volumes whose map is HIGH on the ignored voxels, expected values computed
independently (scikit-learn, brute-force Dice) on the kept voxels only, in both protocols."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from mriad.evaluate import measures
from mriad.evaluate import metrics as M
from mriad.evaluate.protocol import PROTOCOLS, Protocol
from mriad.evaluate.volumes import SplitVolumes

SHAPE = (20, 20, 8)
BOTH = [PROTOCOLS["reference"], PROTOCOLS["brain"]]


def _case(seed: int, lesion: bool = True) -> dict[str, np.ndarray]:
    """A brain box with a lesion and, elsewhere in the brain, a blob of ignored voxels the map loves."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(SHAPE, bool)
    mask[3:17, 3:17, 1:7] = True
    seg = np.zeros(SHAPE, bool)
    if lesion:
        seg[6:10, 6:10, 2:5] = True
    ignore = np.zeros(SHAPE, bool)
    ignore[11:15, 10:14, 3:6] = True
    score = rng.random(SHAPE) * 0.4 + seg * 0.35 + ignore * 0.5
    score[~mask] *= rng.random(int((~mask).sum())) < 0.3  # some background voxels score high too
    return {"score": score.astype(np.float32), "seg": seg, "mask": mask, "ignore": ignore}


def _split(cases: list[dict[str, np.ndarray]], labels: list[int], with_ignore: bool = True) -> SplitVolumes:
    """Cases as a split; image = score, reconstruction = 0 (so l1 is the map's mean)."""

    def stack(key: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([case[key] for case in cases]))

    score = stack("score")
    return SplitVolumes(
        rows=pd.DataFrame({"subject_id": [f"S{i}" for i in range(len(cases))], "dataset": "wmh", "label": labels}),
        image=score.clone(),
        reconstruction=torch.zeros_like(score),
        score=score,
        mask=stack("mask"),
        seg=stack("seg"),
        affine=np.eye(4),
        ignore=stack("ignore") if with_ignore else None,
    )


def _kept(case: dict[str, np.ndarray], protocol: Protocol) -> np.ndarray:
    return ~case["ignore"] if protocol.whole_volume else case["mask"] & ~case["ignore"]


def _best_dice(scores: np.ndarray, labels: np.ndarray) -> float:
    """Brute force: the best Dice of ``scores >= t`` over every distinct value t."""
    positives = labels.sum()
    return max(2.0 * (labels & (scores >= t)).sum() / ((scores >= t).sum() + positives) for t in np.unique(scores))


@pytest.mark.parametrize("protocol", BOTH, ids=lambda p: p.name)
@pytest.mark.parametrize("seed", range(2))
def test_per_volume_metrics_equal_those_of_the_kept_voxels(protocol: Protocol, seed: int) -> None:
    case = _case(seed)
    keep = _kept(case, protocol)
    score, seg = case["score"], case["seg"]
    volumes = _split([case], [1])
    got = measures.subject_metrics(volumes, volumes.score, None, protocol=protocol).iloc[0]
    assert got["auroc"] == pytest.approx(roc_auc_score(seg[keep], score[keep]), abs=1e-9)
    assert got["auprc"] == pytest.approx(average_precision_score(seg[keep], score[keep]), abs=1e-9)
    assert got["oracle_dice"] == pytest.approx(_best_dice(score[keep], seg[keep]), abs=1e-9)
    assert got["lesion_voxels"] == int((seg & keep).sum())
    brain = case["mask"] & ~case["ignore"]  # l1: the brain in both protocols, less the ignored voxels
    assert got["l1"] == pytest.approx(float(np.abs(score[brain].astype(np.float64)).mean()), abs=1e-9)
    # Without the ignore mask the high ignored voxels are false positives: every number moves.
    plain = measures.subject_metrics(_split([case], [1], False), volumes.score, None, protocol=protocol).iloc[0]
    assert got["auprc"] - plain["auprc"] > 0.1
    assert got["auroc"] > plain["auroc"] and got["oracle_dice"] > plain["oracle_dice"]
    assert got["l1"] < plain["l1"]


@pytest.mark.parametrize("protocol", BOTH, ids=lambda p: p.name)
def test_dice_drops_ignored_voxels_from_prediction_and_truth(protocol: Protocol) -> None:
    case = _case(3)
    case["seg"][12, 11, 4] = True  # a lesion voxel inside the ignored blob: ignored wins
    volumes = _split([case], [1])
    threshold = 0.55
    dice, predicted = measures.dice_at(volumes, volumes.score, threshold, protocol)
    # The protocol's prediction (its component filter included), then the ignored voxels left out.
    prediction = protocol.predict(case["score"], threshold, case["mask"]) & ~case["ignore"]
    truth = (case["seg"] if protocol.whole_volume else case["seg"] & case["mask"]) & ~case["ignore"]
    expected = 2.0 * (prediction & truth).sum() / (prediction.sum() + truth.sum())
    assert dice[0] == pytest.approx(expected, abs=1e-12) and predicted[0] == int(prediction.sum())
    plain, plain_predicted = measures.dice_at(_split([case], [1], False), volumes.score, threshold, protocol)
    assert plain_predicted[0] > predicted[0] + 30 and plain[0] < dice[0] - 0.1


@pytest.mark.parametrize("protocol", BOTH, ids=lambda p: p.name)
def test_pooled_numbers_threshold_fpr_and_slices_skip_ignored_voxels(protocol: Protocol) -> None:
    cases = [_case(4), _case(5), _case(6, lesion=False)]
    volumes = _split(cases, [1, 1, 0])
    maps = volumes.score
    keep = [_kept(case, protocol) for case in cases]
    lesion = np.array([True, True, False])
    scores, labels = measures.pooled(volumes, maps, lesion, protocol)
    want_scores = np.concatenate([c["score"][k] for c, k in zip(cases[:2], keep[:2])])
    want_labels = np.concatenate([c["seg"][k] for c, k in zip(cases[:2], keep[:2])])
    np.testing.assert_array_equal(scores.numpy(), want_scores)
    np.testing.assert_array_equal(labels.numpy(), want_labels)
    curve = M.precision_recall_curve(scores, labels)
    assert curve.auprc == pytest.approx(average_precision_score(want_labels, want_scores), abs=1e-9)
    # The validation threshold: the best pooled Dice over the kept voxels of all three volumes.
    every = np.concatenate([c["score"][k] for c, k in zip(cases, keep)])
    truth = np.concatenate([c["seg"][k] for c, k in zip(cases, keep)])
    chosen = measures.choose_threshold(volumes, maps, "exact", protocol=protocol)
    assert chosen.dice == pytest.approx(_best_dice(every, truth), abs=1e-9)
    plain = _split(cases, [1, 1, 0], with_ignore=False)
    assert measures.choose_threshold(plain, maps, "exact", protocol=protocol).dice < chosen.dice - 0.05
    # FPR thresholds: the healthy volume's brain voxels less its ignored ones.
    healthy = cases[2]
    np.testing.assert_array_equal(
        measures.healthy_brain_voxels(volumes, maps).numpy(), healthy["score"][healthy["mask"] & ~healthy["ignore"]]
    )
    # Slice AUROC: ignored voxels score 0 (like voxels outside the brain) and are never lesion.
    slice_scores, positive = [], []
    for case, kept in zip(cases, keep):
        values = np.where(kept, case["score"], 0.0)
        for z in range(SHAPE[2]):
            if case["mask"][:, :, z].any():
                slice_scores.append(values[:, :, z].max())
                positive.append(bool((case["seg"] & kept)[:, :, z].any()))
    got = measures.slice_auroc(volumes, maps, protocol)
    assert got == pytest.approx(roc_auc_score(positive, slice_scores), abs=1e-9)


def test_summary_settings_count_the_ignored_voxels() -> None:
    cases = [_case(7), _case(8)]
    assert measures.ignore_settings(_split(cases, [1, 1], with_ignore=False)) == {}
    settings = measures.ignore_settings(_split(cases, [1, 1]))
    assert settings["ignored_voxels"] == sum(int(c["ignore"].sum()) for c in cases) == 2 * 48
    assert settings["ignored_subjects"] == 2 and "neither lesion nor healthy" in settings["ignored"]


@pytest.mark.parametrize("protocol", BOTH, ids=lambda p: p.name)
def test_an_empty_ignore_mask_changes_nothing(protocol: Protocol) -> None:
    """The ignore code path with nothing ignored gives the numbers of the path without ignore masks."""
    cases = [_case(9), _case(10), _case(11, lesion=False)]
    for case in cases:
        case["ignore"] = np.zeros(SHAPE, bool)
    with_mask, without = _split(cases, [1, 1, 0]), _split(cases, [1, 1, 0], with_ignore=False)
    maps = with_mask.score
    pd.testing.assert_frame_equal(
        measures.subject_metrics(with_mask, maps, 0.5, protocol=protocol),
        measures.subject_metrics(without, maps, 0.5, protocol=protocol),
    )
    lesion = np.array([True, True, False])
    for a, b in zip(
        measures.pooled(with_mask, maps, lesion, protocol), measures.pooled(without, maps, lesion, protocol)
    ):
        assert torch.equal(a, b)
    assert measures.slice_auroc(with_mask, maps, protocol) == measures.slice_auroc(without, maps, protocol)
    assert torch.equal(measures.healthy_brain_voxels(with_mask, maps), measures.healthy_brain_voxels(without, maps))
