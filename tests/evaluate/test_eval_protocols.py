"""The evaluation protocols (issue 15): hand-built volumes with worked-out numbers, sklearn, compare."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score

from mriad.evaluate import measures
from mriad.evaluate import metrics as M
from mriad.evaluate.postprocess import postprocess
from mriad.evaluate.protocol import PROTOCOLS
from mriad.evaluate.threshold import SortedPool, bisection_threshold, exact_threshold
from mriad.evaluate.volumes import SplitVolumes

REFERENCE, BRAIN = PROTOCOLS["reference"], PROTOCOLS["brain"]


def _split(score: np.ndarray, seg: np.ndarray, mask: np.ndarray | None = None, label: int = 1) -> SplitVolumes:
    """One volume as a split; image = score, reconstruction = 0 (so the score is the residual)."""
    mask = np.ones(score.shape, bool) if mask is None else mask
    return SplitVolumes(
        rows=pd.DataFrame({"subject_id": ["S0"], "dataset": ["t"], "label": [label]}),
        image=torch.from_numpy(score[None].astype(np.float32)),
        reconstruction=torch.zeros((1, *score.shape)),
        score=torch.from_numpy(score[None].astype(np.float32)),
        mask=torch.from_numpy(mask[None]),
        seg=torch.from_numpy(seg[None].astype(bool)),
        affine=np.eye(4),
    )


def _components_volume() -> tuple[np.ndarray, np.ndarray]:
    """A: 7 voxels in a face-connected line. B: 10 voxels on the space diagonal, touching only at
    corners (10 components of 1 under 6-connectivity, one of 10 under 26). Truth = A + B (17)."""
    predicted = np.zeros((12, 12, 12), bool)
    predicted[1:8, 11, 0] = True  # A: far from B (B's y <= 9)
    for i in range(10):
        predicted[i, i, i] = True  # B
    return predicted, predicted.copy()


def test_connectivity_and_size_rule_change_dice_as_worked_out() -> None:
    predicted, truth = _components_volume()
    assert truth.sum() == 17

    def dice(min_size: int, connectivity: int) -> float:
        return M.dice_score(M.remove_small_components(predicted, min_size, connectivity), truth)

    # 6-connectivity, drop < 7 (brain): A (7) stays, B's ten single voxels go: 2*7 / (7 + 17).
    assert dice(7, 6) == pytest.approx(14 / 24)
    # 26-connectivity, drop <= 7 (reference): A goes, B (10) stays: 2*10 / (10 + 17).
    assert dice(8, 26) == pytest.approx(20 / 27)
    # The two changes one at a time: 6-conn & <= 7 drops both; 26-conn & < 7 keeps both.
    assert dice(8, 6) == 0.0 and dice(7, 26) == 1.0
    # The protocols' own binarisation path gives the same numbers (map 1 on the prediction, 0 elsewhere).
    volumes = _split(predicted.astype(np.float32), truth)
    maps = volumes.score
    assert measures.dice_at(volumes, maps, 0.5, BRAIN)[0][0] == pytest.approx(14 / 24)
    assert measures.dice_at(volumes, maps, 0.5, REFERENCE)[0][0] == pytest.approx(20 / 27)
    # `>` against `>=`: at threshold 1.0 only the inclusive rule predicts anything.
    assert measures.dice_at(volumes, maps, 1.0, BRAIN)[0][0] == pytest.approx(14 / 24)
    assert measures.dice_at(volumes, maps, 1.0, REFERENCE)[0][0] == 0.0


def _head(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A brain box inside a larger volume; the map is non-zero just outside the brain too."""
    rng = np.random.default_rng(seed)
    shape = (20, 20, 8)
    mask = np.zeros(shape, bool)
    mask[4:16, 4:16, 1:7] = True
    seg = np.zeros(shape, bool)
    seg[8:12, 7:11, 2:5] = True
    score = rng.random(shape) * 0.5 + seg * 0.3
    score[~mask] *= rng.random(int((~mask).sum())) < 0.3  # some background voxels score high
    return score.astype(np.float32), seg, mask


@pytest.mark.parametrize("seed", range(3))
def test_ranking_metrics_count_the_protocol_voxels(seed: int) -> None:
    score, seg, mask = _head(seed)
    volumes = _split(score, seg, mask)
    reference = measures.subject_metrics(volumes, volumes.score, None, protocol=REFERENCE).iloc[0]
    brain = measures.subject_metrics(volumes, volumes.score, None, protocol=BRAIN).iloc[0]
    # reference: sklearn on the flattened whole volume; brain: sklearn on the brain voxels.
    assert reference["auroc"] == pytest.approx(roc_auc_score(seg.ravel(), score.ravel()), abs=1e-9)
    assert reference["auprc"] == pytest.approx(average_precision_score(seg.ravel(), score.ravel()), abs=1e-9)
    assert brain["auroc"] == pytest.approx(roc_auc_score(seg[mask], score[mask]), abs=1e-9)
    assert brain["auprc"] == pytest.approx(average_precision_score(seg[mask], score[mask]), abs=1e-9)
    # Both right, and different: the background adds easy and hard negatives.
    assert abs(reference["auroc"] - brain["auroc"]) > 0.01
    assert reference["protocol"] == "reference" and brain["protocol"] == "brain"


def test_reference_median_covers_the_whole_masked_volume() -> None:
    score, _, mask = _head(3)
    eroded = np.stack(
        [
            ndimage.binary_erosion(mask[:, :, z], ndimage.generate_binary_structure(2, 1), 3)
            for z in range(mask.shape[2])
        ],
        axis=2,
    )
    expected = ndimage.median_filter(score * eroded, size=5)
    got = postprocess(torch.from_numpy(score), torch.from_numpy(mask), restrict_to_mask=False).numpy()
    np.testing.assert_array_equal(got, expected)
    assert (got[~mask] != 0).any()  # values leak outside the brain, as in the reference
    inside = postprocess(torch.from_numpy(score), torch.from_numpy(mask)).numpy()
    np.testing.assert_array_equal(inside[mask], expected[mask])
    assert not inside[~mask].any()


def test_strict_threshold_search_reaches_the_same_best_dice() -> None:
    scores = torch.tensor([1.0, 0.75, 0.75, 0.5, 0.25, 0.25, 0.125, 0.0])  # exact in float32
    labels = torch.tensor([1, 1, 0, 1, 0, 0, 0, 0], dtype=torch.bool)
    inclusive, strict = exact_threshold(scores, labels), exact_threshold(scores, labels, strict=True)
    assert inclusive.threshold == 0.5 and strict.threshold == 0.25
    assert inclusive.dice == strict.dice == pytest.approx(2 * 3 / (4 + 3))
    predicted = scores > strict.threshold
    assert 2 * float((predicted & labels).sum()) / float(predicted.sum() + labels.sum()) == pytest.approx(strict.dice)
    pool = SortedPool(scores, labels)
    assert pool.dice_at(0.75) == pytest.approx(2 * 2 / (3 + 3))
    assert pool.dice_at(0.75, strict=True) == pytest.approx(2 * 1 / (1 + 3))
    assert bisection_threshold(scores, labels, strict=True).dice <= strict.dice + 1e-12


def test_clamp_recomputes_only_plain_residuals() -> None:
    image = np.full((4, 4, 2), 0.5, np.float32)
    rec = np.full((4, 4, 2), 1.25, np.float32)  # overshoots [0, 1]
    volumes = _split(image, np.zeros(image.shape, bool), label=0)
    volumes.reconstruction = torch.from_numpy(rec[None])
    volumes.score = (volumes.image - volumes.reconstruction).abs()
    unclamped, report = measures.residual_scores(volumes, clamp=False)
    assert torch.equal(unclamped, volumes.score) and report.voxels_outside == image.size
    clamped, report = measures.residual_scores(volumes, clamp=True)
    assert torch.allclose(clamped, torch.full_like(clamped, 0.5)) and report.volumes_recomputed == 1
    volumes.score = volumes.score + 1.0  # a model's own score: not the residual, left alone
    kept, report = measures.residual_scores(volumes, clamp=True)
    assert torch.equal(kept, volumes.score) and report.volumes_not_residual == 1


def _evaluated_run(root: Path, name: str, protocol: str | None) -> Path:
    run = root / name
    folder = run / "eval" / "brats-test"
    folder.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": name, "fold": 0}))
    frame = pd.DataFrame({"subject_id": ["A", "B", "C"], "dataset": "brats", "label": 1, "dice": [0.2, 0.4, 0.6]})
    if protocol is not None:
        frame["protocol"] = protocol
    frame.to_csv(folder / "per_subject.csv", index=False)
    summary = {"split": "brats-test", "model": name, **({"protocol": protocol} if protocol else {})}
    (folder / "summary.json").write_text(json.dumps(summary))
    return run


def test_compare_refuses_runs_of_different_protocols(cli, tmp_path: Path) -> None:
    ae = _evaluated_run(tmp_path, "ae", "reference")
    brain = _evaluated_run(tmp_path, "pddpm", "brain")
    result = cli("compare", ae, brain, "--split", "brats-test", "--out", tmp_path / "cmp", "--no-figures")
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "different protocols" in lines[0] and "--protocol reference" in lines[0], lines
    # Same protocol (an evaluation older than protocols counts as brain): compared, and the caption says so.
    old = _evaluated_run(tmp_path, "thresh", None)
    result = cli(
        "compare", brain, old, "--split", "brats-test", "--out", tmp_path / "cmp", "--no-figures", "--resamples", "50"
    )
    assert result.exit_code == 0, result.output
    assert "## brats-test (brain protocol)" in (tmp_path / "cmp" / "compare.md").read_text()
    assert "brain protocol" in result.output


def test_protocol_predict_is_the_dice_prediction() -> None:
    predicted, truth = _components_volume()
    mask = np.ones(predicted.shape, bool)
    for protocol, kept in ((BRAIN, 7), (REFERENCE, 10)):
        assert int(protocol.predict(predicted.astype(np.float32), 0.5, mask).sum()) == kept
    volumes = _split(predicted.astype(np.float32), truth)
    assert measures.dice_at(volumes, volumes.score, 0.5, REFERENCE)[1][0] == 10
