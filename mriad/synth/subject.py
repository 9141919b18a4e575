"""One synthetic subject: pose, grid, warp, contrast, lesions, bias and noise, in a fixed draw order.

The draw order is part of the determinism contract: the same seed and subject index always give the
same random numbers in the same order, hence byte-identical files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mriad.infra.errors import MriadError
from mriad.synth import lesions
from mriad.synth.anatomy import (
    AtlasArrays,
    make_warp,
    random_contrast,
    random_pose,
    render_tissue,
    rician,
    sample_mask,
)
from mriad.synth.layouts import Naming, OutGrid, brats_grid, preprocessed_grid, scanner_grid


@dataclass(frozen=True)
class Profile:
    """How far a subject strays from the atlas, and how poor its acquisition is."""

    rotation_deg: float
    scale: float
    shift_mm: float
    bias: float
    noise: tuple[float, float]  # Rician sigma range, relative to the brightest tissue
    min_lesion_voxels: int


# Preprocessed scans are already registered and bias-corrected: small residual pose and bias.
# Raw scanner-space scans (IXI, MSLUB) sit anywhere in the field of view with a strong bias field;
# BraTS raw scans are already on the SRI24 grid.
PROFILES = {
    "preprocessed": Profile(3.0, 0.04, 3.0, 0.04, (0.01, 0.025), 8),
    "ixi": Profile(10.0, 0.06, 10.0, 0.25, (0.015, 0.035), 40),
    "mslub": Profile(10.0, 0.06, 10.0, 0.25, (0.015, 0.035), 40),
    "brats": Profile(2.0, 0.03, 2.0, 0.12, (0.015, 0.03), 40),
}
ELASTIC_MM = 3.0
LESION_ATTEMPTS = 10


@dataclass(frozen=True)
class SubjectPlan:
    """Who a subject is before any image is drawn (naming and demographics come first)."""

    index: int
    naming: Naming
    label: int
    age: float
    sex: str  # "M" or "F"
    lesion_kind: str | None  # "tumour", "ms" or None


@dataclass
class Rendered:
    """A subject's image in contrast units (not yet scaled or normalised) on its grid."""

    image: np.ndarray
    brain: np.ndarray  # uint8 brain mask
    labels: np.ndarray | None  # uint8 lesion labels (BraTS labels for tumours), None if healthy
    grid: OutGrid
    others: list[np.ndarray] = field(default_factory=list)  # further modalities of the same subject, in order


def render(
    plan: SubjectPlan,
    rng: np.random.Generator,
    atlas: AtlasArrays,
    modality: str,
    preprocessed: bool,
    others: Sequence[str] = (),
) -> Rendered:
    """Draw one subject. Skull-stripped output for the preprocessed layout and for BraTS.

    ``others``: further modalities of the same subject (same pose, warp, bias field and lesion, its
    own contrast jitter and noise), drawn after the first modality is complete, so the first one is
    the single-modality subject, byte for byte.
    """
    dataset = plan.naming.dataset
    profile = PROFILES["preprocessed" if preprocessed else dataset]
    pose = random_pose(rng, atlas, rotation_deg=profile.rotation_deg, scale=profile.scale, shift_mm=profile.shift_mm)
    contrast = random_contrast(modality, rng, atlas)
    if preprocessed:
        grid = preprocessed_grid()
    elif dataset == "brats":
        grid = brats_grid(atlas)
    else:
        grid = scanner_grid(rng, dataset, atlas, pose)
    atrophy = float(np.clip((plan.age - 20.0) / 66.0, 0.0, 1.0))
    warp = make_warp(
        rng, atlas, grid.shape, grid.affine, pose, elastic_mm=ELASTIC_MM, atrophy=atrophy, bias=profile.bias
    )
    brain_frac, block = sample_mask(atlas, warp)
    stripped = preprocessed or dataset == "brats"
    head_block = None if stripped else warp.block(atlas.head_lo, atlas.head_hi)
    image = render_tissue(
        atlas, warp.coords, contrast, brain_frac, block, head_block, smooth=preprocessed, with_head=not stripped
    )
    labels, placed = None, None
    if plan.lesion_kind:
        for _ in range(LESION_ATTEMPTS):
            box = lesions.draw(plan.lesion_kind, rng, atlas, modality)
            trial = image.copy()
            labels = lesions.apply(box, warp, trial, brain_frac)
            if int(np.count_nonzero(labels)) >= profile.min_lesion_voxels:
                image, placed = trial, box
                break
        else:
            raise MriadError(f"synth: could not place a visible lesion in {plan.naming.subject}; try another --seed")
    brain = (brain_frac > 0.5).astype(np.uint8)
    finish = _Finish(rng, warp.log_bias, profile.noise, brain, block, stripped)
    image = finish(image, contrast)
    extra = []
    for other in others:
        tissue = random_contrast(other, rng, atlas)
        channel = render_tissue(
            atlas, warp.coords, tissue, brain_frac, block, head_block, smooth=preprocessed, with_head=not stripped
        )
        if placed is not None:
            lesions.apply(lesions.recolour(placed, modality, other), warp, channel, brain_frac)
        extra.append(finish(channel, tissue))
    return Rendered(image=image, brain=brain, labels=labels, grid=grid, others=extra)


@dataclass
class _Finish:
    """Bias field, Rician noise and skull stripping of one rendered contrast (the last draws of a channel)."""

    rng: np.random.Generator
    log_bias: np.ndarray
    noise: tuple[float, float]
    brain: np.ndarray
    block: Any
    stripped: bool

    def __call__(self, image: np.ndarray, contrast: Any) -> np.ndarray:
        image *= np.exp(self.log_bias)
        sigma = self.rng.uniform(*self.noise) * float(contrast.brain_y.max())
        if self.stripped:
            # Skull-stripped: noise only matters inside the brain block; everything else stays 0.
            if self.block is not None:
                image[self.block] = rician(image[self.block], sigma, self.rng)
            image *= self.brain
            return image
        return rician(image, sigma, self.rng)


def normalise(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The contract's intensity scale: 1st-99th percentile inside the mask -> [0, 1], 0 outside."""
    inside = image[mask > 0]
    lo, hi = np.percentile(inside, [1, 99]) if inside.size else (0.0, 1.0)
    scaled = np.clip((image - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0)
    return (scaled * (mask > 0)).astype(np.float32)


def to_scanner_units(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Arbitrary scanner scaling stored as int16, like most raw NIfTI releases."""
    scale = rng.uniform(300.0, 1500.0)
    return np.clip(np.rint(image * scale), 0, np.iinfo(np.int16).max).astype(np.int16)
