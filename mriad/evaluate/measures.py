"""The numbers of an evaluation, computed on a split's post-processed maps under a protocol.

Every function takes the :class:`~mriad.evaluate.protocol.Protocol` that decides over which voxels
it counts and how a map is binarised; docs/evaluation.md defines each number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from mriad.evaluate import metrics as M
from mriad.evaluate.postprocess import postprocess
from mriad.evaluate.protocol import Protocol
from mriad.evaluate.threshold import ThresholdResult, exact_threshold, find_threshold
from mriad.evaluate.volumes import SplitVolumes, volumes_per_chunk
from mriad.infra.console import warn

EROSION_ITERATIONS = 3
MEDIAN_SIZE = 5
METRIC_NAMES = ("dice", "auprc", "auroc", "oracle_dice", "l1")
CSV_COLUMNS = [
    "subject_id",
    "dataset",
    "label",
    "dice",
    "auprc",
    "auroc",
    "oracle_dice",
    "l1",
    "lesion_voxels",
    "predicted_voxels",
    "protocol",
]


@dataclass
class ClampReport:
    """What ``--clamp`` did: the stored reconstructions' voxels outside [0, 1] and the maps redone."""

    clamp: bool
    voxels_outside: int
    volumes_recomputed: int
    volumes_not_residual: int


def residual_scores(volumes: SplitVolumes, clamp: bool) -> tuple[torch.Tensor, ClampReport]:
    """The score maps to post-process, with the reconstruction clipped to [0, 1] when ``clamp``.

    The stored score map is used as written, except where ``clamp`` is asked, the stored
    reconstruction leaves [0, 1], and the map is the plain residual ``|x - x_hat|`` of it (checked
    voxel for voxel: a model with its own score, e.g. f-AnoGAN's feature term, is left alone and
    counted). Those maps are recomputed as ``|x - clip(x_hat, 0, 1)|``.
    """
    scores = volumes.score
    outside = (volumes.reconstruction < 0) | (volumes.reconstruction > 1)
    per_volume = outside.flatten(1).sum(1)
    recomputed = not_residual = 0
    if clamp and bool(per_volume.any()):
        scores = scores.clone()
        for b in torch.nonzero(per_volume, as_tuple=True)[0].tolist():
            image, rec = volumes.image[b], volumes.reconstruction[b]
            if not torch.equal((image - rec).abs(), volumes.score[b]):
                not_residual += 1
                continue
            scores[b] = (image - rec.clamp(0, 1)).abs()
            recomputed += 1
    if not_residual:
        warn(f"--clamp: {not_residual} score map(s) are not |x - x_hat| of their reconstruction; used unclamped")
    return scores, ClampReport(clamp, int(per_volume.sum()), recomputed, not_residual)


def postprocess_split(
    volumes: SplitVolumes, device: torch.device, *, protocol: Protocol, scores: torch.Tensor | None = None
) -> torch.Tensor:
    """Post-processed anomaly maps of a whole split, kept on ``device`` as ``(B, X, Y, Z)``."""
    scores = volumes.score if scores is None else scores
    chunk = volumes_per_chunk(int(scores[0].numel()), device)
    maps = torch.empty(scores.shape, dtype=torch.float32, device=device)
    for start in range(0, len(volumes), chunk):
        sl = slice(start, start + chunk)
        maps[sl] = postprocess(
            scores[sl].to(device),
            volumes.mask[sl].to(device),
            erosion_iterations=EROSION_ITERATIONS,
            median_size=MEDIAN_SIZE,
            restrict_to_mask=not protocol.whole_volume,
        )
    return maps


def pooled(
    volumes: SplitVolumes, maps: torch.Tensor, which: np.ndarray, protocol: Protocol
) -> tuple[torch.Tensor, torch.Tensor]:
    """The protocol's voxels of the selected volumes, concatenated: (scores, lesion labels) on the device."""
    index = torch.as_tensor(np.flatnonzero(which), device=maps.device)
    seg = volumes.seg.to(maps.device)[index]
    if protocol.whole_volume:
        return maps[index].reshape(-1), seg.reshape(-1)
    mask = volumes.mask.to(maps.device)[index]
    return maps[index][mask], seg[mask]


def healthy_brain_voxels(volumes: SplitVolumes, maps: torch.Tensor) -> torch.Tensor:
    """Map values of the brain voxels of the healthy volumes (FPR thresholds count these in both protocols)."""
    healthy = torch.as_tensor(np.flatnonzero(volumes.labels != 1), device=maps.device)
    return maps[healthy][volumes.mask.to(maps.device)[healthy]]


def choose_threshold(volumes: SplitVolumes, maps: torch.Tensor, method: str, *, protocol: Protocol) -> ThresholdResult:
    """The Dice-maximising threshold over the pooled voxels of the validation volumes."""
    scores, labels = pooled(volumes, maps, np.ones(len(volumes), dtype=bool), protocol)
    return find_threshold(scores, labels, method, strict=protocol.strict)


def pooled_oracle_dice(volumes: SplitVolumes, maps: torch.Tensor, protocol: Protocol) -> float | None:
    """The best pooled Dice any one threshold reaches on the split itself (no component filter)."""
    lesion = volumes.labels == 1
    if not lesion.any():
        return None
    scores, labels = pooled(volumes, maps, lesion, protocol)
    return exact_threshold(scores, labels).dice if bool(labels.any()) else None


def _truth(volumes: SplitVolumes, sl: slice, device: torch.device, protocol: Protocol) -> torch.Tensor:
    seg = volumes.seg[sl].to(device)
    return seg if protocol.whole_volume else seg & volumes.mask[sl].to(device)


def dice_at(
    volumes: SplitVolumes, maps: torch.Tensor, threshold: float, protocol: Protocol
) -> tuple[np.ndarray, np.ndarray]:
    """Per volume: Dice after binarising at ``threshold`` and dropping small components (NaN for
    healthy volumes), and the number of voxels predicted."""
    count = len(volumes)
    dice, predicted = np.full(count, np.nan), np.zeros(count, dtype=np.int64)
    chunk = volumes_per_chunk(int(maps[0].numel()), maps.device)
    for start in range(0, count, chunk):
        sl = slice(start, min(start + chunk, count))
        binary = maps[sl] > threshold if protocol.strict else maps[sl] >= threshold
        if not protocol.whole_volume:
            binary &= volumes.mask[sl].to(maps.device)
        truth = _truth(volumes, sl, maps.device, protocol).cpu().numpy()
        binary_np = binary.cpu().numpy()
        for offset in range(binary_np.shape[0]):
            row = sl.start + offset
            kept = M.remove_small_components(binary_np[offset], protocol.min_component_voxels, protocol.connectivity)
            predicted[row] = int(kept.sum())
            if volumes.labels[row] == 1:
                dice[row] = M.dice_score(kept, truth[offset])
    return dice, predicted


def subject_metrics(
    volumes: SplitVolumes, maps: torch.Tensor, threshold: float | None, *, protocol: Protocol
) -> pd.DataFrame:
    """One row per subject with the columns of ``per_subject.csv``."""
    device = maps.device
    count = len(volumes)
    result = {name: np.full(count, np.nan) for name in METRIC_NAMES}
    lesion_voxels = np.zeros(count, dtype=np.int64)
    labels = volumes.labels
    chunk = volumes_per_chunk(int(maps[0].numel()), device)
    outside = 0
    for start in range(0, count, chunk):
        sl = slice(start, min(start + chunk, count))
        mask = volumes.mask[sl].to(device)
        outside += int((volumes.seg[sl].to(device) & ~mask).sum())
        truth = _truth(volumes, sl, device, protocol)
        lesion_voxels[sl] = truth.flatten(1).sum(1).cpu().numpy()
        result["l1"][sl] = (
            M.mean_abs_inside(volumes.image[sl].to(device), volumes.reconstruction[sl].to(device), mask).cpu().numpy()
        )
        lesion = labels[sl] == 1
        if lesion.any():
            index = torch.as_tensor(np.flatnonzero(lesion), device=device)
            valid = None if protocol.whole_volume else mask[index]
            ranked = M.ranking_metrics(maps[sl][index], truth[index], valid)
            rows = np.arange(sl.start, sl.stop)[lesion]
            result["auprc"][rows] = ranked.auprc.cpu().numpy()
            result["auroc"][rows] = ranked.auroc.cpu().numpy()
            result["oracle_dice"][rows] = ranked.oracle_dice.cpu().numpy()
    if outside and not protocol.whole_volume:
        warn(f"{outside} lesion voxel(s) lie outside the brain masks and are ignored by the metrics")
    predicted = pd.array([pd.NA] * count, dtype="Int64")
    if threshold is not None:
        result["dice"], counts = dice_at(volumes, maps, threshold, protocol)
        predicted = pd.array(counts, dtype="Int64")
    frame = pd.DataFrame(
        {
            "subject_id": volumes.rows["subject_id"].astype(str),
            "dataset": volumes.rows["dataset"].astype(str),
            "label": labels,
            **result,
            "lesion_voxels": pd.array(lesion_voxels, dtype="Int64"),
            "predicted_voxels": predicted,
            "protocol": protocol.name,
        }
    )
    return frame[CSV_COLUMNS]


def slice_auroc(volumes: SplitVolumes, maps: torch.Tensor, protocol: Protocol) -> float | None:
    """AUROC of axial slices: score = the slice's maximum post-processed value, positive = the slice
    holds a lesion voxel; over every slice with brain of the split's volumes, pooled."""
    device = maps.device
    mask = volumes.mask.to(device)
    values = maps if protocol.whole_volume else torch.where(mask, maps, torch.zeros((), device=device))
    scores = values.amax(dim=(1, 2))  # (B, Z): axial slices are the last axis
    positive = _truth(volumes, slice(0, len(volumes)), device, protocol).any(dim=1).any(dim=1)
    has_brain = mask.any(dim=1).any(dim=1)
    if not bool(positive[has_brain].any()) or bool(positive[has_brain].all()):
        return None
    return M.roc_auc(scores[has_brain], positive[has_brain])
