"""The evaluation stage: score maps of a split -> per-subject metrics, a summary and figures.

Reads only what earlier stages wrote: the run's ``config.json`` (manifest path and fold), the
manifest's image / mask / seg files and ``run/recon/<split>/<subject>_{rec,score}.nii.gz``. Writes
``run/eval/<split>/{per_subject.csv, summary.json, figures/}`` atomically (CONTRACTS.md).

Evaluation domain: every metric is computed over the voxels of the (uneroded) brain mask: the
threshold search pools the validation voxels inside the brain, AUPRC/AUROC/oracle Dice rank brain
voxels, and the binary prediction is ``(map >= threshold) & brain`` before small components are
dropped and Dice is taken against ``seg & brain``. Lesion voxels outside the brain mask (none in
preprocessed data) are reported in a warning and ignored.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mriad.contracts.manifest import parse_split_name, read_manifest, select_split
from mriad.contracts.run_folder import read_run_config, resolve_manifest
from mriad.evaluate import metrics as M
from mriad.evaluate.figures import Example, example_grid, lesion_slice, pr_curve
from mriad.evaluate.postprocess import postprocess
from mriad.evaluate.threshold import SEARCHES, ThresholdResult, find_threshold, fpr_thresholds
from mriad.evaluate.volumes import SplitVolumes, ensure_recon, load_split, volumes_per_chunk
from mriad.infra.console import debug, info, warn
from mriad.infra.errors import MriadError
from mriad.infra.io import atomic_write_csv, atomic_write_json, remove_temporaries
from mriad.infra.locking import folder_lock

EROSION_ITERATIONS = 3
MEDIAN_SIZE = 5
FPR_RATES = (0.01, 0.05, 0.10)
PR_CURVE_POINTS = 4000  # enough to draw the pooled curve; AUPRC uses every point
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
]


def default_val_split(split: str) -> str:
    """The same data set's validation split: ``brats-test`` -> ``brats-val``."""
    dataset, _ = parse_split_name(split)
    return f"{dataset}-val"


def postprocess_split(volumes: SplitVolumes, device: torch.device) -> torch.Tensor:
    """Post-processed anomaly maps of a whole split, kept on ``device`` as ``(B, X, Y, Z)``."""
    chunk = volumes_per_chunk(int(volumes.score[0].numel()), device)
    maps = torch.empty(volumes.score.shape, dtype=torch.float32, device=device)
    for start in range(0, len(volumes), chunk):
        sl = slice(start, start + chunk)
        maps[sl] = postprocess(
            volumes.score[sl].to(device),
            volumes.mask[sl].to(device),
            erosion_iterations=EROSION_ITERATIONS,
            median_size=MEDIAN_SIZE,
        )
    return maps


def _pooled(volumes: SplitVolumes, maps: torch.Tensor, which: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Brain voxels of the selected volumes, concatenated: (scores, lesion labels) on the device."""
    index = torch.as_tensor(np.flatnonzero(which), device=maps.device)
    mask = volumes.mask.to(maps.device)[index]
    return maps[index][mask], volumes.seg.to(maps.device)[index][mask]


def choose_threshold(volumes: SplitVolumes, maps: torch.Tensor, method: str) -> ThresholdResult:
    """The Dice-maximising threshold over the pooled brain voxels of the validation volumes."""
    scores, labels = _pooled(volumes, maps, np.ones(len(volumes), dtype=bool))
    return find_threshold(scores, labels, method)


def subject_metrics(volumes: SplitVolumes, maps: torch.Tensor, threshold: float | None) -> pd.DataFrame:
    """One row per subject with the columns of ``per_subject.csv``."""
    device = maps.device
    count = len(volumes)
    result = {name: np.full(count, np.nan) for name in ("dice", "auprc", "auroc", "oracle_dice", "l1")}
    lesion_voxels = np.zeros(count, dtype=np.int64)
    predicted = pd.array([pd.NA] * count, dtype="Int64")
    labels = volumes.labels
    chunk = volumes_per_chunk(int(maps[0].numel()), device)
    outside = 0
    for start in range(0, count, chunk):
        sl = slice(start, min(start + chunk, count))
        mask = volumes.mask[sl].to(device)
        seg = volumes.seg[sl].to(device)
        outside += int((seg & ~mask).sum())
        truth = seg & mask
        lesion_voxels[sl] = truth.flatten(1).sum(1).cpu().numpy()
        result["l1"][sl] = (
            M.mean_abs_inside(volumes.image[sl].to(device), volumes.reconstruction[sl].to(device), mask).cpu().numpy()
        )
        lesion = labels[sl] == 1
        if lesion.any():
            index = torch.as_tensor(np.flatnonzero(lesion), device=device)
            ranked = M.ranking_metrics(maps[sl][index], truth[index], mask[index])
            rows = np.arange(sl.start, sl.stop)[lesion]
            result["auprc"][rows] = ranked.auprc.cpu().numpy()
            result["auroc"][rows] = ranked.auroc.cpu().numpy()
            result["oracle_dice"][rows] = ranked.oracle_dice.cpu().numpy()
        if threshold is not None:
            binary = ((maps[sl] >= threshold) & mask).cpu().numpy()
            truth_np = truth.cpu().numpy()
            for offset in range(binary.shape[0]):
                row = sl.start + offset
                kept = M.remove_small_components(binary[offset])
                predicted[row] = int(kept.sum())
                if labels[row] == 1:
                    result["dice"][row] = M.dice_score(kept, truth_np[offset])
    if outside:
        warn(f"{outside} lesion voxel(s) lie outside the brain masks and are ignored by the metrics")
    frame = pd.DataFrame(
        {
            "subject_id": volumes.rows["subject_id"].astype(str),
            "dataset": volumes.rows["dataset"].astype(str),
            "label": labels,
            **result,
            "lesion_voxels": pd.array(lesion_voxels, dtype="Int64"),
            "predicted_voxels": predicted,
        }
    )
    return frame[CSV_COLUMNS]


def _stats(values: pd.Series) -> dict[str, Any] | None:
    finite = values.dropna().to_numpy(dtype=float)
    if finite.size == 0:
        return None
    return {"mean": float(finite.mean()), "std": float(finite.std()), "n": int(finite.size)}


def _versions() -> dict[str, str]:
    import scipy

    from mriad import __version__

    return {"mriad": __version__, "torch": torch.__version__, "numpy": np.__version__, "scipy": scipy.__version__}


def _model_name(model: Any) -> Any:
    """The model's name whether config.json stores a name or a dict describing the model."""
    return model.get("name", model) if isinstance(model, dict) else model


def _nan_to_none(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def evaluate(
    run: Path,
    split: str,
    *,
    data: Path | None = None,
    val_split: str | None = None,
    fold: int | None = None,
    threshold: float | None = None,
    threshold_search: str = "exact",
    device: str | torch.device = "cpu",
    make_missing: Callable | None = None,
    figures: bool = True,
) -> dict[str, Any]:
    """Evaluate a run on a split; write per-subject metrics, the summary and figures; return the summary.

    Subjects whose files are refused (unreadable, empty mask, segmentation with labels other than 0/1
    or on another grid) are left out, listed in ``eval/<split>/failures.csv`` and in the summary's
    ``failures``; the command then exits with 1. The threshold comes from the readable validation
    subjects (their failures are listed too).

    Lesion splits get Dice (at the validation threshold), AUPRC, AUROC and oracle Dice; healthy
    splits get l1 and the thresholds at 1/5/10 % false-positive rate. ``make_missing(run, split,
    data=..., device=...)`` produces absent reconstructions (default: `mriad.reconstruct`).
    """
    run = Path(run).resolve()
    if threshold_search not in SEARCHES:
        raise MriadError(f"--threshold-search {threshold_search!r}: expected one of {', '.join(SEARCHES)}")
    config = read_run_config(run)
    parse_split_name(split)
    # One writer per eval/<split>: a second evaluation of the same split is refused, not interleaved.
    with folder_lock(run / "eval" / split, f"evaluate {split}"):
        remove_temporaries(run / "eval" / split / "figures")  # a killed run's half-drawn figures
        return _evaluate(
            run, split, config, data=data, val_split=val_split, fold=fold, threshold=threshold,
            threshold_search=threshold_search, device=torch.device(device), make_missing=make_missing,
            figures=figures,
        )


def _evaluate(
    run: Path,
    split: str,
    config: dict[str, Any],
    *,
    data: Path | None,
    val_split: str | None,
    fold: int | None,
    threshold: float | None,
    threshold_search: str,
    device: torch.device,
    make_missing: Callable | None,
    figures: bool,
) -> dict[str, Any]:
    manifest_path = resolve_manifest(run, config, data)
    frame = read_manifest(manifest_path)
    fold = int(fold if fold is not None else (config.get("fold") if config.get("fold") is not None else 0))

    rows = select_split(frame, split, fold)
    ensure_recon(run, split, rows, data=manifest_path, device=str(device), make_missing=make_missing)
    failures: list[tuple[str, str]] = []
    volumes = load_split(run, split, rows, failures=failures)
    info(f"evaluating {len(volumes)} subject(s) of {split} on {device}")
    maps = postprocess_split(volumes, device)
    has_lesions = bool((volumes.labels == 1).any())

    chosen: ThresholdResult | None = None
    val_name: str | None = None
    if threshold is not None:
        chosen = ThresholdResult(float(threshold), float("nan"), "fixed")
    elif has_lesions or val_split is not None:
        val_name = val_split or default_val_split(split)
        if val_name == split:
            val_volumes, val_maps = volumes, maps
        else:
            val_rows = select_split(frame, val_name, fold)
            ensure_recon(run, val_name, val_rows, data=manifest_path, device=str(device), make_missing=make_missing)
            val_volumes = load_split(run, val_name, val_rows, failures=failures)
            val_maps = postprocess_split(val_volumes, device)
        chosen = choose_threshold(val_volumes, val_maps, threshold_search)
        debug(f"threshold {chosen.threshold:.6g} ({chosen.method}) reaches Dice {chosen.dice:.4f} on {val_name}")
        del val_maps

    table = subject_metrics(volumes, maps, None if chosen is None else chosen.threshold)
    lesion = volumes.labels == 1
    healthy = ~lesion
    pooled_auprc = None
    out = run / "eval" / split
    if lesion.any():
        curve = M.precision_recall_curve(*_pooled(volumes, maps, lesion), max_points=PR_CURVE_POINTS)
        pooled_auprc = _nan_to_none(curve.auprc)
        if figures and pooled_auprc is not None:
            pr_curve(out / "figures" / "pr_curve.png", curve.precision, curve.recall, pooled_auprc, title=split)
    fpr = None
    if healthy.any():
        fpr = fpr_thresholds(_pooled(volumes, maps, healthy)[0], FPR_RATES)

    summary: dict[str, Any] = {
        "run": str(run),
        "model": _model_name(config.get("model")),
        "fold": fold,
        "split": split,
        "val_split": val_name,
        "threshold": None if chosen is None else chosen.threshold,
        "threshold_search": None if chosen is None else chosen.method,
        "threshold_val_dice": None if chosen is None else _nan_to_none(chosen.dice),
        "n_subjects": len(volumes),
        "failures": [{"subject_id": subject, "reason": reason} for subject, reason in failures],
        "metrics": {
            name: stats
            for name in ("dice", "auprc", "auroc", "oracle_dice", "l1")
            if (stats := _stats(table[name])) is not None
        },
        "pooled_auprc": pooled_auprc,
        "fpr_thresholds": fpr,
        "settings": {
            "data": str(manifest_path),
            "device": str(device),
            "erosion_iterations": EROSION_ITERATIONS,
            "erosion": "2D per axial slice, 4-neighbour cross, border counts as background",
            "median_size": MEDIAN_SIZE,
            "median_boundary": "reflect (scipy default)",
            "domain": "brain mask (uneroded)",
            "prediction": "score >= threshold, inside the brain mask",
            "min_component_voxels": M.MIN_COMPONENT_VOXELS,
            "connectivity": M.CONNECTIVITY,
            "empty_dice": "NaN (both empty), excluded from means",
            "std": "population (ddof=0) over subjects with a value",
        },
        "versions": _versions(),
        "outputs": {"per_subject": str(out / "per_subject.csv"), "summary": str(out / "summary.json")},
    }
    atomic_write_csv(out / "per_subject.csv", table)
    failures_csv = out / "failures.csv"
    if failures:
        atomic_write_csv(failures_csv, pd.DataFrame(failures, columns=["subject_id", "reason"]))
        summary["outputs"]["failures"] = str(failures_csv)
        for subject, reason in failures:
            warn(f"{subject}: {reason}")
    else:
        failures_csv.unlink(missing_ok=True)  # an earlier run's failures are fixed now
    if figures:
        summary["outputs"]["figures"] = str(out / "figures")
        _examples(out / "figures" / "examples.png", volumes, maps, table, chosen)
    atomic_write_json(out / "summary.json", summary)
    return summary


def _examples(
    path: Path, volumes: SplitVolumes, maps: torch.Tensor, table: pd.DataFrame, chosen: ThresholdResult | None
) -> None:
    """Best, median and worst subjects (by Dice, else AUPRC, else lowest l1) at their most lesional slice."""
    for key, higher_is_better in (("dice", True), ("auprc", True), ("l1", False)):
        ranked = table[key].dropna().sort_values(ascending=not higher_is_better)
        if len(ranked):
            break
    if not len(ranked):
        return
    picks = {"best": ranked.index[0], "median": ranked.index[len(ranked) // 2], "worst": ranked.index[-1]}
    examples = []
    seen: set[int] = set()
    for tag, row in picks.items():
        if row in seen:
            continue
        seen.add(row)
        mask = volumes.mask[row].numpy()
        truth = volumes.seg[row].numpy() & mask if volumes.labels[row] == 1 else None
        z = lesion_slice(truth, mask)
        anomaly = maps[row].cpu().numpy()
        prediction = None
        if chosen is not None:
            prediction = M.remove_small_components((anomaly >= chosen.threshold) & mask)[:, :, z]
        value = table.loc[row, key]
        examples.append(
            Example(
                title=f"{tag}: {table.loc[row, 'subject_id']}\n{key} {value:.3f}, z={z}",
                image=volumes.image[row, :, :, z].numpy(),
                reconstruction=volumes.reconstruction[row, :, :, z].numpy(),
                anomaly=anomaly[:, :, z],
                prediction=prediction,
                truth=None if truth is None else truth[:, :, z],
            )
        )
    example_grid(path, examples)


def summary_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, value) pairs for the terminal table."""
    rows = [(name, f"{s['mean']:.4f} ± {s['std']:.4f} (n={s['n']})") for name, s in summary["metrics"].items()]
    if summary.get("pooled_auprc") is not None:
        rows.append(("pooled AUPRC", f"{summary['pooled_auprc']:.4f}"))
    if summary.get("threshold") is not None:
        extra = f" from {summary['val_split']}" if summary.get("val_split") else ""
        rows.append(("threshold", f"{summary['threshold']:.6g} ({summary['threshold_search']}{extra})"))
    for rate, value in (summary.get("fpr_thresholds") or {}).items():
        rows.append((f"threshold at {rate} FPR", f"{value:.6g}"))
    return rows
