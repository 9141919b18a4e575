"""The way back: a subject's ``transform.json`` (+ ``transform.mat``) and mapping final-grid maps to the scan.

Every step of DESIGN.md section 3 keeps world (RAS mm) coordinates or changes them by one affine:
reorientation and 1 mm resampling only change the voxel grid over the same world, the registration
maps template world to subject world (one 4x4 matrix, also written as the ANTs/ITK affine file
``transform.mat``), and the crop, the x2 downsampling and the dropped slices are all folded into the
final grid's affine. So a final-grid voxel maps onto the scan's own voxels by

    native voxel = inv(native affine) @ template->subject matrix @ final-grid affine @ final voxel

and :func:`to_native` samples a final-grid map there (linear for scores, nearest for masks). The sidecar
records every step anyway (grids, factors, slices), so a reader can check or redo each one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mriad.contracts.subject_folder import TRANSFORM_JSON, TRANSFORM_MAT
from mriad.infra.errors import InputError
from mriad.infra.io import Volume, atomic_path, atomic_write_json

# File names in the subject folder, next to the image (mriad.contracts.subject_folder names them).
SIDECAR_FILES = (TRANSFORM_JSON, TRANSFORM_MAT)
SIDECAR_VERSION = 1
# Registrations whose way back is the recorded affine alone (SyN adds a warp that is not kept).
LINEAR_METHODS = ("affine-fast", "affine", "rigid", "none")


def _matrix(value: Any) -> list[list[float]]:
    return [[float(v) for v in row] for row in np.asarray(value, dtype=float)]


def _steps(native: Volume) -> dict[str, Any]:
    """Reorientation and 1 mm resampling as they happen in :func:`mriad.preprocess.subject.run_steps`
    (recomputed from the affine: both keep world coordinates, so only the grids are recorded)."""
    import nibabel as nib
    from nibabel import orientations

    from mriad.preprocess.resample import isotropic_grid, voxel_sizes

    current = orientations.io_orientation(native.affine)
    transform = orientations.ornt_transform(current, orientations.axcodes2ornt(("R", "A", "S")))
    canonical = native.affine @ orientations.inv_ornt_aff(transform, native.shape)
    shape = tuple(int(s) for s in orientations.apply_orientation(np.empty(native.shape, bool), transform).shape)
    resampled = not np.allclose(voxel_sizes(canonical), 1.0, rtol=0.01)
    iso_shape, iso_affine = isotropic_grid(shape, canonical, 1.0) if resampled else (shape, canonical)
    return {
        "reorient": {
            "from": "".join(nib.aff2axcodes(native.affine)),
            "to": "RAS",
            "ornt_transform": transform.astype(int).tolist(),
            "shape": list(shape),
            "affine": _matrix(canonical),
        },
        "resample": {
            "spacing_mm": 1.0,
            "done": bool(resampled),
            "interpolation": "linear (masks nearest)",
            "shape": [int(s) for s in iso_shape],
            "affine": _matrix(iso_affine),
        },
    }


def sidecar_record(native: Volume, method: str, matrix: np.ndarray, revision: int) -> dict[str, Any]:
    """The ``transform.json`` of one subject: its native grid, every step's grid, and the registration."""
    from mriad.atlas import DOWNSAMPLE, DROP_SLICES, crop_grid, downsampled_grid, final_grid

    crop, down, final = crop_grid(), downsampled_grid(), final_grid()
    return {
        "version": SIDECAR_VERSION,
        "pipeline_revision": int(revision),
        "native": {
            "file": Path(native.path).name,
            "shape": [int(s) for s in native.shape],
            "affine": _matrix(native.affine),
        },
        **_steps(native),
        "registration": {
            "method": method,
            "template_to_subject": _matrix(matrix),
            "direction": "template world (RAS mm) -> subject world (RAS mm), i.e. fixed -> moving",
            "ants_file": TRANSFORM_MAT,
            "ants_file_note": "the same matrix as an ITK AffineTransform in LPS (ants.read_transform)",
            "nonlinear_warp_kept": False,
        },
        "crop": {"shape": list(crop.shape), "affine": _matrix(crop.affine)},
        "downsample": {
            "factor": int(DOWNSAMPLE),
            "image": "masked 2x2x2 mean",
            "masks": "2x2x2 majority",
            "shape": list(down.shape),
            "affine": _matrix(down.affine),
        },
        "slices": {"axis": 2, "dropped_each_end": int(DROP_SLICES)},
        "final": {"shape": list(final.shape), "affine": _matrix(final.affine)},
    }


def write_sidecar(folder: Path, native: Volume, method: str, matrix: np.ndarray, revision: int) -> list[str]:
    """Write ``transform.json`` and ``transform.mat`` into ``folder``; returns their names."""
    from mriad.preprocess.register import write_ants_affine

    with atomic_path(Path(folder) / TRANSFORM_MAT) as tmp:
        write_ants_affine(matrix, str(tmp))
    atomic_write_json(Path(folder) / TRANSFORM_JSON, sidecar_record(native, method, matrix, revision))
    return list(SIDECAR_FILES)


@dataclass(frozen=True)
class Transform:
    """What :func:`to_native` needs: the scan's grid, the final grid and the registration."""

    native_shape: tuple[int, int, int]
    native_affine: np.ndarray
    final_shape: tuple[int, int, int]
    final_affine: np.ndarray
    template_to_subject: np.ndarray
    method: str

    def final_to_native_voxels(self) -> np.ndarray:
        """4x4: a native voxel index -> the final-grid voxel index it samples."""
        return np.linalg.inv(self.final_affine) @ np.linalg.inv(self.template_to_subject) @ self.native_affine


def read_transform(folder: Path) -> Transform:
    """The sidecar of a preprocessed subject folder; an older folder without one is refused (re-preprocess)."""
    path = Path(folder) / TRANSFORM_JSON
    if not path.is_file():
        raise InputError(
            folder,
            f"no {TRANSFORM_JSON}: preprocessed by an older mriad; run `mriad preprocess` "
            "again (with --force) to keep the transforms back to the scan",
        )
    try:
        record = json.loads(path.read_text())
        native, final, registration = record["native"], record["final"], record["registration"]
        transform = Transform(
            _shape3(native["shape"]),
            np.asarray(native["affine"], float),
            _shape3(final["shape"]),
            np.asarray(final["affine"], float),
            np.asarray(registration["template_to_subject"], float),
            str(registration["method"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(path, f"unreadable transform sidecar ({type(exc).__name__}: {exc})") from None
    if record.get("version") != SIDECAR_VERSION:
        raise InputError(path, f"transform sidecar version {record.get('version')!r}, expected {SIDECAR_VERSION}")
    for matrix in (transform.native_affine, transform.final_affine, transform.template_to_subject):
        if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix[:3, :3])) < 1e-9:
            raise InputError(path, "transform sidecar holds a singular or malformed matrix")
    if transform.method not in LINEAR_METHODS:
        raise InputError(
            path,
            f"registration {transform.method}: its non-linear warp is not kept, so maps cannot "
            "go back to the scan; preprocess with --registration affine-fast",
        )
    return transform


def _shape3(values: Any) -> tuple[int, int, int]:
    x, y, z = (int(v) for v in values)
    return x, y, z


def to_native(data: np.ndarray, transform: Transform, *, order: int) -> np.ndarray:
    """Sample a final-grid array on the scan's own grid (``order`` 1: linear, 0: nearest); 0 outside."""
    from scipy import ndimage

    data = np.asarray(data)
    if tuple(data.shape) != transform.final_shape:
        raise ValueError(f"expected a final-grid array of shape {transform.final_shape}, got {data.shape}")
    voxel_map = transform.final_to_native_voxels()
    source = data.astype(np.float32) if order > 0 else data
    return ndimage.affine_transform(
        source,
        voxel_map[:3, :3],
        offset=voxel_map[:3, 3],
        output_shape=transform.native_shape,
        order=order,
        mode="constant",
        cval=0.0,
        prefilter=False,
    )
