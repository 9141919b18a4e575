"""One subject through every step of DESIGN.md section 3, in memory (:func:`run_steps`) or from files
to an output folder (:func:`process_subject`).

Each step is a plain function in its own module; this file only chains them, times them and keeps the
warnings a user should see (sform/qform disagreement, a lesion lost at the grid edge...).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mriad.atlas import final_grid, load_template
from mriad.infra.errors import InputError, MriadError
from mriad.infra.io import Volume, check_labels, check_same_grid, read_nifti
from mriad.preprocess import register as reg
from mriad.preprocess import skullstrip
from mriad.preprocess.bias import n4_correct
from mriad.preprocess.crop import labels_to_crop_grid, to_crop_grid
from mriad.preprocess.downsample import downsample, downsample_labels
from mriad.preprocess.normalise import percentile_normalise
from mriad.preprocess.reorient import axis_codes, reorient_canonical
from mriad.preprocess.resample import resample_isotropic

# Less than this share of the brain inside the crop grid means the registration went wrong.
MIN_BRAIN_IN_GRID = 0.6
# Bumped whenever a step changes its output for the same options (2: N4 with three fitting levels,
# seeded registration; 3: transform.json/.mat, the way back to the scan; 4: N4's field fitted on a x6
# instead of x4 shrunk image), so a rerun redoes subjects made by an older pipeline instead of skipping them.
PIPELINE_REVISION = 4


@dataclass(frozen=True)
class Options:
    """How to preprocess; everything but ``device`` and ``qc`` must match for a rerun to skip a subject."""

    dataset: str = "generic"
    modality: str = "t2"
    skull_strip: str = "hd-bet"
    registration: str = "affine-fast"
    n4: bool = True
    qc: bool = True
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.skull_strip not in skullstrip.METHODS:
            raise MriadError(f"--skull-strip {self.skull_strip}: expected one of {', '.join(skullstrip.METHODS)}")
        if self.registration not in reg.METHODS:
            raise MriadError(f"--registration {self.registration}: expected one of {', '.join(reg.METHODS)}")

    @property
    def reference(self) -> str:
        """The modality the geometry is computed on: the first of a ``--modality`` list (``t2,flair``: t2)."""
        return self.modality.split(",")[0].strip()

    def signature(self) -> dict[str, object]:
        """What a finished subject's ``done.json`` must match to be skipped on a rerun."""
        options = {k: v for k, v in asdict(self).items() if k not in ("qc", "device")}
        return {**options, "revision": PIPELINE_REVISION}


@dataclass
class Processed:
    """Final-grid arrays (96x96x50) and what happened on the way."""

    image: np.ndarray
    mask: np.ndarray
    seg: np.ndarray | None
    affine: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # Template world -> subject world (RAS mm); the affine part only for SyN. Kept for provenance.
    matrix: np.ndarray = field(default_factory=lambda: np.eye(4))
    # Voxels no metric may count (WMH's label 2), carried like the segmentation; None without any.
    ignore: np.ndarray | None = None


class Timer:
    """Collects seconds per step (the ``timings.json`` of a subject)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 3)


def run_steps(
    image: Volume,
    options: Options,
    seg: Volume | None = None,
    timer: Timer | None = None,
    ignore: Volume | None = None,
    others: Sequence[Volume] = (),
) -> Processed:
    """Chain the steps on validated volumes (native grids); returns final-grid arrays.

    The segmentation is never resampled on its own before the crop step: it goes from its native grid
    to the crop grid in one nearest-neighbour interpolation through the same transform as the image.
    ``ignore`` (voxels no metric counts, on the segmentation's grid) takes exactly the segmentation's way.
    ``others`` (further modalities on the image's native grid, :func:`load_others`): skull strip,
    registration and crop are computed on the image and applied to them; N4 and the normalisation run
    per channel; the result's image is then ``(X, Y, Z, 1 + len(others))``, the image first.
    """
    timer = timer or Timer()
    warnings: list[str] = [image.note] if image.note else []
    path = image.path or "<image>"
    with timer.step("reorient"):
        source_codes = axis_codes(image.affine)
        image = reorient_canonical(image)
        seg = reorient_canonical(seg) if seg is not None else None
        ignore = reorient_canonical(ignore) if ignore is not None else None
        others = [reorient_canonical(other) for other in others]
    with timer.step("resample"):
        image = resample_isotropic(image, 1.0)
        others = [resample_isotropic(other, 1.0) for other in others]
    with timer.step("skull_strip"):
        stripped = skullstrip.skull_strip(
            image.data, image.affine, options.skull_strip, device=options.device, path=path, modality=options.reference
        )
        mask = stripped.mask
    with timer.step("register"):
        template = load_template("t1_brain", modality=options.reference)
        registration = reg.register(
            np.where(mask, image.data, 0.0),
            image.affine,
            template.data,
            template.affine,
            method=options.registration,
            initial=stripped.head_matrix,
        )
    try:
        with timer.step("crop"):
            cropped = to_crop_grid(
                registration,
                image.data,
                mask,
                image.affine,
                seg=(seg.data > 0) if seg is not None else None,
                seg_affine=seg.affine if seg is not None else None,
            )
            crop_ignore = None
            if ignore is not None:
                crop_ignore = labels_to_crop_grid(registration, ignore.data > 0, ignore.affine, cropped.grid)
            crop_others = [
                to_crop_grid(registration, other.data, mask, image.affine, grid=cropped.grid).image for other in others
            ]
    finally:
        registration.cleanup()
    # Share of the (registered) brain inside the crop grid: volumes compared in template space.
    scale = abs(float(np.linalg.det(registration.matrix[:3, :3])))
    brain_ml = float(mask.sum()) * _voxel_ml(image.affine) / scale
    kept = min(1.0, float(cropped.mask.sum()) * _voxel_ml(cropped.grid.affine) / max(brain_ml, 1e-6))
    if kept < MIN_BRAIN_IN_GRID:
        raise InputError(
            path,
            f"only {kept:.0%} of the brain lands in the crop grid ({source_codes} input): "
            f"registration {options.registration} failed or the image is not a head",
        )
    if kept < 0.9:
        warnings.append(f"{kept:.0%} of the brain inside the crop grid")
    crop_image = cropped.image
    if options.n4:
        with timer.step("n4"):
            crop_image = n4_correct(crop_image, cropped.mask)
    with timer.step("downsample"):
        small_image, small_mask, small_seg = downsample(crop_image, cropped.mask, cropped.seg)
        small_ignore = downsample_labels(crop_ignore, cropped.mask) if crop_ignore is not None else None
    with timer.step("normalise"):
        normalised = percentile_normalise(small_image, small_mask)
    if crop_others:  # channels last, the reference modality first
        channels = [_other_channel(other, cropped.mask, small_mask, options.n4, timer) for other in crop_others]
        normalised = np.stack([normalised, *channels], axis=-1)
    if seg is not None and np.any(seg.data > 0) and (small_seg is None or not small_seg.any()):
        warnings.append("the lesion does not survive on the final grid (outside the kept slices or too small)")
    return Processed(
        normalised,
        small_mask,
        small_seg,
        final_grid().affine.copy(),
        dict(timer.seconds),
        warnings,
        registration.matrix.copy(),
        small_ignore,
    )


def _other_channel(
    crop_image: np.ndarray, crop_mask: np.ndarray, small_mask: np.ndarray, n4: bool, timer: Timer
) -> np.ndarray:
    """A further modality from the crop grid to the final grid as the image goes: N4 inside the same
    brain mask (its own bias field), downsampling, its own percentile normalisation."""
    if n4:
        with timer.step("n4"):
            crop_image = n4_correct(crop_image, crop_mask)
    with timer.step("downsample"):
        small_image = downsample(crop_image, crop_mask)[0]
    with timer.step("normalise"):
        return percentile_normalise(small_image, small_mask)


def load_others(image: Volume, paths: Sequence[Path]) -> list[Volume]:
    """Read a subject's further modalities; each must lie on ``image``'s grid (co-registered scans,
    as BraTS releases them): the geometry computed on the image is applied to them unchanged."""
    others = []
    for path in paths:
        other = read_nifti(path)
        if other.shape != image.shape or not np.allclose(other.affine, image.affine, atol=1e-2):
            raise InputError(
                path,
                f"lies on another grid than {Path(image.path).name} (shape {other.shape} vs {image.shape}); "
                "the modalities of a --modality list must be co-registered",
            )
        others.append(other)
    return others


def _voxel_ml(affine: np.ndarray) -> float:
    return abs(float(np.linalg.det(np.asarray(affine)[:3, :3]))) / 1000.0


def load_inputs(
    image_path: Path,
    seg_path: Path | None,
    labels: tuple[int, ...] | None = None,
    lesion_labels: tuple[int, ...] | None = None,
    ignore_labels: tuple[int, ...] | None = None,
) -> tuple[Volume, Volume | None, Volume | None]:
    """Read and validate the scan and its segmentation (same grid, integer labels, ``labels`` if given;
    an empty lesion mask is allowed). ``lesion_labels``: only these labels are lesion (WMH: 1, not
    2 "other pathology"); None: every label > 0. ``ignore_labels``: voxels of these labels become the
    third volume, the ones no metric may count (WMH: 2); None without ``ignore_labels`` or a seg."""
    image = read_nifti(image_path)
    if seg_path is None:
        return image, None, None
    seg = read_nifti(seg_path, allow_empty=True)
    check_same_grid(image, seg)
    check_labels(seg, labels)
    ignore = None
    if ignore_labels:
        ignore = Volume(np.isin(seg.data, ignore_labels).astype(np.uint8), seg.affine, seg.path, seg.note)
    if lesion_labels is not None:
        seg = Volume(np.isin(seg.data, lesion_labels).astype(np.uint8), seg.affine, seg.path, seg.note)
    return image, seg, ignore
