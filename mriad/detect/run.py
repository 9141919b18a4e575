"""`mriad detect`: a trained model applied to new scans, with the results on each scan's own grid.

Per scan: preprocess (into ``DIR/preprocessed/<scan>/``, with the settings the model's training data
was made with), reconstruct and score on the 96x96x50 grid, post-process and binarise exactly as
``evaluate`` does (eroded mask, median 5, ``>= threshold`` inside the brain, components under 7 voxels
dropped), then map the score (linear) and the lesion mask (nearest) back through the subject's
``transform.json`` onto the scan's own voxels. Outputs per scan, in ``DIR``:
``<scan>_anomaly.nii.gz`` (float32), ``<scan>_lesion.nii.gz`` (uint8), both with the scan's shape and
affine, ``<scan>_summary.json`` and ``<scan>_overview.png`` (and ``<scan>_viewer.html``). One bad scan
is listed in ``DIR/failures.csv`` and never stops the others.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mriad.detect.source import ModelSource, from_bundle, from_run
from mriad.evaluate.protocol import DEFAULT_PROTOCOL, Protocol
from mriad.infra.console import info, track, warn
from mriad.infra.errors import MriadError
from mriad.preprocess.datasets import Problem, Subject
from mriad.preprocess.subject import Options

PREPROCESSED = "preprocessed"
FAILURES = "failures.csv"
BATCH_SUMMARY = "detect.json"
SUFFIXES = {
    "anomaly": "_anomaly.nii.gz",
    "lesion": "_lesion.nii.gz",
    "summary": "_summary.json",
    "overview": "_overview.png",
    "viewer": "_viewer.html",
}
PREPROCESS_OPTIONS = ("modality", "skull_strip", "registration", "n4")


@dataclass(frozen=True)
class DetectSettings:
    """Everything that decides a scan's outputs besides the scan and the model."""

    options: Options
    origin: dict[str, str]  # per preprocessing option: "training data", "command line", "preprocess default"
    threshold: float
    threshold_source: dict[str, Any]
    seed: int
    device: str
    viewer: bool = True
    protocol: str = DEFAULT_PROTOCOL  # how evaluate binarised at this threshold (mriad.evaluate.protocol)
    clamp: bool | None = None  # None: the protocol's default

    def rules(self) -> Protocol:
        """The evaluation protocol, with the recorded ``clamp`` applied."""
        from dataclasses import replace

        from mriad.evaluate.protocol import get_protocol

        protocol = get_protocol(self.protocol)
        return protocol if self.clamp is None else replace(protocol, clamp=bool(self.clamp))


@dataclass
class DetectResult:
    out: Path
    summaries: list[dict[str, Any]] = field(default_factory=list)
    failures: list[Problem] = field(default_factory=list)
    failures_csv: Path | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures


def output_paths(out: Path, name: str) -> dict[str, Path]:
    from mriad.infra.paths import check_identifier, child

    check_identifier(name, "scan name")
    return {key: child(out, name + suffix) for key, suffix in SUFFIXES.items()}


def preprocessing_options(
    recorded: dict[str, Any] | None, overrides: dict[str, Any], device: str
) -> tuple[Options, dict[str, str]]:
    """The training data's recorded options, else preprocess's defaults; command-line values win."""
    from mriad.preprocess.subject import PIPELINE_REVISION

    defaults = Options()
    values: dict[str, Any] = {key: getattr(defaults, key) for key in PREPROCESS_OPTIONS}
    origin = dict.fromkeys(PREPROCESS_OPTIONS, "preprocess default")
    for key in PREPROCESS_OPTIONS:
        if recorded and key in recorded:
            values[key], origin[key] = recorded[key], "training data"
        if overrides.get(key) is not None:
            values[key], origin[key] = overrides[key], "command line"
    if recorded and recorded.get("revision") not in (None, PIPELINE_REVISION):
        warn(
            f"the training data was preprocessed by pipeline revision {recorded.get('revision')}; new scans get "
            f"revision {PIPELINE_REVISION} (re-preprocess the training data to match exactly)"
        )
    values["modality"] = str(values["modality"]).lower()
    return Options(dataset="generic", qc=False, device=device, **values), origin


def choose_threshold(source: ModelSource, threshold: float | None, val_split: str | None) -> tuple[float, dict]:
    """The threshold and where it came from, with the evaluation protocol it belongs to (a fixed
    ``--threshold`` follows the protocol of the run's calibration, else the default protocol)."""
    if threshold is not None:
        calibrated = source.thresholds.get(val_split) if val_split else None
        if calibrated is None and len(source.thresholds) == 1:
            calibrated = next(iter(source.thresholds.values()))
        protocol = (calibrated or {}).get("protocol") or DEFAULT_PROTOCOL
        return float(threshold), {
            "method": "fixed (--threshold)",
            "protocol": protocol,
            "clamp": (calibrated or {}).get("clamp"),
        }
    found = source.threshold(val_split)
    if found is None:
        raise MriadError(
            f"{source.path}: no calibrated threshold (run `mriad evaluate` on a lesion split first, "
            "which calibrates one on its validation split), or pass --threshold"
        )
    return found


def detect(
    scans: list[Path],
    out: Path,
    *,
    run: Path | None = None,
    bundle: Path | None = None,
    which: str = "best",
    threshold: float | None = None,
    val_split: str | None = None,
    preprocess: dict[str, Any] | None = None,
    device: str = "cpu",
    seed: int = 0,
    viewer: bool = True,
) -> DetectResult:
    """Detect anomalies in ``scans`` (files, folders, BIDS data sets, CSVs) with a run or a bundle.

    ``preprocess``: preprocess's options by name (modality, skull_strip, registration, n4); None values
    keep the training data's recorded settings. Never raises for one bad scan: see ``result.failures``.
    """
    from mriad.detect.inputs import find_scans
    from mriad.infra.locking import folder_lock

    start = time.perf_counter()
    if (run is None) == (bundle is None):
        raise MriadError("give exactly one of --run RUN and --bundle FILE")
    out = Path(out)
    _check_out(out, scans)
    source = from_run(run, which) if run is not None else from_bundle(bundle)  # type: ignore[arg-type]
    value, threshold_source = choose_threshold(source, threshold, val_split)
    options, origin = preprocessing_options(source.preprocessing, preprocess or {}, device)
    settings = DetectSettings(
        options,
        origin,
        value,
        threshold_source,
        seed,
        device,
        viewer,
        protocol=str(threshold_source.get("protocol") or DEFAULT_PROTOCOL),
        clamp=threshold_source.get("clamp"),
    )
    info(
        f"model {source.model_name} from {source.kind} {source.path}; threshold {value:.6g} "
        f"({threshold_source.get('val_split') or threshold_source.get('method')})"
    )
    info(
        "preprocessing: "
        + ", ".join(f"{k.replace('_', '-')} {getattr(options, k)} ({origin[k]})" for k in PREPROCESS_OPTIONS)
    )
    subjects, problems = find_scans([Path(p) for p in scans], options.modality)
    if not subjects and not problems:
        raise MriadError(f"{', '.join(map(str, scans))}: no NIfTI scans found")
    result = DetectResult(out=out, failures=list(problems))
    with folder_lock(out, "detect"):
        model = source.build(torch.device(device)) if subjects else None
        if model is not None and int(model.config.get("in_channels", 1)) > 1:  # detect reads one scan per subject
            raise MriadError(
                f"{source.path}: model {source.model_name} takes {model.config['in_channels']} channels; "
                "detect scores single-modality scans only (use preprocess --modality LIST + reconstruct/evaluate)"
            )
        for subject in track(subjects, total=len(subjects), description="detect", unit="scan"):
            try:
                result.summaries.append(detect_one(subject, model, source, settings, out))
            except Exception as exc:  # one bad scan never stops the others
                result.failures.append(_problem(subject, exc))
        result.failures_csv = _write_batch(out, result, source, settings)
    result.seconds = round(time.perf_counter() - start, 3)
    return result


def _check_out(out: Path, scans: list[Path]) -> None:
    """Refuse an output folder inside an input folder: outputs would be found as inputs next time."""
    target = out.resolve()
    for scan in scans:
        folder = Path(scan).resolve()
        if folder.is_dir() and (target == folder or target.is_relative_to(folder)):
            raise MriadError(f"{out}: the output folder may not be inside the input folder {scan}")


def _problem(subject: Subject, exc: BaseException) -> Problem:
    from mriad.infra.errors import InputError

    if isinstance(exc, InputError):
        return Problem(subject.subject_id, exc.path, str(exc))
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return Problem(
        subject.subject_id, str(subject.image), f"{subject.image}: {type(exc).__name__}" + (f": {text}" if text else "")
    )


def _write_batch(out: Path, result: DetectResult, source: ModelSource, settings: DetectSettings) -> Path:
    from mriad.infra.io import atomic_write_csv, atomic_write_json

    frame = pd.DataFrame(
        [{"subject": p.subject, "file": p.file, "reason": p.reason} for p in result.failures],
        columns=["subject", "file", "reason"],
    )
    failures_csv = atomic_write_csv(out / FAILURES, frame)
    atomic_write_json(
        out / BATCH_SUMMARY,
        {
            "model": source.model_name,
            "source": {"kind": source.kind, "path": str(source.path)},
            "threshold": settings.threshold,
            "threshold_source": settings.threshold_source,
            "scans": [{"subject_id": s["subject_id"], **s["outputs"]} for s in result.summaries],
            "failures": [{"subject": p.subject, "reason": p.reason} for p in result.failures],
        },
    )
    for problem in result.failures:
        warn(f"failed: {problem.reason}")
    return failures_csv


def preprocess_scan(subject: Subject, out: Path, options: Options) -> Path:
    """The scan on the final grid in ``DIR/preprocessed/<scan>/``; a finished folder made with the same
    options is reused (checksums verified), as a rerun of ``preprocess`` would."""
    from mriad.infra.paths import child
    from mriad.preprocess.pipeline import completed, process_subject

    folder = child(out, PREPROCESSED, subject.subject_id)
    if completed(subject, folder, options) is None:
        process_subject(subject, folder, options)
    return folder


def score_volume(
    model: Any, image: np.ndarray, mask: np.ndarray, device: torch.device, seed: int, clamp: bool = False
) -> np.ndarray:
    """The model's anomaly score of one final-grid volume, as the reconstruct stage computes it for a
    group of one volume seeded with ``seed`` (boxes without brain skipped when the model can), and as
    ``evaluate --clamp`` uses it: a plain residual is recomputed from the reconstruction clipped to [0, 1]."""
    from mriad.contracts.data import slices_to_volume, volume_to_slices

    x = volume_to_slices(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)))[None].to(device)
    brain = None
    if getattr(model, "accepts_mask", False):
        brain = volume_to_slices(torch.from_numpy(np.ascontiguousarray(mask, dtype=bool)))[None].to(device)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    with torch.inference_mode():
        x_hat, score = model.score_volumes(x, generator, mask=brain)
        x_hat, score = x_hat.float(), score.float()
        outside = bool(((x_hat < 0) | (x_hat > 1)).any())
        if clamp and outside and torch.equal((x - x_hat).abs(), score):
            score = (x - x_hat.clamp(0, 1)).abs()
    return slices_to_volume(score[0].cpu()).numpy()


def detect_one(subject: Subject, model: Any, source: ModelSource, settings: DetectSettings, out: Path) -> dict:
    """Detect in one scan; writes its outputs and returns its summary."""
    from mriad.detect.outputs import write_scan_outputs
    from mriad.evaluate.measures import EROSION_ITERATIONS, MEDIAN_SIZE
    from mriad.evaluate.postprocess import postprocess
    from mriad.infra.io import read_nifti
    from mriad.preprocess.transform import read_transform, to_native

    paths = output_paths(out, subject.subject_id)
    folder = preprocess_scan(subject, out, settings.options)
    transform = read_transform(folder)
    image = read_nifti(folder / "image.nii.gz").data
    mask = read_nifti(folder / "mask.nii.gz", allow_empty=True).data > 0.5
    device = torch.device(settings.device)
    protocol = settings.rules()
    score = score_volume(model, image, mask, device, settings.seed, clamp=protocol.clamp)
    if not np.all(np.isfinite(score)):
        raise MriadError(f"{subject.image}: the model's anomaly map holds NaN/Inf")
    maps = postprocess(
        torch.from_numpy(score),
        torch.from_numpy(mask),
        erosion_iterations=EROSION_ITERATIONS,
        median_size=MEDIAN_SIZE,
        restrict_to_mask=not protocol.whole_volume,
    ).numpy()
    lesion = protocol.predict(maps, settings.threshold, mask)  # exactly as evaluate binarised
    native: dict[str, np.ndarray] = {
        "anomaly": to_native(maps, transform, order=1).astype(np.float32),
        "lesion": to_native(lesion.astype(np.uint8), transform, order=0).astype(np.uint8),
        "brain": to_native(mask.astype(np.uint8), transform, order=0).astype(bool),
    }
    final = {"image": image, "mask": mask, "anomaly": maps, "lesion": lesion}
    return write_scan_outputs(subject, paths, transform, native, final, source, settings)
