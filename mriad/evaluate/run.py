"""The evaluation stage: score maps of a split -> per-subject metrics, a summary and figures.

Reads only what earlier stages wrote: the run's config (manifest path and fold), the manifest's
image / mask / seg files and the split's maps with their records. Writes the split's
``per_subject.csv``, ``summary.json`` and figures atomically, where :class:`RunFolder` says
(CONTRACTS.md).

Evaluation domain: every metric is computed over the voxels of the (uneroded) brain mask: the
threshold search pools the validation voxels inside the brain, AUPRC/AUROC/oracle Dice rank brain
voxels, and the binary prediction is ``(map >= threshold) & brain`` before small components are
dropped and Dice is taken against ``seg & brain``. Lesion voxels outside the brain mask (none in
preprocessed data) are reported in a warning and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mriad.contracts.manifest import parse_split_name, read_manifest, select_split
from mriad.contracts.run_folder import RunFolder, evaluation_provenance, read_run_config, resolve_manifest, versions
from mriad.evaluate import metrics as M
from mriad.evaluate.figures import Example, example_grid, lesion_slice, pr_curve
from mriad.evaluate.postprocess import postprocess
from mriad.evaluate.spec import EvalSpec
from mriad.evaluate.summary import EvalSummary, Stats, nan_to_none
from mriad.evaluate.threshold import ThresholdResult, find_threshold, fpr_thresholds
from mriad.evaluate.volumes import SplitVolumes, load_split, missing_recon, require_recon, volumes_per_chunk
from mriad.infra.console import debug, info, warn
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
METRIC_NAMES = ("dice", "auprc", "auroc", "oracle_dice", "l1")


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


def _model_name(model: Any) -> Any:
    """The model's name whether the run's config stores a name or a dict describing the model."""
    return model.get("name", model) if isinstance(model, dict) else model


@dataclass
class _Inputs:
    """What an evaluation reads besides the maps: the run, its manifest rows and fold."""

    run: RunFolder
    config: dict[str, Any]
    manifest: Path
    frame: pd.DataFrame
    fold: int
    rows: pd.DataFrame


def _inputs(run: Path, spec: EvalSpec) -> _Inputs:
    config = read_run_config(run)
    manifest = resolve_manifest(run, config, spec.data)
    frame = read_manifest(manifest)
    fold = spec.fold if spec.fold is not None else config.get("fold")
    fold = int(fold if fold is not None else 0)
    return _Inputs(RunFolder(run), config, manifest, frame, fold, select_split(frame, spec.split, fold))


def _val_split_name(spec: EvalSpec, rows: pd.DataFrame) -> str | None:
    """The split the threshold is searched on; None when none is needed (fixed, or a healthy split)."""
    has_lesions = bool((rows["label"].astype(int) == 1).any())
    if spec.threshold is not None or not (has_lesions or spec.val_split is not None):
        return None
    return spec.val_split or default_val_split(spec.split)


def splits_to_reconstruct(run: Path, spec: EvalSpec | str, **settings: Any) -> tuple[Path, list[str]]:
    """The manifest and the splits whose maps :func:`evaluate` would read but are (partly) missing.

    `mriad evaluate` runs `mriad.reconstruct` on these first; a Python user calls
    ``mriad.reconstruct.reconstruct(run, split, data=manifest)`` for each, then :func:`evaluate`.
    """
    spec = EvalSpec.of(spec, **settings)
    inputs = _inputs(Path(run).resolve(), spec)
    needed = [(spec.split, inputs.rows)]
    val_name = _val_split_name(spec, inputs.rows)
    if val_name is not None and val_name != spec.split:
        needed.append((val_name, select_split(inputs.frame, val_name, inputs.fold)))
    return inputs.manifest, [name for name, rows in needed if missing_recon(inputs.run.root, name, rows)]


def evaluate(
    run: Path, spec: EvalSpec | str, /, *, device: str | torch.device = "cpu", **settings: Any
) -> dict[str, Any]:
    """Evaluate a run on a split; write per-subject metrics, the summary and figures; return the summary.

    ``spec`` is an :class:`EvalSpec`, or a split name with the spec's fields as keywords
    (``evaluate(run, "brats-test", threshold_search="bisection")``). The maps must exist (make them
    with `mriad.reconstruct`; `mriad evaluate` does so itself): a split without any is refused, a
    subject without them is a failure.

    Subjects whose files are refused (unreadable, missing maps, empty mask, segmentation with labels
    other than 0/1 or on another grid) are left out, listed in the split's ``failures.csv`` and in the
    summary's ``failures``; the command then exits with 1. The threshold comes from the readable
    validation subjects (their failures are listed too).

    Lesion splits get Dice (at the validation threshold), AUPRC, AUROC and oracle Dice; healthy
    splits get l1 and the thresholds at 1/5/10 % false-positive rate.
    """
    spec = EvalSpec.of(spec, **settings)
    run = Path(run).resolve()
    folder = RunFolder(run)
    read_run_config(run)
    # One writer per evaluation folder: a second evaluation of the same split is refused, not interleaved.
    with folder_lock(folder.eval_dir(spec.split), f"evaluate {spec.split}"):
        remove_temporaries(folder.figures(spec.split))  # a killed run's half-drawn figures
        return _evaluate(_inputs(run, spec), spec, torch.device(device)).to_json()


@dataclass
class _SplitMaps:
    volumes: SplitVolumes
    maps: torch.Tensor


def _load_maps(inputs: _Inputs, split: str, rows: pd.DataFrame, device: torch.device, failures: list) -> _SplitMaps:
    require_recon(inputs.run.root, split, rows)
    volumes = load_split(inputs.run.root, split, rows, failures=failures)
    return _SplitMaps(volumes, postprocess_split(volumes, device))


def _evaluate(inputs: _Inputs, spec: EvalSpec, device: torch.device) -> EvalSummary:
    """Threshold -> metrics -> summary -> files."""
    failures: list[tuple[str, str]] = []
    test = _load_maps(inputs, spec.split, inputs.rows, device, failures)
    info(f"evaluating {len(test.volumes)} subject(s) of {spec.split} on {device}")
    chosen, val_name = _threshold_step(inputs, spec, test, device, failures)
    table = subject_metrics(test.volumes, test.maps, None if chosen is None else chosen.threshold)
    split_level = _split_metrics(test)
    summary = _summarise(inputs, spec, device, test, chosen, val_name, table, split_level, failures)
    _write(inputs.run, spec, summary, test, table, chosen, split_level, failures)
    return summary


def _threshold_step(
    inputs: _Inputs, spec: EvalSpec, test: _SplitMaps, device: torch.device, failures: list
) -> tuple[ThresholdResult | None, str | None]:
    """The binarisation threshold: fixed, or Dice-maximising on the pooled validation voxels."""
    if spec.threshold is not None:
        return ThresholdResult(float(spec.threshold), float("nan"), "fixed"), None
    has_lesions = bool((test.volumes.labels == 1).any())
    if not (has_lesions or spec.val_split is not None):
        return None, None
    val_name = spec.val_split or default_val_split(spec.split)
    if val_name == spec.split:
        val = test
    else:
        val = _load_maps(inputs, val_name, select_split(inputs.frame, val_name, inputs.fold), device, failures)
    chosen = choose_threshold(val.volumes, val.maps, spec.threshold_search)
    debug(f"threshold {chosen.threshold:.6g} ({chosen.method}) reaches Dice {chosen.dice:.4f} on {val_name}")
    return chosen, val_name


@dataclass
class _SplitLevel:
    """Metrics of the split as a whole (pooled voxels), not per subject."""

    curve: M.PRCurve | None
    fpr: dict[str, float] | None


def _split_metrics(test: _SplitMaps) -> _SplitLevel:
    lesion = test.volumes.labels == 1
    curve = None
    if lesion.any():
        curve = M.precision_recall_curve(*_pooled(test.volumes, test.maps, lesion), max_points=PR_CURVE_POINTS)
    fpr = None
    if (~lesion).any():
        fpr = fpr_thresholds(_pooled(test.volumes, test.maps, ~lesion)[0], FPR_RATES)
    return _SplitLevel(curve, fpr)


def _settings(manifest: Path, device: torch.device) -> dict[str, Any]:
    return {
        "data": str(manifest),
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
    }


def _summarise(
    inputs: _Inputs,
    spec: EvalSpec,
    device: torch.device,
    test: _SplitMaps,
    chosen: ThresholdResult | None,
    val_name: str | None,
    table: pd.DataFrame,
    split_level: _SplitLevel,
    failures: list[tuple[str, str]],
) -> EvalSummary:
    """The one place the summary is assembled (its schema: :class:`EvalSummary`)."""
    metrics = {name: stats for name in METRIC_NAMES if (stats := Stats.of(table[name])) is not None}
    return EvalSummary(
        run=str(inputs.run.root),
        model=_model_name(inputs.config.get("model")),
        fold=inputs.fold,
        split=spec.split,
        val_split=val_name,
        threshold=None if chosen is None else chosen.threshold,
        threshold_search=None if chosen is None else chosen.method,
        threshold_val_dice=None if chosen is None else chosen.dice,
        n_subjects=len(test.volumes),
        failures=[{"subject_id": subject, "reason": reason} for subject, reason in failures],
        metrics=metrics,
        pooled_auprc=None if split_level.curve is None else nan_to_none(split_level.curve.auprc),
        fpr_thresholds=split_level.fpr,
        settings=_settings(inputs.manifest, device),
        versions=versions(),
        provenance=evaluation_provenance(
            inputs.run.root, inputs.manifest, {spec.split: [str(s) for s in test.volumes.rows["subject_id"]]}
        ),
        outputs={
            "per_subject": str(inputs.run.per_subject(spec.split)),
            "summary": str(inputs.run.summary(spec.split)),
        },
    )


def _write(
    run: RunFolder,
    spec: EvalSpec,
    summary: EvalSummary,
    test: _SplitMaps,
    table: pd.DataFrame,
    chosen: ThresholdResult | None,
    split_level: _SplitLevel,
    failures: list[tuple[str, str]],
) -> None:
    """per_subject.csv, failures.csv, figures, then summary.json (last: it names the others)."""
    atomic_write_csv(run.per_subject(spec.split), table)
    failures_csv = run.eval_failures(spec.split)
    if failures:
        atomic_write_csv(failures_csv, pd.DataFrame(failures, columns=["subject_id", "reason"]))
        summary.outputs["failures"] = str(failures_csv)
        for subject, reason in failures:
            warn(f"{subject}: {reason}")
    else:
        failures_csv.unlink(missing_ok=True)  # an earlier run's failures are fixed now
    if spec.figures:
        figures = run.figures(spec.split)
        curve = split_level.curve
        if curve is not None and summary.pooled_auprc is not None:
            pr_curve(figures / "pr_curve.png", curve.precision, curve.recall, summary.pooled_auprc, title=spec.split)
        summary.outputs["figures"] = str(figures)
        _examples(figures / "examples.png", test.volumes, test.maps, table, chosen)
    atomic_write_json(run.summary(spec.split), summary.to_json())


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
