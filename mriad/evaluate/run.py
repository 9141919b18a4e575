"""The evaluation stage: score maps of a split -> per-subject metrics, a summary and figures.

Reads only what earlier stages wrote: the run's config (manifest path and fold), the manifest's
image / mask / seg files and the split's maps with their records. Writes the split's
``per_subject.csv``, ``summary.json`` and figures atomically, where :class:`RunFolder` says
(CONTRACTS.md).

Which voxels every number counts and how a map is binarised is the evaluation protocol
(:mod:`mriad.evaluate.protocol`: ``reference`` as the pDDPM reference code, ``brain`` inside the brain
mask); the numbers themselves are computed in :mod:`mriad.evaluate.measures` and defined in
docs/evaluation.md. The stage runs threshold -> metrics -> summary -> files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mriad.contracts.manifest import parse_split_name, read_manifest, select_split
from mriad.contracts.run_folder import RunFolder, evaluation_provenance, read_run_config, resolve_manifest, versions
from mriad.evaluate import measures
from mriad.evaluate import metrics as M
from mriad.evaluate.figures import Example, example_grid, lesion_slice, pr_curve
from mriad.evaluate.measures import (
    CSV_COLUMNS,
    EROSION_ITERATIONS,
    MEDIAN_SIZE,
    METRIC_NAMES,
    ClampReport,
    choose_threshold,
    postprocess_split,
    subject_metrics,
)
from mriad.evaluate.protocol import Protocol
from mriad.evaluate.spec import EvalSpec
from mriad.evaluate.summary import EvalSummary, HealthyReference, Stats, nan_to_none
from mriad.evaluate.threshold import ThresholdResult, fpr_thresholds
from mriad.evaluate.volumes import SplitVolumes, load_split, missing_recon, reference_channel, require_recon
from mriad.infra.console import debug, info, warn
from mriad.infra.errors import MriadError
from mriad.infra.io import atomic_write_csv, atomic_write_json, remove_temporaries
from mriad.infra.locking import folder_lock

FPR_RATES = (0.01, 0.05, 0.10)
PR_CURVE_POINTS = 4000  # enough to draw the pooled curve; AUPRC uses every point
# Re-exported: the numbers' functions live in measures.py; bench/evaluate.py and detect import them here.
__all__ = ["CSV_COLUMNS", "EROSION_ITERATIONS", "MEDIAN_SIZE", "choose_threshold", "evaluate", "postprocess_split"]
__all__ += ["splits_to_reconstruct", "subject_metrics"]


def default_val_split(split: str) -> str:
    """The same data set's validation split: ``brats-test`` -> ``brats-val``."""
    dataset, _ = parse_split_name(split)
    return f"{dataset}-val"


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


def _healthy_split_name(inputs: _Inputs, spec: EvalSpec) -> tuple[str | None, str | None]:
    """(the healthy split to use, or None; why none). An explicit ``healthy_split`` is always used;
    the default ``<training dataset>-val`` only when all of its maps exist."""
    if spec.healthy_split is not None:
        return spec.healthy_split, None
    name = f"{inputs.config.get('dataset') or 'ixi'}-val"
    try:
        rows = select_split(inputs.frame, name, inputs.fold)
    except MriadError:
        return None, f"no {name} split in {inputs.manifest}"
    if (rows["label"].astype(int) == 1).any():  # trained on healthy slices of patients (train --healthy-slices-from)
        return None, f"{name} holds lesion subjects: pass a healthy --healthy-split for FPR thresholds"
    if missing_recon(inputs.run.root, name, rows):
        return None, (f"{name} has not been reconstructed: pass --healthy-split {name} to reconstruct and use it")
    return name, None


def splits_to_reconstruct(run: Path, spec: EvalSpec | str, **settings: Any) -> tuple[Path, list[str]]:
    """The manifest and the splits whose maps :func:`evaluate` would read but are (partly) missing.

    `mriad evaluate` runs `mriad.reconstruct` on these first; a Python user calls
    ``mriad.reconstruct.reconstruct(run, split, data=manifest)`` for each, then :func:`evaluate`.
    """
    spec = EvalSpec.of(spec, **settings)
    inputs = _inputs(Path(run).resolve(), spec)
    needed = [spec.split]
    for name in (_val_split_name(spec, inputs.rows), spec.healthy_split):
        if name is not None and name not in needed:
            needed.append(name)
    missing = []
    for name in needed:
        rows = inputs.rows if name == spec.split else select_split(inputs.frame, name, inputs.fold)
        if missing_recon(inputs.run.root, name, rows):
            missing.append(name)
    return inputs.manifest, missing


def evaluate(
    run: Path, spec: EvalSpec | str, /, *, device: str | torch.device = "cpu", **settings: Any
) -> dict[str, Any]:
    """Evaluate a run on a split; write per-subject metrics, the summary and figures; return the summary.

    ``spec`` is an :class:`EvalSpec`, or a split name with the spec's fields as keywords
    (``evaluate(run, "brats-test", protocol="brain")``). The maps must exist (make them with
    `mriad.reconstruct`; `mriad evaluate` does so itself): a split without any is refused, a subject
    without them is a failure.

    Subjects whose files are refused (unreadable, missing maps, empty mask, segmentation with labels
    other than 0/1 or on another grid) are left out, listed in the split's ``failures.csv`` and in the
    summary's ``failures``; the command then exits with 1. The threshold comes from the readable
    validation subjects (their failures are listed too).

    Lesion splits get Dice (at the validation threshold), AUPRC, AUROC and oracle Dice per subject,
    pooled AUPRC, pooled oracle Dice and slice-level AUROC; healthy splits get l1 and the thresholds
    at 1/5/10 % false-positive rate; with a healthy split, lesion splits also get Dice at those.
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
    clamp: ClampReport


@dataclass
class _Scored:
    """What the summary says of the scored volumes besides their numbers (one split, or a split's shards)."""

    subjects: list[str]
    clamp: ClampReport
    ignore: dict[str, Any]

    @classmethod
    def of(cls, test: _SplitMaps) -> _Scored:
        subjects = [str(s) for s in test.volumes.rows["subject_id"]]
        return cls(subjects, test.clamp, measures.ignore_settings(test.volumes))


def _load_maps(
    inputs: _Inputs, split: str, rows: pd.DataFrame, protocol: Protocol, device: torch.device, failures: list
) -> _SplitMaps:
    require_recon(inputs.run.root, split, rows)
    volumes = load_split(inputs.run.root, split, rows, failures=failures)
    scores, clamp = measures.residual_scores(volumes, protocol.clamp)
    return _SplitMaps(volumes, postprocess_split(volumes, device, protocol=protocol, scores=scores), clamp)


def _evaluate(inputs: _Inputs, spec: EvalSpec, device: torch.device) -> EvalSummary:
    """Threshold -> metrics -> summary -> files."""
    protocol = spec.rules
    failures: list[tuple[str, str]] = []
    test = _load_maps(inputs, spec.split, inputs.rows, protocol, device, failures)
    info(f"evaluating {len(test.volumes)} subject(s) of {spec.split} on {device} ({protocol.name} protocol)")
    chosen, val_name = _threshold_step(inputs, spec, test, device, failures)
    table = subject_metrics(test.volumes, test.maps, None if chosen is None else chosen.threshold, protocol=protocol)
    split_level = _split_metrics(test, protocol)
    healthy = _healthy_step(inputs, spec, test, device, failures)
    scored = _Scored.of(test)
    summary = _summarise(inputs, spec, device, scored, chosen, val_name, table, split_level, healthy, failures)

    def examples(path: Path) -> None:
        _examples(path, test.volumes, test.maps, table, chosen, spec.rules)

    _write(inputs.run, spec, summary, table, split_level, failures, examples)
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
    protocol = spec.rules
    if val_name == spec.split:
        val = test
    else:
        val_rows = select_split(inputs.frame, val_name, inputs.fold)
        val = _load_maps(inputs, val_name, val_rows, protocol, device, failures)
    chosen = choose_threshold(val.volumes, val.maps, spec.threshold_search, protocol=protocol)
    debug(f"threshold {chosen.threshold:.6g} ({chosen.method}) reaches Dice {chosen.dice:.4f} on {val_name}")
    return chosen, val_name


@dataclass
class _SplitLevel:
    """Metrics of the split as a whole (pooled voxels or slices), not per subject."""

    curve: M.PRCurve | None
    fpr: dict[str, float] | None
    oracle_dice: float | None
    slice_auroc: float | None


def _split_metrics(test: _SplitMaps, protocol: Protocol) -> _SplitLevel:
    volumes, maps = test.volumes, test.maps
    lesion = volumes.labels == 1
    curve = None
    if lesion.any():
        scores, labels = measures.pooled(volumes, maps, lesion, protocol)
        curve = M.precision_recall_curve(scores, labels, max_points=PR_CURVE_POINTS)
    fpr = None
    if (~lesion).any():
        fpr = fpr_thresholds(measures.healthy_brain_voxels(volumes, maps), FPR_RATES)
    return _SplitLevel(
        curve,
        fpr,
        measures.pooled_oracle_dice(volumes, maps, protocol),
        measures.slice_auroc(volumes, maps, protocol) if lesion.any() else None,
    )


def _healthy_step(
    inputs: _Inputs, spec: EvalSpec, test: _SplitMaps, device: torch.device, failures: list
) -> HealthyReference:
    """FPR thresholds and l1 on a healthy split, and the lesion split's Dice at those thresholds."""
    name, reason = _healthy_split_name(inputs, spec)
    if name is None:
        return HealthyReference(split=None, note=reason)
    protocol = spec.rules
    rows = select_split(inputs.frame, name, inputs.fold)
    healthy = test if name == spec.split else _load_maps(inputs, name, rows, protocol, device, failures)
    reference = _healthy_reference(name, healthy)
    if (test.volumes.labels == 1).any():
        reference.dice_at_fpr = _dice_stats(_dice_at_fpr(test, reference.fpr_thresholds, protocol))
    return reference


def _healthy_reference(name: str, healthy: _SplitMaps) -> HealthyReference:
    """FPR thresholds and l1 of a healthy split's maps (``dice_at_fpr`` is the lesion split's, added later)."""
    if (healthy.volumes.labels == 1).any():
        raise MriadError(f"--healthy-split {name}: holds lesion subjects; choose a healthy split (e.g. ixi-val)")
    thresholds = fpr_thresholds(measures.healthy_brain_voxels(healthy.volumes, healthy.maps), FPR_RATES)
    brain = measures.scored_brain(healthy.volumes)  # less any ignored voxels
    l1 = M.mean_abs_inside(healthy.volumes.image, healthy.volumes.reconstruction, brain)
    return HealthyReference(
        split=name,
        n_subjects=len(healthy.volumes),
        l1=Stats.of(pd.Series(l1.cpu().numpy())),
        fpr_thresholds=thresholds,
    )


def _dice_at_fpr(test: _SplitMaps, thresholds: dict[str, float], protocol: Protocol) -> dict[str, np.ndarray]:
    """Per subject of the lesion split: Dice at each healthy FPR threshold (NaN for healthy subjects)."""
    return {rate: measures.dice_at(test.volumes, test.maps, t, protocol)[0] for rate, t in thresholds.items()}


def _dice_stats(values: dict[str, np.ndarray]) -> dict[str, Stats]:
    return {rate: stats for rate, array in values.items() if (stats := Stats.of(pd.Series(array))) is not None}


def _settings(manifest: Path, device: torch.device | str, protocol: Protocol, clamp: ClampReport) -> dict[str, Any]:
    return {
        "data": str(manifest),
        "device": str(device),
        "protocol": protocol.name,
        "clamp": protocol.clamp,
        "reconstruction_voxels_outside_0_1": clamp.voxels_outside,
        "clamped_maps": clamp.volumes_recomputed,
        "erosion_iterations": measures.EROSION_ITERATIONS,
        "erosion": "2D per axial slice, 4-neighbour cross, border counts as background",
        "median_size": measures.MEDIAN_SIZE,
        "median_boundary": "reflect (scipy default)",
        "median_domain": "whole masked volume" if protocol.whole_volume else "brain mask (uneroded)",
        "domain": protocol.domain,
        "prediction": protocol.prediction,
        "min_component_voxels": protocol.min_component_voxels,
        "connectivity": protocol.connectivity,
        "fpr_voxels": "brain voxels of the healthy volumes",
        "empty_dice": "NaN (both empty), excluded from means",
        "std": "population (ddof=0) over subjects with a value",
    }


def _summarise(
    inputs: _Inputs,
    spec: EvalSpec,
    device: torch.device | str,
    scored: _Scored,
    chosen: ThresholdResult | None,
    val_name: str | None,
    table: pd.DataFrame,
    split_level: _SplitLevel,
    healthy: HealthyReference,
    failures: list[tuple[str, str]],
) -> EvalSummary:
    """The one place the summary is assembled (its schema: :class:`EvalSummary`)."""
    metrics = {name: stats for name in METRIC_NAMES if (stats := Stats.of(table[name])) is not None}
    protocol = spec.rules
    return EvalSummary(
        run=str(inputs.run.root),
        model=_model_name(inputs.config.get("model")),
        fold=inputs.fold,
        split=spec.split,
        protocol=protocol.name,
        val_split=val_name,
        threshold=None if chosen is None else chosen.threshold,
        threshold_search=None if chosen is None else chosen.method,
        threshold_val_dice=None if chosen is None else chosen.dice,
        n_subjects=len(scored.subjects),
        failures=[{"subject_id": subject, "reason": reason} for subject, reason in failures],
        metrics=metrics,
        pooled_auprc=None if split_level.curve is None else nan_to_none(split_level.curve.auprc),
        pooled_oracle_dice=split_level.oracle_dice,
        slice_auroc=split_level.slice_auroc,
        fpr_thresholds=split_level.fpr,
        healthy=healthy,
        settings={**_settings(inputs.manifest, device, protocol, scored.clamp), **scored.ignore},
        versions=versions(),
        provenance=evaluation_provenance(inputs.run.root, inputs.manifest, {spec.split: scored.subjects}),
        outputs={
            "per_subject": str(inputs.run.per_subject(spec.split)),
            "summary": str(inputs.run.summary(spec.split)),
        },
    )


def _write(
    run: RunFolder,
    spec: EvalSpec,
    summary: EvalSummary,
    table: pd.DataFrame,
    split_level: _SplitLevel,
    failures: list[tuple[str, str]],
    examples: Callable[[Path], None],
) -> None:
    """per_subject.csv, failures.csv, figures, then summary.json (last: it names the others);
    ``examples`` draws the example figure at the path it is given."""
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
        examples(figures / "examples.png")
    atomic_write_json(run.summary(spec.split), summary.to_json())


def _examples(
    path: Path,
    volumes: SplitVolumes,
    maps: torch.Tensor,
    table: pd.DataFrame,
    chosen: ThresholdResult | None,
    protocol: Protocol,
    at: dict[int, int] | None = None,
) -> None:
    """Best, median and worst subjects (by Dice, else AUPRC, else lowest l1) at their most lesional slice.

    ``at`` maps a row of ``table`` to its volume in ``volumes`` (default: the same index), so that a
    merge of shards loads only the volumes it draws.
    """
    key, picks = _example_picks(table)
    examples = []
    seen: set[int] = set()
    for tag, row in picks.items():
        if row in seen:
            continue
        seen.add(row)
        b = row if at is None else at[row]
        mask = volumes.mask[b].numpy()
        seg = volumes.seg[b].numpy()
        truth = (seg if protocol.whole_volume else seg & mask) if volumes.labels[b] == 1 else None
        z = lesion_slice(truth, mask)
        anomaly = maps[b].cpu().numpy()
        prediction = None
        if chosen is not None:
            prediction = protocol.predict(anomaly, chosen.threshold, mask)[:, :, z]
        value = table.loc[row, key]
        examples.append(
            Example(
                title=f"{tag}: {table.loc[row, 'subject_id']}\n{key} {value:.3f}, z={z}",
                image=reference_channel(volumes.image)[b, :, :, z].numpy(),
                reconstruction=reference_channel(volumes.reconstruction)[b, :, :, z].numpy(),
                anomaly=anomaly[:, :, z],
                prediction=prediction,
                truth=None if truth is None else truth[:, :, z],
            )
        )
    if examples:
        example_grid(path, examples)


def _example_picks(table: pd.DataFrame) -> tuple[str, dict[str, int]]:
    """The ranking metric and the rows of its best, median and worst subjects ({} when none has a value)."""
    for key, higher_is_better in (("dice", True), ("auprc", True), ("l1", False)):
        ranked = table[key].dropna().sort_values(ascending=not higher_is_better)
        if len(ranked):
            return key, {"best": ranked.index[0], "median": ranked.index[len(ranked) // 2], "worst": ranked.index[-1]}
    return "l1", {}


def summary_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, value) pairs for the terminal table."""
    rows = [(name, f"{s['mean']:.4f} ± {s['std']:.4f} (n={s['n']})") for name, s in summary["metrics"].items()]
    for key, title in (("pooled_auprc", "pooled AUPRC"), ("pooled_oracle_dice", "pooled oracle Dice")):
        if summary.get(key) is not None:
            rows.append((title, f"{summary[key]:.4f}"))
    if summary.get("slice_auroc") is not None:
        rows.append(("slice AUROC", f"{summary['slice_auroc']:.4f}"))
    if summary.get("threshold") is not None:
        extra = f" from {summary['val_split']}" if summary.get("val_split") else ""
        rows.append(("threshold", f"{summary['threshold']:.6g} ({summary['threshold_search']}{extra})"))
    for rate, value in (summary.get("fpr_thresholds") or {}).items():
        rows.append((f"threshold at {rate} FPR", f"{value:.6g}"))
    healthy = summary.get("healthy") or {}
    if healthy.get("split"):
        for rate, stats in (healthy.get("dice_at_fpr") or {}).items():
            rows.append((f"Dice at {rate} FPR of {healthy['split']}", f"{stats['mean']:.4f} ± {stats['std']:.4f}"))
        if healthy.get("l1"):
            rows.append((f"l1 on {healthy['split']}", f"{healthy['l1']['mean']:.4g}"))
    rows.append(("protocol", str(summary.get("protocol"))))
    return rows
