"""Where synthetic scans go and on which voxel grids: the file layouts of the real data sets.

Raw layouts copy what a user downloads, so that ``mriad preprocess`` has real work to do:

- IXI (healthy): a flat folder ``OUT/IXI/IXI012-HH-1211-T2.nii.gz``, with skull, scanner-space
  voxel orientations that are not RAS (PSR, LPS, LAS, ...) and anisotropic voxels, plus the
  demographics spreadsheet as ``OUT/IXI.csv`` (``IXI_ID, SEX_ID, AGE``; SEX_ID 1 male, 2 female);
- BraTS 2021: ``OUT/BraTS2021/BraTS2021_00000/BraTS2021_00000_t2.nii.gz`` and ``..._seg.nii.gz``
  (labels 1, 2, 4), skull-stripped, on the SRI24 1 mm grid stored LPS like the real files;
- MSLUB: ``OUT/MSLUB/patient01/T2W.nii.gz`` and ``consensus_gt.nii.gz``, with skull, oblique-free
  but non-RAS and anisotropic.

Ground truth that no data set ships (the brain mask, a binary lesion mask, all on the raw grid) goes
to ``OUT/_truth/<subject>/`` so preprocessing can be checked against it without an adapter ever
mistaking it for a scan. The preprocessed layout is the contract's ``OUT/<dataset>/<subject>/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mriad.atlas import EXPECTED_SHAPE, final_grid
from mriad.contracts.subject_folder import SubjectFolder
from mriad.synth.anatomy import AtlasArrays

LAYOUTS = ("ixi", "brats", "mslub")
RAW_FOLDERS = {"ixi": "IXI", "brats": "BraTS2021", "mslub": "MSLUB"}
TRUTH_FOLDER = "_truth"
DEMOGRAPHICS = "IXI.csv"
IXI_SITES = ("HH", "Guys", "IOP")
_IXI_SUFFIX = {"t2": "T2", "t1": "T1"}  # IXI has no FLAIR (refused before anything is drawn)
_MSLUB_NAME = {"t2": "T2W", "t1": "T1W", "flair": "FLAIR"}

# (voxel orientation, voxel spacing in mm along the voxel axes); the thick axis is the slice axis.
IXI_GRIDS = (
    ("PSR", (0.9375, 0.9375, 1.2)),
    ("LPS", (0.9375, 0.9375, 1.2)),
    ("LAS", (0.9, 0.9, 1.2)),
    ("LIP", (0.9375, 1.2, 0.9375)),
)
MSLUB_GRIDS = (
    ("LAS", (1.0, 1.0, 3.0)),
    ("LPS", (0.9, 0.9, 3.0)),
    ("PSR", (0.9, 0.9, 1.2)),
)


@dataclass(frozen=True)
class OutGrid:
    """A voxel grid to synthesise on."""

    shape: tuple[int, int, int]
    affine: np.ndarray
    orientation: str
    spacing: tuple[float, float, float]


def oriented_grid(
    orientation: str, spacing: tuple[float, float, float], extent_mm: np.ndarray, centre: np.ndarray
) -> OutGrid:
    """An axis-aligned grid with the given voxel orientation (e.g. ``"PSR"``) centred on ``centre``.

    ``extent_mm`` is the field of view along the world axes (R, A, S).
    """
    import nibabel as nib

    ornt = nib.orientations.axcodes2ornt(tuple(orientation))
    affine = np.eye(4)
    shape = []
    for voxel_axis, (world_axis, sign) in enumerate(ornt.astype(int)):
        n = int(round(extent_mm[world_axis] / spacing[voxel_axis]))
        affine[:3, voxel_axis] = 0.0
        affine[world_axis, voxel_axis] = sign * spacing[voxel_axis]
        shape.append(n)
    half = (np.array(shape, float) - 1) / 2.0
    affine[:3, 3] = centre - affine[:3, :3] @ half
    return OutGrid(tuple(shape), affine, orientation, tuple(float(s) for s in spacing))  # type: ignore[arg-type]


def scanner_grid(rng: np.random.Generator, dataset: str, atlas: AtlasArrays, pose: np.ndarray) -> OutGrid:
    """A scanner-space grid (IXI or MSLUB) around the posed head, with a random orientation/spacing."""
    choices = IXI_GRIDS if dataset == "ixi" else MSLUB_GRIDS
    orientation, spacing = choices[int(rng.integers(len(choices)))]
    # About the real IXI T2 field of view (256x256x130 voxels of 0.94x0.94x1.2 mm); it sits a little
    # below the brain's centre so the vertex of the skull fits.
    extent = np.array([rng.uniform(220, 235), rng.uniform(235, 250), rng.uniform(155, 170)])
    centre = (pose @ np.append(atlas.brain_centre, 1.0))[:3] + np.array([0.0, 0.0, 2.0])
    centre += rng.uniform(-5, 5, size=3)
    return oriented_grid(orientation, spacing, extent, centre)


def brats_grid(atlas: AtlasArrays) -> OutGrid:
    """The SRI24 240x240x155 grid at 1 mm, stored LPS as BraTS does (x -> left, y -> posterior)."""
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3] = EXPECTED_SHAPE[0] - 1
    flip[1, 3] = EXPECTED_SHAPE[1] - 1
    affine = atlas.affine @ flip
    return OutGrid(EXPECTED_SHAPE, affine, "LPS", (1.0, 1.0, 1.0))


def preprocessed_grid() -> OutGrid:
    grid = final_grid()
    return OutGrid(grid.shape, grid.affine, "RAS", (2.0, 2.0, 2.0))


@dataclass(frozen=True)
class Naming:
    """A subject's identity and where its files go."""

    subject: str
    dataset: str
    ixi_id: int | None = None
    raw_name: str | None = None  # IXI's full stem, e.g. IXI012-HH-1211


def ixi_naming(index: int, rng: np.random.Generator) -> Naming:
    """IXI IDs count up from IXI002 like the real release; site and series are drawn."""
    ixi_id = 2 + index
    site = IXI_SITES[int(rng.integers(len(IXI_SITES)))]
    series = int(rng.integers(0, 10000))
    subject = f"IXI{ixi_id:03d}"
    return Naming(subject, "ixi", ixi_id, f"{subject}-{site}-{series:04d}")


def lesion_naming(dataset: str, index: int) -> Naming:
    if dataset == "brats":
        return Naming(f"BraTS2021_{index:05d}", "brats")
    return Naming(f"patient{index + 1:02d}", "mslub")


def raw_paths(out: Path, naming: Naming, modality: str) -> dict[str, Path]:
    """Image (and lesion label) paths of a subject in its data set's raw layout."""
    folder = out / RAW_FOLDERS[naming.dataset]
    if naming.dataset == "ixi":
        return {"image": folder / f"{naming.raw_name}-{_IXI_SUFFIX[modality]}.nii.gz"}
    if naming.dataset == "brats":
        sub = folder / naming.subject
        return {"image": sub / f"{naming.subject}_{modality}.nii.gz", "seg": sub / f"{naming.subject}_seg.nii.gz"}
    sub = folder / naming.subject
    return {"image": sub / f"{_MSLUB_NAME[modality]}.nii.gz", "seg": sub / "consensus_gt.nii.gz"}


def truth_paths(out: Path, naming: Naming) -> dict[str, Path]:
    folder = out / TRUTH_FOLDER / naming.subject
    return {
        "brainmask": folder / f"{naming.subject}_brainmask_gt.nii.gz",
        "seg": folder / f"{naming.subject}_seg_gt.nii.gz",
    }


def preprocessed_paths(out: Path, naming: Naming) -> dict[str, Path]:
    folder = SubjectFolder.of(out, naming.dataset, naming.subject)
    return {"image": folder.image, "mask": folder.mask, "seg": folder.seg}
