"""Synthetic lesions drawn in atlas space and carried into each subject by the same warp as the anatomy.

Two kinds, after the two lesion data sets of the paper:

- ``tumour`` (BraTS): one irregular mass with an oedema rim, BraTS labels 1 (necrotic /
  non-enhancing core), 4 (enhancing rim) and 2 (oedema);
- ``ms`` (MSLUB): several small ovoid white-matter blobs, mostly periventricular, label 1.

Lesions are rendered in a small box of the 1 mm atlas (a soft fraction, an intensity and labels),
multiplied by the atlas brain mask, and sampled through the subject's warp only where the warped box
lands. Centres are restricted to the axial range that the preprocessed 96x96x50 grid keeps, so a
lesion is never cropped away by preprocessing.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from mriad.atlas import final_grid
from mriad.synth.anatomy import AtlasArrays, Warp, sample

# Lesion intensities per modality on the same scale as the tissue values in anatomy._TISSUE
# (T2: CSF 1.0, GM 0.57, WM 0.36): clearly hyperintense on T2 and FLAIR, hypointense on T1.
LEVELS = {
    "t2": {"necrosis": 0.95, "core": 0.74, "ring": 0.64, "oedema": 0.8, "ms": 0.8},
    "flair": {"necrosis": 0.25, "core": 0.82, "ring": 0.78, "oedema": 0.95, "ms": 0.95},
    "t1": {"necrosis": 0.28, "core": 0.5, "ring": 0.78, "oedema": 0.56, "ms": 0.5},
}
LESION_KINDS = {"brats": "tumour", "mslub": "ms"}


@dataclass(frozen=True)
class Candidates:
    """World positions (mm) where lesion centres may be drawn, with their depth in the brain."""

    tumour: np.ndarray  # (n, 3)
    tumour_depth: np.ndarray  # (n,) mm to the brain surface
    periventricular: np.ndarray  # (n, 3)
    deep_wm: np.ndarray  # (n, 3)


@functools.lru_cache(maxsize=1)
def candidates(atlas: AtlasArrays) -> Candidates:
    """Centre candidates on a 2 mm subsample of the atlas (cached; ~0.3 s once)."""
    brain = atlas.mask[::2, ::2, ::2] > 0
    t1n = atlas.t1n[::2, ::2, ::2]
    depth = ndimage.distance_transform_edt(brain) * 2.0
    ventricles = (t1n < (atlas.csf + atlas.gm) / 2) & (depth > 20)
    to_ventricle = ndimage.distance_transform_edt(~ventricles) * 2.0
    white = (t1n > (atlas.gm + atlas.wm) / 2) & brain
    vox = np.argwhere(np.ones(brain.shape, bool)) * 2.0
    world = (atlas.affine[:3, :3] @ vox.T + atlas.affine[:3, 3:4]).T.reshape(brain.shape + (3,))
    grid = final_grid()
    z_lo = grid.affine[2, 3]
    z_hi = z_lo + grid.affine[2, 2] * (grid.shape[2] - 1)
    axial = (world[..., 2] > z_lo + 12) & (world[..., 2] < z_hi - 12)
    tumour = brain & axial & (depth >= 14)
    periventricular = white & axial & (to_ventricle >= 2) & (to_ventricle <= 9) & (depth > 8)
    deep_wm = white & axial & (depth > 10) & (to_ventricle > 9)
    return Candidates(
        tumour=world[tumour],
        tumour_depth=depth[tumour],
        periventricular=world[periventricular],
        deep_wm=world[deep_wm],
    )


@dataclass
class LesionBox:
    """A lesion rendered in a box of the atlas: ``offset`` is the box origin in atlas voxels."""

    kind: str
    offset: np.ndarray
    frac: np.ndarray  # float32 soft lesion fraction
    value: np.ndarray  # float32 lesion intensity (target contrast)
    labels: np.ndarray  # uint8 labels (BraTS convention for tumours, 1 for MS)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Unit-variance smooth noise: makes lesion borders irregular and their texture uneven."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return field / max(float(field.std()), 1e-6)


def _box(atlas: AtlasArrays, centre_world: np.ndarray, half: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Box origin and size (atlas voxels) around a world centre, clipped to the atlas."""
    centre = atlas.inverse[:3, :3] @ centre_world + atlas.inverse[:3, 3]
    lo = np.maximum(np.floor(centre - half).astype(int), 0)
    hi = np.minimum(np.ceil(centre + half).astype(int) + 1, np.array(atlas.mask.shape))
    return lo, hi - lo


def _local(lo: np.ndarray, size: np.ndarray, atlas: AtlasArrays) -> np.ndarray:
    """World coordinates (3, *size) of the voxels of a box."""
    axes = [np.arange(lo[a], lo[a] + size[a], dtype=np.float32) for a in range(3)]
    vox = np.stack(np.meshgrid(*axes, indexing="ij"))
    return np.einsum("ab,b...->a...", atlas.affine[:3, :3].astype(np.float32), vox) + atlas.affine[:3, 3].astype(
        np.float32
    ).reshape(3, 1, 1, 1)


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def _radius(world: np.ndarray, centre: np.ndarray, radii: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Normalised ellipsoid radius (1 on the surface) of every voxel."""
    d = world - centre.reshape(3, 1, 1, 1).astype(np.float32)
    local = np.einsum("ba,b...->a...", rotation.astype(np.float32), d)
    return np.sqrt(sum((local[a] / radii[a]) ** 2 for a in range(3)))


def _soft(radius: np.ndarray, edge: float) -> np.ndarray:
    """1 inside, 0 outside, a linear ramp of width ``edge`` (in normalised radius) at the surface."""
    return np.clip((1.0 - radius) / edge + 0.5, 0.0, 1.0).astype(np.float32)


def tumour(rng: np.random.Generator, atlas: AtlasArrays, modality: str) -> LesionBox:
    """A glioma-like mass: irregular core (necrosis, enhancing rim) inside a larger oedema."""
    cand = candidates(atlas)
    index = int(rng.integers(len(cand.tumour)))
    centre = cand.tumour[index] + rng.uniform(-1, 1, size=3)
    core_radius = rng.uniform(8.0, min(18.0, cand.tumour_depth[index] - 4.0))
    radii = core_radius * rng.uniform(0.75, 1.25, size=3)
    oedema_factor = rng.uniform(1.3, 1.9)
    rotation = _rotation(rng)
    lo, size = _box(atlas, centre, radii.max() * oedema_factor * 1.35 + 4)
    world = _local(lo, size, atlas)
    shape = tuple(int(s) for s in size)
    r_core = _radius(world, centre, radii, rotation) * (1 + 0.15 * _smooth_noise(rng, shape, 4.0))
    r_oed = _radius(world, centre, radii * oedema_factor, rotation) * (1 + 0.2 * _smooth_noise(rng, shape, 5.0))
    necrosis_radius = rng.uniform(0.0, 0.55)
    ring_inner = rng.uniform(0.65, 0.85) if rng.random() < 0.8 else 1.0  # some tumours do not enhance
    levels = {k: v * rng.uniform(0.93, 1.07) for k, v in LEVELS[modality].items()}
    brain = atlas.mask[lo[0] : lo[0] + shape[0], lo[1] : lo[1] + shape[1], lo[2] : lo[2] + shape[2]]
    labels = np.zeros(shape, np.uint8)
    labels[r_oed < 1.0] = 2
    labels[r_core < 1.0] = 4
    labels[r_core < ring_inner] = 1
    value = np.full(shape, levels["oedema"], np.float32)
    value[labels == 4] = levels["ring"]
    value[labels == 1] = levels["core"]
    value[r_core < necrosis_radius] = levels["necrosis"]
    value = ndimage.gaussian_filter(value, 1.0) * (1 + 0.05 * _smooth_noise(rng, shape, 1.5))
    frac = np.maximum(_soft(r_oed, 0.12), _soft(r_core, 0.12)) * brain
    labels[brain == 0] = 0
    return LesionBox("tumour", lo, frac, value.astype(np.float32), labels)


def ms_lesions(rng: np.random.Generator, atlas: AtlasArrays, modality: str) -> LesionBox:
    """4-14 small ovoid white-matter lesions, about 70 % of them periventricular."""
    cand = candidates(atlas)
    count = int(rng.integers(4, 15))
    centres, shapes = [], []
    for _ in range(count):
        pool = cand.periventricular if rng.random() < 0.7 or len(cand.deep_wm) == 0 else cand.deep_wm
        centres.append(pool[int(rng.integers(len(pool)))] + rng.uniform(-1, 1, size=3))
        radii = rng.uniform(2.0, 5.0) * np.array([1.0, rng.uniform(0.6, 1.0), rng.uniform(1.0, 1.8)])
        shapes.append((radii, _rotation(rng)))
    points = np.array(centres)
    reach = max(r.max() for r, _ in shapes) * 1.3 + 3
    lo_world, hi_world = points.min(axis=0) - reach, points.max(axis=0) + reach
    lo, size = _box(atlas, (lo_world + hi_world) / 2, (hi_world - lo_world) / 2)
    world = _local(lo, size, atlas)
    shape = tuple(int(s) for s in size)
    wobble = 1 + 0.1 * _smooth_noise(rng, shape, 2.0)
    frac = np.zeros(shape, np.float32)
    for centre, (radii, rotation) in zip(centres, shapes):
        frac = np.maximum(frac, _soft(_radius(world, centre, radii, rotation) * wobble, 0.3))
    brain = atlas.mask[lo[0] : lo[0] + shape[0], lo[1] : lo[1] + shape[1], lo[2] : lo[2] + shape[2]]
    frac *= brain
    level = LEVELS[modality]["ms"] * rng.uniform(0.93, 1.07)
    value = (level * (1 + 0.05 * _smooth_noise(rng, shape, 1.5))).astype(np.float32)
    labels = (frac > 0.5).astype(np.uint8)
    return LesionBox("ms", lo, frac, value, labels)


def draw(kind: str, rng: np.random.Generator, atlas: AtlasArrays, modality: str) -> LesionBox:
    if kind == "tumour":
        return tumour(rng, atlas, modality)
    return ms_lesions(rng, atlas, modality)


def recolour(box: LesionBox, source: str, target: str) -> LesionBox:
    """The same lesion (shape, labels, texture) in the contrast of modality ``target``.

    Each voxel's intensity is scaled by the ratio of the two modalities' levels of its label (tumours:
    oedema 2, enhancing rim 4, core 1; MS: one level), so the lesion sits in the same place with
    the other contrast (multi-channel synthesis, e.g. T2 + FLAIR). Necrosis, drawn inside the core,
    takes the core's ratio: an approximation, not a tissue model.
    """
    if box.kind == "ms":
        ratio = np.float32(LEVELS[target]["ms"] / LEVELS[source]["ms"])
        return LesionBox(box.kind, box.offset, box.frac, (box.value * ratio).astype(np.float32), box.labels)
    ratios = np.full(box.labels.shape, LEVELS[target]["oedema"] / LEVELS[source]["oedema"], np.float32)
    for label, level in ((4, "ring"), (1, "core")):
        ratios[box.labels == label] = LEVELS[target][level] / LEVELS[source][level]
    return LesionBox(box.kind, box.offset, box.frac, (box.value * ratios).astype(np.float32), box.labels)


def apply(box: LesionBox, warp: Warp, image: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Blend the lesion into ``image`` (in place) and return its labels on the output grid.

    Labels are kept only where the warped brain fraction is above 0.5, the same threshold that
    defines the subject's brain mask, so a lesion mask never leaves the brain.
    """
    labels = np.zeros(image.shape, np.uint8)
    block = warp.block(box.offset - 1.0, box.offset + np.array(box.frac.shape, float))
    if block is None:
        return labels
    points = warp.coords[(slice(None),) + block] - box.offset.reshape(3, 1, 1, 1).astype(np.float32)
    frac = sample(box.frac, points)
    value = sample(box.value, points)
    found = sample(box.labels, points, order=0)
    sub = image[block]  # a view: the blend writes into image
    sub *= 1 - frac
    sub += frac * value
    keep = (frac > 0.5) & (brain[block] > 0.5)
    filler = 2 if box.kind == "tumour" else 1  # a soft edge voxel whose nearest label is background
    labels[block] = np.where(keep, np.where(found > 0, found, filler), 0)
    return labels
