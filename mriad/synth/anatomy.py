"""Real anatomy for synthetic scans: the SRI24 head template, deformed and given another contrast.

Every synthetic subject is the shipped T1 head template seen through a random pose (affine), a smooth
elastic warp and an age-dependent ventricle widening, sampled onto the subject's own voxel grid. The
warp is computed on a coarse lattice (every few millimetres) and upsampled separably, and the volume
is sampled once with ``scipy.ndimage.map_coordinates(order=1)``: no per-voxel Python, so a full
1 mm head takes well under a second.

Contrast comes from a monotone remap of the T1 intensities (CSF / grey / white matter anchors found
from quantiles inside the brain mask) to T2-, FLAIR- or T1-like values, with a separate remap for
the non-brain head tissue (fat bright, bone and muscle dark), blended by the warped brain mask.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from mriad.atlas import load_template

MODALITIES = ("t2", "t1", "flair")

# Coarse lattice spacing (mm) on which the warp and bias field are evaluated before upsampling.
LATTICE_MM = 8.0
# Elastic warp: random control displacements every CONTROL_MM, interpolated by cubic B-splines.
CONTROL_MM = 24.0


@dataclass(frozen=True, eq=False)  # hashed by identity: it keys lru caches
class AtlasArrays:
    """The template prepared once per process: normalised T1 (white matter = 1) and brain mask."""

    t1n: np.ndarray  # head T1 / white-matter level, canonical RAS, 1 mm
    t1n_smooth: np.ndarray  # the same, low-pass filtered for sampling onto 2 mm grids
    mask: np.ndarray  # brain mask as uint8 {0, 1}: 4x less memory traffic than float when sampled
    mask_lo: np.ndarray  # bounding box of the mask (atlas voxels, one voxel margin)
    mask_hi: np.ndarray
    head_lo: np.ndarray  # bounding box of the head (non-background template voxels)
    head_hi: np.ndarray
    affine: np.ndarray  # canonical voxel -> world (mm)
    inverse: np.ndarray  # world -> canonical voxel
    csf: float  # tissue anchors on the t1n scale
    gm: float
    wm: float
    brain_centre: np.ndarray  # world mm
    ventricle_centre: np.ndarray  # world mm


@functools.lru_cache(maxsize=1)
def atlas_arrays() -> AtlasArrays:
    """Load and normalise the shipped template (cached: ~1 s once per process)."""
    head = load_template("t1_head")
    mask = load_template("brain_mask")
    brain = mask.data > 0
    values = head.data[brain]
    # Quantiles of the head template inside the brain: lowest few percent are CSF, the upper
    # shoulder is white matter, the middle grey matter (checked against its histogram peaks).
    wm_raw = float(np.percentile(values, 88))
    # C order matters: nibabel hands out Fortran-ordered arrays, and map_coordinates over a C-ordered
    # output grid runs ~3x slower on them (cache misses along the first axis).
    t1n = np.ascontiguousarray(head.data / wm_raw, dtype=np.float32)
    csf = float(np.percentile(values, 2)) / wm_raw
    gm = float(np.percentile(values, 45)) / wm_raw
    t1n_smooth = np.ascontiguousarray(ndimage.gaussian_filter(t1n, 0.8), dtype=np.float32)
    mask8 = np.ascontiguousarray(brain, dtype=np.uint8)
    affine = head.affine.astype(np.float64)
    inside = np.argwhere(brain)
    centre_vox = (inside.min(axis=0) + inside.max(axis=0)) / 2.0
    # Ventricles: CSF-dark voxels deep inside the brain (at least 20 mm from its surface).
    depth = ndimage.distance_transform_edt(brain[::2, ::2, ::2]) * 2.0
    deep_csf = (t1n[::2, ::2, ::2] < (csf + gm) / 2) & (depth > 20)
    vent_vox = np.argwhere(deep_csf).mean(axis=0) * 2.0 if deep_csf.any() else centre_vox
    head_voxels = np.argwhere(t1n_smooth > 0.05)
    for array in (t1n, t1n_smooth, mask8):
        array.setflags(write=False)
    return AtlasArrays(
        t1n=t1n,
        t1n_smooth=t1n_smooth,
        mask=mask8,
        affine=affine,
        mask_lo=inside.min(axis=0) - 1.0,
        mask_hi=inside.max(axis=0) + 1.0,
        inverse=np.linalg.inv(affine),
        head_lo=head_voxels.min(axis=0) - 1.0,
        head_hi=head_voxels.max(axis=0) + 1.0,
        csf=csf,
        gm=gm,
        wm=1.0,
        brain_centre=(affine @ np.append(centre_vox, 1.0))[:3],
        ventricle_centre=(affine @ np.append(vent_vox, 1.0))[:3],
    )


@dataclass(frozen=True)
class Contrast:
    """Piecewise-linear remaps from normalised T1 to the target contrast, brain and head separately."""

    brain_x: np.ndarray
    brain_y: np.ndarray
    head_x: np.ndarray
    head_y: np.ndarray
    csf_value: float
    wm_value: float
    gm_value: float


# Target tissue values (CSF, GM, WM) per modality: T2 has bright CSF and dark white matter, FLAIR
# suppresses CSF and keeps GM > WM, T1 keeps the template's own contrast.
_TISSUE = {"t2": (1.0, 0.57, 0.36), "flair": (0.12, 0.62, 0.47), "t1": (0.26, 0.69, 0.97)}
# Non-brain tissue on the t1n scale: background, bone/dura, CSF-like, muscle, fat, bright fat/vessels.
_HEAD_X = np.array([0.0, 0.06, 0.2, 0.35, 0.6, 0.9, 1.4, 2.5, 4.5])
_HEAD_Y = {
    "t2": np.array([0.0, 0.02, 0.12, 0.42, 0.3, 0.27, 0.62, 0.8, 0.85]),
    "flair": np.array([0.0, 0.02, 0.1, 0.12, 0.3, 0.32, 0.62, 0.75, 0.8]),
    "t1": np.array([0.0, 0.05, 0.18, 0.33, 0.6, 0.85, 1.25, 1.6, 1.7]),
}


def random_contrast(modality: str, rng: np.random.Generator, atlas: AtlasArrays, jitter: float = 1.0) -> Contrast:
    """Per-subject contrast: tissue values and tissue boundaries jittered so healthy scans differ."""
    csf_v, gm_v, wm_v = (v * (1.0 + jitter * rng.uniform(-0.07, 0.07)) for v in _TISSUE[modality])
    shift = jitter * rng.uniform(-0.03, 0.03, size=3)
    brain_x = np.array([0.0, atlas.csf + shift[0], atlas.gm + shift[1], atlas.wm + shift[2], 1.4])
    brain_y = np.array([csf_v, csf_v, gm_v, wm_v, wm_v * (1.02 if modality == "t1" else 0.96)])
    head_y = _HEAD_Y[modality] * (1.0 + jitter * rng.uniform(-0.1, 0.1, size=_HEAD_X.size))
    head_y[0] = 0.0
    return Contrast(brain_x, brain_y, _HEAD_X.copy(), head_y, float(csf_v), float(wm_v), float(gm_v))


def random_pose(
    rng: np.random.Generator, atlas: AtlasArrays, *, rotation_deg: float, scale: float, shift_mm: float
) -> np.ndarray:
    """A 4x4 world transform atlas -> subject: rotation, anisotropic scaling and shift about the brain."""
    angles = np.deg2rad(rng.uniform(-rotation_deg, rotation_deg, size=3))
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    linear = rz @ ry @ rx @ np.diag(1.0 + rng.uniform(-scale, scale, size=3))
    centre = atlas.brain_centre
    pose = np.eye(4)
    pose[:3, :3] = linear
    pose[:3, 3] = centre - linear @ centre + rng.uniform(-shift_mm, shift_mm, size=3)
    return pose


def _interp_matrix(n: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Lattice positions (voxel index) every ``step`` voxels and the linear weights back to 0..n-1."""
    count = int(np.ceil((n - 1) / step)) + 2
    positions = np.arange(count) * step
    t = np.arange(n) / step
    base = np.floor(t).astype(int)
    frac = (t - base).astype(np.float32)
    weights = np.zeros((n, count), np.float32)
    weights[np.arange(n), base] = 1.0 - frac
    weights[np.arange(n), base + 1] = frac
    return positions, weights


Block = tuple[slice, slice, slice]


@dataclass
class Warp:
    """Atlas voxel coordinates of every output voxel, plus the subject's log bias field.

    The coarse lattice is kept so that :meth:`block` can find, cheaply and conservatively, the
    part of the output grid that lands in a given atlas box (the brain, a lesion): sampling only
    there saves most of the work.
    """

    coords: np.ndarray  # (3, X, Y, Z) float32
    log_bias: np.ndarray  # (X, Y, Z) float32
    lattice: np.ndarray  # (3, nx, ny, nz) atlas voxel coordinates at the lattice points
    positions: tuple[np.ndarray, np.ndarray, np.ndarray]  # output voxel index of each lattice point

    def block(self, lo: np.ndarray, hi: np.ndarray) -> Block | None:
        """Output index ranges whose atlas coordinates may fall in the box ``[lo, hi]`` (voxels).

        A lattice cell is kept when the bounding box of its 8 corners meets the box; the full-res
        coordinates inside a cell are convex combinations of its corners, so nothing is missed.
        """
        low = self.lattice
        high = self.lattice
        for axis in (1, 2, 3):
            a = [slice(None)] * 4
            b = [slice(None)] * 4
            a[axis], b[axis] = slice(0, -1), slice(1, None)
            low = np.minimum(low[tuple(a)], low[tuple(b)])
            high = np.maximum(high[tuple(a)], high[tuple(b)])
        meets = np.ones(low.shape[1:], bool)
        for axis in range(3):
            meets &= (high[axis] >= lo[axis]) & (low[axis] <= hi[axis])
        if not meets.any():
            return None
        cells = np.argwhere(meets)
        first, last = cells.min(axis=0), cells.max(axis=0)
        shape = self.coords.shape[1:]
        return tuple(
            slice(int(self.positions[a][first[a]]), int(min(self.positions[a][last[a] + 1] + 1, shape[a])))
            for a in range(3)
        )  # type: ignore[return-value]


def make_warp(
    rng: np.random.Generator,
    atlas: AtlasArrays,
    shape: tuple[int, int, int],
    out_affine: np.ndarray,
    pose: np.ndarray,
    *,
    elastic_mm: float,
    atrophy: float,
    bias: float,
) -> Warp:
    """Map the output grid into the atlas: pose, elastic warp and ventricle widening, then bias.

    ``atrophy`` in [0, 1] widens the ventricles (up to ~35 % near their centre) so that older
    synthetic subjects look older; ``bias`` is the standard deviation of the smooth log bias field.
    """
    spacing = np.sqrt((out_affine[:3, :3] ** 2).sum(axis=0))
    steps = [max(1, int(round(LATTICE_MM / s))) for s in spacing]
    lattices = [_interp_matrix(n, step) for n, step in zip(shape, steps)]
    grid = np.stack(np.meshgrid(*[p for p, _ in lattices], indexing="ij"), axis=0).reshape(3, -1)
    subject_world = out_affine[:3, :3] @ grid + out_affine[:3, 3:4]
    inverse_pose = np.linalg.inv(pose)
    atlas_world = inverse_pose[:3, :3] @ subject_world + inverse_pose[:3, 3:4]

    # Elastic: cubic B-spline through random control displacements covering the atlas box.
    lo = atlas.affine[:3, 3] - 30.0  # canonical atlas: the origin is its lowest corner
    n_ctrl = int(np.ceil((max(atlas.mask.shape) + 60) / CONTROL_MM)) + 1
    control = rng.normal(0.0, elastic_mm, size=(3, n_ctrl, n_ctrl, n_ctrl))
    ctrl_pos = (atlas_world - lo[:, None]) / CONTROL_MM
    displacement = np.stack([ndimage.map_coordinates(control[c], ctrl_pos, order=3, mode="nearest") for c in range(3)])
    # Ventricle widening: sample tissue nearer the ventricle centre -> the ventricles look larger.
    offset = atlas_world - atlas.ventricle_centre[:, None]
    weight = np.exp(-(offset**2).sum(axis=0) / (2 * 20.0**2))
    displacement -= 0.35 * atrophy * offset * weight
    atlas_vox = atlas.inverse[:3, :3] @ (atlas_world + displacement) + atlas.inverse[:3, 3:4]

    # Smooth log-bias: a random quadratic polynomial over the field of view (subject space).
    extent = np.array(shape, float) * spacing
    unit = (grid * spacing[:, None]) / extent[:, None] * 2.0 - 1.0
    terms = [np.ones(unit.shape[1])] + list(unit) + [unit[a] * unit[b] for a in range(3) for b in range(a, 3)]
    coefficients = rng.normal(0.0, bias, size=len(terms)) / np.sqrt(len(terms) / 3.0)
    coefficients[0] = 0.0
    log_bias = np.tensordot(coefficients, np.stack(terms), axes=1)

    coarse = np.concatenate([atlas_vox, log_bias[None]]).astype(np.float32)
    coarse = coarse.reshape((4,) + tuple(len(p) for p, _ in lattices))
    (_, wx), (_, wy), (_, wz) = lattices
    full = np.einsum("ia,dabc->dibc", wx, coarse, optimize=True)
    full = np.einsum("jb,dibc->dijc", wy, full, optimize=True)
    full = np.einsum("kc,dijc->dijk", wz, full, optimize=True)
    return Warp(
        coords=np.ascontiguousarray(full[:3]),
        log_bias=np.ascontiguousarray(full[3]),
        lattice=coarse[:3],
        positions=tuple(p for p, _ in lattices),  # type: ignore[arg-type]
    )


def sample(volume: np.ndarray, coords: np.ndarray, order: int = 1) -> np.ndarray:
    """Sample an atlas-space volume at atlas voxel coordinates (0 outside the template).

    Linear interpolation returns float32 whatever the volume's type (uint8 masks give fractions).
    """
    output = volume.dtype if order == 0 else np.float32
    return ndimage.map_coordinates(
        volume, coords, order=order, mode="constant", cval=0.0, prefilter=False, output=output
    )


def sample_mask(atlas: AtlasArrays, warp: Warp) -> tuple[np.ndarray, Block | None]:
    """The warped brain mask as a fraction in [0, 1], and the output block that can hold brain."""
    out = np.zeros(warp.coords.shape[1:], np.float32)
    block = warp.block(atlas.mask_lo, atlas.mask_hi)
    if block is not None:
        out[block] = sample(atlas.mask, warp.coords[(slice(None),) + block])
    return out, block


def render_tissue(
    atlas: AtlasArrays,
    coords: np.ndarray,
    contrast: Contrast,
    brain: np.ndarray,
    block: Block | None,
    head_block: Block | None,
    *,
    smooth: bool,
    with_head: bool,
) -> np.ndarray:
    """Remapped intensities: brain remap inside the warped mask, head remap outside (or 0 if stripped).

    Only the blocks that can hold head (or, when stripped, brain) are sampled at all.
    """
    source = atlas.t1n_smooth if smooth else atlas.t1n
    image = np.zeros(coords.shape[1:], np.float32)
    t1n = np.zeros(coords.shape[1:], np.float32)
    if with_head:
        head = head_block if head_block is not None else block
        if head is not None:
            t1n[head] = sample(source, coords[(slice(None),) + head])
        image[...] = np.interp(t1n, contrast.head_x, contrast.head_y)
    if block is None:
        return image
    t1n_block = t1n[block] if with_head else sample(source, coords[(slice(None),) + block])
    w = brain[block]
    inside = w > 0
    w = w[inside]
    sub = image[block]
    brain_values = np.interp(t1n_block[inside], contrast.brain_x, contrast.brain_y).astype(np.float32)
    sub[inside] = w * brain_values + (1.0 - w) * sub[inside]  # a view: writes into image
    return image


def rician(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude-image noise: |signal + complex Gaussian|, so the background is Rayleigh, not zero."""
    real = rng.standard_normal(image.shape, dtype=np.float32)
    real *= sigma
    real += image
    imag = rng.standard_normal(image.shape, dtype=np.float32)
    imag *= sigma
    np.multiply(real, real, out=real)
    np.multiply(imag, imag, out=imag)
    real += imag
    return np.sqrt(real, out=real)
