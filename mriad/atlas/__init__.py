"""The SRI24 atlas shipped in ``atlases/sri24`` and the fixed grids that preprocessing writes.

The shipped files do not share a voxel orientation (the head template is RAS, the skull-stripped one
LAS); they only agree in world coordinates. Everything here therefore goes through affines and hands
out canonical (RAS) volumes.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mriad.infra.errors import MriadError
from mriad.infra.io import Volume

ATLAS_NAME = "sri24"
FILES = {
    "t1_head": "t1_brats_space.nii.gz",
    "t1_brain": "t1_skullstripped_brats_space.nii.gz",
    "brain_mask": "brain_mask_brats_space.nii.gz",
}
# Templates of other modalities installed by `mriad atlas install sri24` (full SRI24 distribution).
OPTIONAL_FILES = {f"{m}_{k}": f"full/{m}_{k}.nii.gz" for m in ("t1", "t2", "pd") for k in ("head", "brain")}
EXPECTED_SHAPE = (240, 240, 155)
SHA256 = {
    "t1_brats_space.nii.gz": "7d85a458f3ef2cbbdf63328d718c63c03efc382e6159d066be01eb88c0856ce2",
    "t1_skullstripped_brats_space.nii.gz": "a473525a7e3295724edf809a679e015a64c3cc29aec6f02581c2b57cb3af53e3",
    "brain_mask_brats_space.nii.gz": "517b3237f4090bde93a5fd2d869cfaef717a8c269e399d2bbe38cf503c147893",
}

# Paper grid: crop/pad to 192x192x160 at 1 mm, downsample x2 -> 96x96x80, drop 15 axial slices on
# each side -> 96x96x50.
CROP_SHAPE = (192, 192, 160)
DOWNSAMPLE = 2
DROP_SLICES = 15
FINAL_SHAPE = (96, 96, 50)


def atlas_root() -> Path:
    """``$MRIAD_ATLAS_DIR``, else ``atlases/`` beside the package (source checkout / editable install)."""
    env = os.environ.get("MRIAD_ATLAS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "atlases"


def atlas_dir() -> Path:
    path = atlas_root() / ATLAS_NAME
    if not (path / FILES["t1_brain"]).is_file():
        raise MriadError(f"{path}: the SRI24 atlas is missing; set MRIAD_ATLAS_DIR or reinstall mriad")
    return path


@functools.lru_cache(maxsize=8)
def _load_canonical(path: str) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    img: Any = nib.load(path)  # a NIfTI image: nibabel types load() as the generic base
    if len(img.shape) == 4 and img.shape[3] == 1:  # the shipped files carry a singleton 4th axis
        img = nib.Nifti1Image(np.asarray(img.dataobj)[..., 0], img.affine, img.header)
    img = nib.as_closest_canonical(img)
    data = np.asarray(img.dataobj, dtype=np.float32)
    data.setflags(write=False)
    return data, img.affine.copy()


def load_template(kind: str = "t1_brain", modality: str | None = None) -> Volume:
    """A canonical (RAS) atlas volume: ``t1_head``, ``t1_brain`` or ``brain_mask``.

    With ``modality`` (``t2``, ``pd``), an installed template of that modality is preferred and the
    shipped T1 one is the fallback.
    """
    root = atlas_dir()
    if modality and modality != "t1" and kind in ("t1_head", "t1_brain"):
        candidate = root / OPTIONAL_FILES[f"{modality}_{kind.split('_')[1]}"] if modality in ("t2", "pd") else None
        if candidate is not None and candidate.is_file():
            data, affine = _load_canonical(str(candidate))
            return Volume(data=data, affine=affine, path=str(candidate))
    path = root / FILES[kind]
    data, affine = _load_canonical(str(path))
    return Volume(data=data, affine=affine, path=str(path))


def available_templates() -> dict[str, Path]:
    root = atlas_root() / ATLAS_NAME
    found = {k: root / v for k, v in FILES.items() if (root / v).is_file()}
    found.update({k: root / v for k, v in OPTIONAL_FILES.items() if (root / v).is_file()})
    return found


@dataclass(frozen=True)
class Grid:
    shape: tuple[int, int, int]
    affine: np.ndarray


@functools.lru_cache(maxsize=1)
def crop_grid() -> Grid:
    """The 192x192x160 1 mm grid centred on the atlas brain (canonical RAS)."""
    mask = load_template("brain_mask")
    coords = np.argwhere(mask.data > 0)
    centre = (coords.min(axis=0) + coords.max(axis=0)) / 2.0
    start = np.round(centre - (np.array(CROP_SHAPE) - 1) / 2.0).astype(int)
    affine = mask.affine.copy()
    affine[:3, 3] = mask.affine[:3, :3] @ start + mask.affine[:3, 3]
    return Grid(CROP_SHAPE, affine)


@functools.lru_cache(maxsize=1)
def downsampled_grid() -> Grid:
    """The 96x96x80 grid of 2 mm voxels covering :func:`crop_grid` (voxel centres between pairs)."""
    crop = crop_grid()
    scale = np.diag([DOWNSAMPLE, DOWNSAMPLE, DOWNSAMPLE, 1.0])
    shift = np.eye(4)
    shift[:3, 3] = (DOWNSAMPLE - 1) / 2.0
    affine = crop.affine @ shift @ scale
    shape = tuple(s // DOWNSAMPLE for s in CROP_SHAPE)
    return Grid(shape, affine)  # type: ignore[arg-type]


@functools.lru_cache(maxsize=1)
def final_grid() -> Grid:
    """The paper's 96x96x50 grid: :func:`downsampled_grid` without 15 axial slices at each end."""
    down = downsampled_grid()
    shift = np.eye(4)
    shift[2, 3] = DROP_SLICES
    return Grid(FINAL_SHAPE, down.affine @ shift)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_atlas() -> list[tuple[str, bool, str]]:
    """Verify each shipped file: present, checksum, 240x240x155 shape, 1 mm spacing, shared world space."""
    root = atlas_root() / ATLAS_NAME
    results: list[tuple[str, bool, str]] = []
    for kind, name in FILES.items():
        path = root / name
        if not path.is_file():
            results.append((name, False, "missing"))
            continue
        digest = sha256(path)
        if digest != SHA256[name]:
            results.append((name, False, f"checksum mismatch ({digest[:12]}...)"))
            continue
        volume = load_template(kind)
        spacing = volume.spacing
        if volume.shape != EXPECTED_SHAPE:
            results.append((name, False, f"shape {volume.shape}, expected {EXPECTED_SHAPE}"))
        elif not np.allclose(spacing, 1.0, atol=1e-3):
            results.append((name, False, f"spacing {spacing}, expected 1 mm"))
        else:
            results.append((name, True, f"{volume.shape} at 1 mm, sha256 ok"))
    if all(ok for _, ok, _ in results):
        brain = load_template("t1_brain")
        mask = load_template("brain_mask")
        head = load_template("t1_head")
        same = np.allclose(brain.affine, mask.affine) and np.allclose(brain.affine, head.affine)
        inside = float((head.data[mask.data > 0] > 0).mean())
        results.append(
            (
                "world alignment",
                same and inside > 0.95,
                f"canonical grids equal: {same}; head template non-zero in {inside:.1%} of the brain mask",
            )
        )
    for name in OPTIONAL_FILES.values():
        path = root / name
        if path.is_file():
            data, _ = _load_canonical(str(path))
            volume = Volume(data=data, affine=np.eye(4), path=str(path))
            ok = len(volume.shape) == 3 and np.all(np.isfinite(volume.data)) and volume.data.max() > 0
            results.append((name, bool(ok), f"installed, shape {volume.shape}"))
    return results
