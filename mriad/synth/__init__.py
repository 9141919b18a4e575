"""Realistic synthetic brain MRI from real anatomy, for demos, tests and benchmarks without data.

Every scan is the SRI24 head template (shipped in ``atlases/sri24``) under a random pose, an elastic
warp and an age-dependent ventricle widening, remapped to a T2-like (or FLAIR-/T1-like) contrast,
with a smooth bias field and Rician noise. Lesion subjects get hyperintense lesions with masks:
glioma-like masses with oedema (``brats``) or periventricular MS-like blobs (``mslub``).

Two outputs:

- raw (default): the real data sets' file layouts (see :mod:`mriad.synth.layouts`) on scanner-like
  grids, the input of ``mriad preprocess``, plus ground truth under ``OUT/_truth``;
- preprocessed: the contract's ready 96x96x50 volumes and an already split ``OUT/manifest.csv``,
  the input of ``mriad train``.

Several modalities (``modality="t2,flair"``): the same subjects (pose, warp, bias, lesions) in each
contrast; the first modality's images are exactly the single-modality ones. Preprocessed: one 4D
``image.nii.gz`` ``(X, Y, Z, C)`` per subject, each channel normalised on its own, and a manifest
column ``channels`` (e.g. ``t2,flair``); raw: the BraTS layout only, one file per modality.

Deterministic: subject ``i`` of a group draws from ``np.random.default_rng([seed, group, i])``
(group 0 healthy, 1 lesion), so the same seed gives byte-identical files and adding subjects never
changes the existing ones.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mriad.infra.errors import MriadError
from mriad.infra.io import atomic_write_csv, write_nifti
from mriad.synth.anatomy import MODALITIES, atlas_arrays
from mriad.synth.layouts import (
    DEMOGRAPHICS,
    LAYOUTS,
    TRUTH_FOLDER,
    ixi_naming,
    lesion_naming,
    preprocessed_paths,
    raw_paths,
    truth_paths,
)
from mriad.synth.lesions import LESION_KINDS
from mriad.synth.subject import Rendered, SubjectPlan, normalise, render, to_scanner_units

__all__ = ["LAYOUTS", "MODALITIES", "SynthResult", "synthesize", "min_healthy_for_splits", "parse_modalities"]


@dataclass
class SynthResult:
    """What :func:`synthesize` wrote."""

    out: Path
    subjects: list[str]
    manifest: Path | None = None  # preprocessed layout only
    layout: str = "brats"
    preprocessed: bool = False
    modality: str = "t2"
    demographics: Path | None = None  # raw layouts with healthy subjects
    truth: Path | None = None  # raw layouts
    seconds: float = 0.0
    datasets: dict[str, int] = field(default_factory=dict)


def min_healthy_for_splits(folds: int = 5) -> int:
    """Fewest healthy subjects that the default split (test set + ``folds`` folds) accepts."""
    from mriad.split import SplitSettings

    fraction = SplitSettings().healthy_test_fraction
    n = folds
    while n - int(round(fraction * n)) < folds:
        n += 1
    return n


def _plans(healthy: int, lesions: int, layout: str, seed: int) -> list[tuple[SubjectPlan, np.random.Generator]]:
    """Names and demographics first, each subject from its own generator (see module docstring)."""
    plans = []
    for group, count in ((0, healthy), (1, lesions)):
        for index in range(count):
            rng = np.random.default_rng([seed, group, index])
            age = round(float(rng.uniform(20.0, 86.0)), 2)
            sex = "M" if rng.random() < 0.5 else "F"
            if group == 0:
                plan = SubjectPlan(index, ixi_naming(index, rng), 0, age, sex, None)
            else:
                plan = SubjectPlan(index, lesion_naming(layout, index), 1, age, sex, LESION_KINDS[layout])
            plans.append((plan, rng))
    return plans


def parse_modalities(modality: str) -> tuple[str, ...]:
    """``"t2,flair"`` -> ``("t2", "flair")``: known modalities, each once (the first is the reference)."""
    names = tuple(part.strip().lower() for part in str(modality).split(","))
    for name in names:
        if name not in MODALITIES:
            raise MriadError(f"synth: unknown modality {name!r}; choose one of {', '.join(MODALITIES)} (or a list)")
    if len(set(names)) != len(names):
        raise MriadError(f"synth: --modality {modality!r} names a modality twice")
    return names


def _check(out: Path, healthy: int, lesions: int, layout: str, preprocessed: bool, modality: str) -> None:
    if layout not in LAYOUTS:
        raise MriadError(f"synth: unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    modalities = parse_modalities(modality)
    if len(modalities) > 1 and not preprocessed and (layout != "brats" or healthy):
        raise MriadError(
            "synth: raw multi-modality scans are written in the BraTS layout only (one file per modality): "
            "use --layout brats --healthy 0, or --preprocessed"
        )
    if healthy < 0 or lesions < 0 or healthy + lesions == 0:
        raise MriadError(f"synth: need at least one subject (got --healthy {healthy} --lesions {lesions})")
    if layout == "ixi" and lesions:
        raise MriadError("synth: layout ixi holds healthy scans only; use --layout brats or mslub for lesions")
    if "flair" in modalities and healthy and not preprocessed:
        raise MriadError(
            "synth: IXI has no FLAIR scans, so raw healthy FLAIR files would have no real counterpart; "
            "use --healthy 0, another --modality, or --preprocessed"
        )
    if preprocessed and 0 < healthy < min_healthy_for_splits():
        raise MriadError(
            f"synth: --healthy {healthy} is too few to split into a test set and 5 folds; "
            f"use at least {min_healthy_for_splits()} (or 0 for lesion scans only)"
        )
    if out.exists() and not out.is_dir():
        raise MriadError(f"{out}: exists and is not a folder")


def synthesize(
    out: Path,
    healthy: int,
    lesions: int,
    layout: str = "brats",
    preprocessed: bool = False,
    seed: int = 0,
    modality: str = "t2",
) -> SynthResult:
    """Write ``healthy`` IXI-like and ``lesions`` lesion scans (data set ``layout``) under ``out``.

    Raises :class:`MriadError` for impossible requests (unknown layout or modality, lesions with the
    healthy-only ``ixi`` layout, too few healthy subjects for the preprocessed layout's splits), and
    :class:`~mriad.infra.errors.LockError` while another live process writes into ``out``.
    """
    out = Path(out)
    _check(out, healthy, lesions, layout, preprocessed, modality)
    from mriad.infra.locking import folder_lock

    # One writer per OUT: two syntheses into one folder would mix their subjects and manifests.
    with folder_lock(out, "synth"):
        return _synthesize(out, healthy, lesions, layout, preprocessed, seed, modality)


def _synthesize(
    out: Path, healthy: int, lesions: int, layout: str, preprocessed: bool, seed: int, modality: str
) -> SynthResult:
    from mriad.infra.console import track

    start = time.perf_counter()
    atlas = atlas_arrays()
    rows: list[dict[str, object]] = []
    first, *others = parse_modalities(modality)
    for plan, rng in track(_plans(healthy, lesions, layout, seed), description="synth", unit="subject"):
        rendered = render(plan, rng, atlas, first, preprocessed, others)
        if preprocessed:
            rows.append(_write_preprocessed(out, plan, rendered, seed, modality))
        else:
            rows.append(_write_raw(out, plan, rendered, rng, modality))
    frame = pd.DataFrame(rows)
    result = SynthResult(
        out=out,
        subjects=[str(s) for s in frame["subject_id"]],
        layout=layout,
        preprocessed=preprocessed,
        modality=modality,
        datasets={str(k): int(v) for k, v in frame["dataset"].value_counts().sort_index().items()},
    )
    if preprocessed:
        from mriad.contracts.manifest import write_manifest
        from mriad.split import split_frame

        result.manifest = write_manifest(split_frame(frame, seed=seed), out / "manifest.csv")
    else:
        result.truth = atomic_write_csv(out / TRUTH_FOLDER / "subjects.csv", frame)
        if healthy:
            ixi = frame[frame["dataset"] == "ixi"]
            demographics = pd.DataFrame(
                {
                    "IXI_ID": ixi["ixi_id"].astype(int),
                    "SEX_ID": [1 if s == "M" else 2 for s in ixi["sex"]],
                    "AGE": ixi["age"],
                }
            )
            result.demographics = atomic_write_csv(out / DEMOGRAPHICS, demographics)
    result.seconds = time.perf_counter() - start
    return result


def _write(path: Path, data: np.ndarray, affine: np.ndarray, dtype: type = np.float32) -> Path:
    """NIfTI stores voxels in Fortran order; handing nibabel a Fortran array saves a slow chunked copy."""
    return write_nifti(path, np.asfortranarray(data, dtype=dtype), affine, dtype=dtype)


def _write_preprocessed(out: Path, plan: SubjectPlan, rendered: Rendered, seed: int, modality: str) -> dict:
    paths = preprocessed_paths(out, plan.naming)
    affine = rendered.grid.affine
    image = normalise(rendered.image, rendered.brain)
    if rendered.others:  # channels last: (X, Y, Z, C), each normalised on its own
        image = np.stack([image, *(normalise(other, rendered.brain) for other in rendered.others)], axis=-1)
    _write(paths["image"], image, affine)
    _write(paths["mask"], rendered.brain, affine, dtype=np.uint8)
    seg = ""
    if rendered.labels is not None:
        _write(paths["seg"], (rendered.labels > 0).astype(np.uint8), affine, dtype=np.uint8)
        seg = str(paths["seg"].resolve())
    row = {
        "subject_id": plan.naming.subject,
        "dataset": plan.naming.dataset,
        "split": "",
        "fold": "",
        "label": plan.label,
        "image": str(paths["image"].resolve()),
        "mask": str(paths["mask"].resolve()),
        "seg": seg,
        "age": plan.age,
        "sex": plan.sex,
        "source": f"synth:{modality}:seed{seed}",
    }
    if rendered.others:
        row["channels"] = ",".join(parse_modalities(modality))
    return row


def _write_raw(out: Path, plan: SubjectPlan, rendered: Rendered, rng: np.random.Generator, modality: str) -> dict:
    first, *others = parse_modalities(modality)
    paths = raw_paths(out, plan.naming, first)
    truth = truth_paths(out, plan.naming)
    affine = rendered.grid.affine
    _write(paths["image"], to_scanner_units(rendered.image, rng), affine, dtype=np.int16)
    for other, image in zip(others, rendered.others, strict=True):  # BraTS layout: <subject>_<modality>.nii.gz
        _write(raw_paths(out, plan.naming, other)["image"], to_scanner_units(image, rng), affine, dtype=np.int16)
    _write(truth["brainmask"], rendered.brain, affine, dtype=np.uint8)
    row: dict[str, object] = {
        "subject_id": plan.naming.subject,
        "dataset": plan.naming.dataset,
        "label": plan.label,
        "image": paths["image"].relative_to(out).as_posix(),
        "seg": "",
        "brainmask_gt": truth["brainmask"].relative_to(out).as_posix(),
        "seg_gt": "",
        "age": plan.age,
        "sex": plan.sex,
        "ixi_id": plan.naming.ixi_id if plan.naming.ixi_id is not None else "",
        "orientation": rendered.grid.orientation,
        "spacing": "x".join(f"{s:g}" for s in rendered.grid.spacing),
        "shape": "x".join(str(s) for s in rendered.grid.shape),
        "modality": modality,
    }
    if rendered.labels is not None:
        labels = rendered.labels if plan.naming.dataset == "brats" else (rendered.labels > 0).astype(np.uint8)
        _write(paths["seg"], labels, affine, dtype=np.uint8)
        _write(truth["seg"], (rendered.labels > 0).astype(np.uint8), affine, dtype=np.uint8)
        row["seg"] = paths["seg"].relative_to(out).as_posix()
        row["seg_gt"] = truth["seg"].relative_to(out).as_posix()
    return row
