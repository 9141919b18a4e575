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
            if image.dim() > volumes.score[b].dim():  # channels last: the map is the channel mean
                if not torch.allclose((image - rec).abs().mean(-1), volumes.score[b], rtol=1e-5, atol=1e-6):
                    not_residual += 1
                    continue
                scores[b] = (image - rec.clamp(0, 1)).abs().mean(-1)
            elif not torch.equal((image - rec).abs(), volumes.score[b]):
                not_residual += 1
                continue
            else:
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
    kept = _kept(volumes, index, maps.device)
    if protocol.whole_volume and kept is None:
        return maps[index].reshape(-1), seg.reshape(-1)
    domain = kept if protocol.whole_volume else _both(volumes.mask.to(maps.device)[index], kept)
    return maps[index][domain], seg[domain]


def healthy_brain_voxels(volumes: SplitVolumes, maps: torch.Tensor) -> torch.Tensor:
    """Map values of the brain voxels of the healthy volumes (FPR thresholds count these in both protocols)."""
    healthy = torch.as_tensor(np.flatnonzero(volumes.labels != 1), device=maps.device)
    return maps[healthy][_both(volumes.mask.to(maps.device)[healthy], _kept(volumes, healthy, maps.device))]


def _kept(volumes: SplitVolumes, which: slice | torch.Tensor, device: torch.device) -> torch.Tensor | None:
    """The scored voxels of the selected volumes (not in their ignore masks); None: every voxel is.

    Ignored voxels (WMH's label 2) count neither as lesion nor as healthy in any number, as in the WMH
    challenge; a split without ignore masks takes exactly the code path it took before they existed.
    """
    if volumes.ignore is None:
        return None
    if isinstance(which, slice):  # a chunk: only its volumes travel to the device
        return ~volumes.ignore[which].to(device)
    return ~volumes.ignore.to(device)[which]


def _both(domain: torch.Tensor, kept: torch.Tensor | None) -> torch.Tensor:
    return domain if kept is None else domain & kept


def scored_brain(volumes: SplitVolumes) -> torch.Tensor:
    """The brain masks less the ignored voxels: what l1 averages over."""
    return _both(volumes.mask, _kept(volumes, slice(None), volumes.mask.device))


def ignore_settings(volumes: SplitVolumes) -> dict[str, object]:
    """The summary's record of the ignore masks of the evaluated split (nothing when it has none)."""
    if volumes.ignore is None:
        return {}
    return {
        "ignored_voxels": int(volumes.ignore.sum()),
        "ignored_subjects": int(volumes.ignore.flatten(1).any(1).sum()),
        "ignored": "voxels of the manifest's ignore masks (e.g. WMH label 2): neither lesion nor healthy "
        "in any number, here and in the threshold and healthy splits",
    }


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
    truth = seg if protocol.whole_volume else seg & volumes.mask[sl].to(device)
    return _both(truth, _kept(volumes, sl, device))


def dice_at(
    volumes: SplitVolumes, maps: torch.Tensor, threshold: float, protocol: Protocol
) -> tuple[np.ndarray, np.ndarray]:
    """Per volume: Dice after binarising at ``threshold`` and dropping small components (NaN for
    healthy volumes), and the number of voxels predicted. Ignored voxels leave the prediction after
    the component filter, as the WMH challenge masks a submitted segmentation, and are not counted."""
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
        scored = None if volumes.ignore is None else (~volumes.ignore[sl]).numpy()
        for offset in range(binary_np.shape[0]):
            row = sl.start + offset
            kept = M.remove_small_components(binary_np[offset], protocol.min_component_voxels, protocol.connectivity)
            if scored is not None:
                kept = kept & scored[offset]
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
        kept = _kept(volumes, sl, device)
        result["l1"][sl] = (
            M.mean_abs_inside(volumes.image[sl].to(device), volumes.reconstruction[sl].to(device), _both(mask, kept))
            .cpu()
            .numpy()
        )
        lesion = labels[sl] == 1
        if lesion.any():
            index = torch.as_tensor(np.flatnonzero(lesion), device=device)
            domain = kept if protocol.whole_volume else _both(mask, kept)
            valid = None if domain is None else domain[index]
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
    return slice_auroc_of(*slice_scores(volumes, maps, protocol))


def slice_scores(
    volumes: SplitVolumes, maps: torch.Tensor, protocol: Protocol
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per volume and axial slice ``(B, Z)``: the slice's score, whether it holds lesion, whether it
    holds brain (what :func:`slice_auroc` pools; shards of an evaluation keep these)."""
    device = maps.device
    mask = volumes.mask.to(device)
    # Voxels outside the protocol's domain (and ignored ones) score 0, as outside the brain does.
    kept = _kept(volumes, slice(None), device)
    domain = kept if protocol.whole_volume else _both(mask, kept)
    values = maps if domain is None else torch.where(domain, maps, torch.zeros((), device=device))
    scores = values.amax(dim=(1, 2))  # (B, Z): axial slices are the last axis
    positive = _truth(volumes, slice(0, len(volumes)), device, protocol).any(dim=1).any(dim=1)
    has_brain = mask.any(dim=1).any(dim=1)
    return scores, positive, has_brain


def slice_auroc_of(scores: torch.Tensor, positive: torch.Tensor, has_brain: torch.Tensor) -> float | None:
    """Slice AUROC from :func:`slice_scores` (None when the slices with brain are all one class)."""
    if not bool(positive[has_brain].any()) or bool(positive[has_brain].all()):
        return None
    return M.roc_auc(scores[has_brain], positive[has_brain])
