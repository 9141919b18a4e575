"""Step 4: affine (or rigid / SyN) registration to the SRI24 template with antspyx.

Affine results are returned as one 4x4 world (RAS mm) matrix mapping a template point to the subject
point it came from. That lets the crop step resample image, mask and segmentation onto the 192x192x160
grid in a single interpolation each, with nearest neighbour for masks. SyN keeps its ANTs transform
files and is applied through ``ants.apply_transforms``.

ANTs works in LPS coordinates; the conversion to and from RAS is kept in this module only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mriad.infra.errors import MriadError

METHODS = ("affine-fast", "affine", "rigid", "syn", "none")
_ANTS_TYPE = {"affine-fast": "AffineFast", "affine": "Affine", "rigid": "Rigid", "syn": "SyN"}
# RAS <-> LPS: flip the first two world axes.
_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Registration:
    """Where each template point lies in the subject: an affine matrix, or ANTs transform files (SyN)."""

    method: str
    matrix: np.ndarray = field(default_factory=lambda: np.eye(4))  # template world -> subject world (RAS)
    ants_transforms: list[str] | None = None
    workdir: str | None = None
    metric: float | None = None

    def cleanup(self) -> None:
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


def to_ants(data: np.ndarray, affine: np.ndarray) -> Any:
    """An ANTs image from an array in nibabel voxel order and its RAS voxel-to-world affine."""
    import ants

    lps = _FLIP @ np.asarray(affine, dtype=float)
    spacing = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
    direction = lps[:3, :3] / spacing
    return ants.from_numpy(
        np.ascontiguousarray(data, dtype=np.float32),
        origin=tuple(float(v) for v in lps[:3, 3]),
        spacing=tuple(float(v) for v in spacing),
        direction=direction,
    )


def ants_affine_to_ras(path: str) -> np.ndarray:
    """Read an ANTs/ITK affine (.mat) as a 4x4 RAS matrix in the fixed -> moving direction.

    ITK stores y = A (x - c) + t + c in LPS; ``c`` are the fixed parameters.
    """
    import ants

    transform = ants.read_transform(path)
    params = np.asarray(transform.parameters, dtype=float)
    centre = np.asarray(transform.fixed_parameters, dtype=float)
    matrix = params[:9].reshape(3, 3)
    translation = params[9:12]
    lps = np.eye(4)
    lps[:3, :3] = matrix
    lps[:3, 3] = translation + centre - matrix @ centre
    return _FLIP @ lps @ _FLIP


def register(
    moving: np.ndarray,
    moving_affine: np.ndarray,
    fixed: np.ndarray,
    fixed_affine: np.ndarray,
    *,
    method: str = "affine-fast",
    seed: int = 0,
    initial: np.ndarray | None = None,
    working_spacing: float | None = None,
) -> Registration:
    """Register ``moving`` (subject) to ``fixed`` (template); mutual information, ANTs defaults otherwise.

    ``initial`` (a RAS template->subject matrix, e.g. from a head registration) starts the optimiser
    there instead of at the centres of mass. ``working_spacing`` (mm) block-averages both images first
    and shrinks/smooths less, so the optimiser sees the same resolutions in about half the time. The
    default for ``affine-fast`` is 2 mm: its finest optimised level is 4 mm, so nothing is lost.
    """
    if working_spacing is None and method == "affine-fast":
        working_spacing = 2.0
    if method not in METHODS:
        raise MriadError(f"--registration {method}: expected one of {', '.join(METHODS)}")
    if method == "none":
        return Registration("none")
    import ants

    workdir = tempfile.mkdtemp(prefix="mriad-reg-")
    try:
        kwargs: dict[str, Any] = {}
        if working_spacing:
            factor = int(round(working_spacing / float(np.min(_spacing(moving_affine)))))
            if factor > 1:
                fixed, fixed_affine = _coarsen(fixed, fixed_affine, factor)
                moving, moving_affine = _coarsen(moving, moving_affine, factor)
                # Same physical pyramid as at full resolution: shrink factors and sigmas (voxels) / factor.
                kwargs["aff_shrink_factors"] = tuple(max(1, s // factor) for s in (6, 4, 2, 1))
                kwargs["aff_smoothing_sigmas"] = tuple(s / factor for s in (3, 2, 1, 0))
        fixed_img = to_ants(fixed, fixed_affine)
        moving_img = to_ants(moving, moving_affine)
        if initial is not None:
            kwargs["initial_transform"] = [write_ants_affine(initial, os.path.join(workdir, "init.mat"))]
        with _ants_seed(seed):
            result = ants.registration(
                fixed=fixed_img,
                moving=moving_img,
                type_of_transform=_ANTS_TYPE[method],
                outprefix=os.path.join(workdir, "reg_"),
                verbose=False,
                **kwargs,
            )
        forward = list(result["fwdtransforms"])
        affines = [p for p in forward if p.endswith(".mat")]
        if method != "syn":
            matrix = ants_affine_to_ras(affines[0])
            shutil.rmtree(workdir, ignore_errors=True)
            return Registration(method, matrix=matrix)
        matrix = ants_affine_to_ras(affines[0]) if affines else np.eye(4)
        return Registration(method, matrix=matrix, ants_transforms=forward, workdir=workdir)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise


def _spacing(affine: np.ndarray) -> np.ndarray:
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))


def _coarsen(data: np.ndarray, affine: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Block-average by ``factor`` (an exact anti-aliased downsampling) with the matching affine."""
    from mriad.preprocess.downsample import block_mean

    coarse = block_mean(data, factor=factor)
    new = np.asarray(affine, dtype=float).copy()
    new[:3, :3] = affine[:3, :3] * factor
    new[:3, 3] = affine[:3, :3] @ np.full(3, (factor - 1) / 2.0) + affine[:3, 3]
    return coarse, new


@contextlib.contextmanager
def _ants_seed(seed: int) -> Iterator[None]:
    """Seed the metric's random sampling of ``ants.registration`` for the duration of one call.

    antspyx 0.6 takes the seed only from ``ants.config._random_seed`` (a ``random_seed=`` keyword is
    swallowed by ``**kwargs`` and ignored): without this, two runs on the same scan sample different
    points and land on affines whose translations differ by up to ~0.1 mm, enough to change masks.
    ANTs reads a seed of 0 as "seed from the clock", so mriad's seed s becomes s + 1. The sampling is
    then repeatable with one ITK thread (``--jobs`` equal to the cores); with several threads the
    metric's partial sums still arrive in varying order.
    """
    import ants.config

    previous = ants.config._random_seed
    ants.config._random_seed = int(seed) % (2**31 - 1) + 1
    try:
        yield
    finally:
        ants.config._random_seed = previous


def write_ants_affine(matrix_ras: np.ndarray, path: str) -> str:
    """Write a RAS template->subject matrix as an ITK affine file ANTs can start from."""
    import ants

    lps = _FLIP @ np.asarray(matrix_ras, dtype=float) @ _FLIP
    transform = ants.create_ants_transform(
        transform_type="AffineTransform",
        dimension=3,
        matrix=lps[:3, :3],
        translation=lps[:3, 3],
        center=(0.0, 0.0, 0.0),
    )
    ants.write_transform(transform, path)
    return path


def apply_registration(
    registration: Registration,
    data: np.ndarray,
    affine: np.ndarray,
    shape: tuple[int, ...],
    grid_affine: np.ndarray,
    *,
    label: bool = False,
) -> np.ndarray:
    """Resample subject ``data`` onto a template-space grid through ``registration``."""
    from mriad.preprocess.resample import resample_to_grid

    if registration.ants_transforms is None:
        return resample_to_grid(data, affine, shape, grid_affine, order=0 if label else 1, world=registration.matrix)
    import ants

    reference = to_ants(np.zeros(shape, dtype=np.float32), grid_affine)
    moving = to_ants(data, affine)
    warped = ants.apply_transforms(
        fixed=reference,
        moving=moving,
        transformlist=registration.ants_transforms,
        interpolator="nearestNeighbor" if label else "linear",
    )
    return warped.numpy()


def mutual_information(a: np.ndarray, a_affine: np.ndarray, b: np.ndarray, b_affine: np.ndarray) -> float:
    """ANTs' Mattes mutual information between two images (more negative = better aligned)."""
    import ants

    return float(ants.image_mutual_information(to_ants(a, a_affine), to_ants(b, b_affine)))
