"""The bad-input matrix, part 1: raw scans fed to `mriad preprocess`, the stage that reads them first.

One raw BraTS-layout folder holds a good case and one case per bad input (each a copy of the good
synthetic case with its scan or segmentation damaged); ONE `mriad preprocess` run goes over all of
them, as a user's batch would. Each case then checks its own outcome:

- refused: one failures.csv row whose reason is one line starting with the offending file and naming
  the problem, the same line on stderr, and no output files for that subject;
- accepted: a finished subject in the manifest (a warning where something was odd).

The batch exits with 1 (something failed) and the good case is finished: one bad subject never stops
the others.

Scale factor decision (documented here because the issue asks for it): the NIfTI standard reads
scl_slope = 0 as "no scaling", nibabel writes NaN for the same, and the real BraTS int16 files in
shared/realdata carry scl_slope = 0 with scl_inter = 0 (the IXI uint8 files a real slope of ~6). So a
0 or NaN slope alone is ACCEPTED (voxels unscaled, as every reader does); it is REFUSED when the
header also sets a non-zero scl_inter (the file asks for scaling that cannot be applied, and nibabel
would silently drop the offset), and an infinite slope is refused too.

sform/qform disagreement is ACCEPTED with a warning naming the file and the distance (the sform
wins, as in nibabel and fMRIPrep): refusing would reject scans that every viewer opens, and the
warning travels into the manifest's ``source`` column so it is not lost.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from reliability_helpers import assert_one_line_error, files_under

GOOD = "good"


@dataclass
class Source:
    """The synthetic raw BraTS case every bad case is made from."""

    image: nib.Nifti1Image
    seg: nib.Nifti1Image
    image_bytes: bytes
    seg_bytes: bytes

    def data(self) -> np.ndarray:
        return np.asarray(self.image.dataobj)


def _save(path: Path, data: np.ndarray, like: nib.Nifti1Image, **header: float) -> None:
    image = nib.Nifti1Image(data, like.affine)
    image.set_sform(like.affine, code=1)
    image.set_qform(like.affine, code=1)
    for key, value in header.items():
        image.header[key] = value
    nib.save(image, path)


# Each maker writes the case's `<case>_t2.nii.gz` (and `<case>_seg.nii.gz`) into its folder and
# returns which file is the bad one ("t2" or "seg").
def _good(src: Source, t2: Path, seg: Path) -> str:
    t2.parent.mkdir(parents=True, exist_ok=True)
    t2.write_bytes(src.image_bytes)
    seg.write_bytes(src.seg_bytes)
    return "t2"


def _corrupt_gzip(src: Source, t2: Path, seg: Path) -> str:
    _good(src, t2, seg)
    raw = bytearray(src.image_bytes)
    middle = len(raw) // 2
    raw[middle : middle + 64] = bytes(b ^ 0xFF for b in raw[middle : middle + 64])  # flipped compressed bits
    t2.write_bytes(bytes(raw))
    return "t2"


def _corrupt_gzip_checksum(src: Source, t2: Path, seg: Path) -> str:
    """Voxel bytes changed inside a well-formed deflate stream that keeps the original checksum: it
    inflates without any error, only gzip's CRC at the very end of the stream tells."""
    _good(src, t2, seg)
    raw = bytearray(gzip.decompress(src.image_bytes))
    raw[-4096:] = bytes(255 for _ in range(4096))
    stream = gzip.compress(bytes(raw), mtime=0)
    t2.write_bytes(stream[:-8] + src.image_bytes[-8:])  # CRC32 and length of the ORIGINAL data
    return "t2"


def _truncated(src: Source, t2: Path, seg: Path) -> str:
    _good(src, t2, seg)
    t2.write_bytes(src.image_bytes[: len(src.image_bytes) // 2])
    return "t2"


def _not_nifti(src: Source, t2: Path, seg: Path) -> str:
    _good(src, t2, seg)
    t2.write_bytes(gzip.compress(b"<html><body>404 not found</body></html>\n" * 20))
    return "t2"


def _four_d(src: Source, t2: Path, seg: Path) -> str:
    _good(src, t2, seg)
    _save(t2, np.stack([src.data()] * 3, axis=-1), src.image)
    return "t2"


def _two_d(src: Source, t2: Path, seg: Path) -> str:
    _good(src, t2, seg)
    _save(t2, src.data()[:, :, 80], src.image)
    return "t2"


def _singleton_4d(src: Source, t2: Path, seg: Path) -> str:
    _good(src, t2, seg)
    _save(t2, src.data()[..., None], src.image)
    return "t2"


def _sform_qform(src: Source, t2: Path, seg: Path) -> str:
    _good(src, t2, seg)
    image = nib.Nifti1Image(src.data(), src.image.affine)
    shifted = src.image.affine.copy()
    shifted[:3, 3] += (12.0, 0.0, 0.0)
    image.set_sform(src.image.affine, code=1)
    image.set_qform(shifted, code=1)
    nib.save(image, t2)
    return "t2"


def _scaled(slope: float, inter: float) -> Callable[[Source, Path, Path], str]:
    def make(src: Source, t2: Path, seg: Path) -> str:
        _good(src, t2, seg)
        _save(t2, src.data().astype(np.int16), src.image, scl_slope=slope, scl_inter=inter)
        return "t2"

    return make


def _bad_voxels(value: float) -> Callable[[Source, Path, Path], str]:
    def make(src: Source, t2: Path, seg: Path) -> str:
        _good(src, t2, seg)
        data = src.data().astype(np.float32)
        data[100:104, 100:104, 70:72] = value
        _save(t2, data, src.image)
        return "t2"

    return make


def _all_zero(src: Source, t2: Path, seg: Path) -> str:
    _good(src, t2, seg)
    _save(t2, np.zeros(src.image.shape, np.int16), src.image)
    return "t2"


def _seg_other_grid(src: Source, t2: Path, seg: Path) -> str:
    _good(src, t2, seg)
    moved = nib.Nifti1Image(np.asarray(src.seg.dataobj), src.seg.affine @ _translation(0.0, 0.0, 5.0))
    nib.save(moved, seg)
    return "seg"


def _seg_other_shape(src: Source, t2: Path, seg: Path) -> str:
    _good(src, t2, seg)
    _save(seg, np.asarray(src.seg.dataobj)[:, :, :-10], src.seg)
    return "seg"


def _seg_labels(src: Source, t2: Path, seg: Path) -> str:
    _good(src, t2, seg)
    labels = np.asarray(src.seg.dataobj).astype(np.uint8)
    labels[labels == 2] = 7  # BraTS has 1, 2, 4 (2023: 1, 2, 3)
    _save(seg, labels, src.seg)
    return "seg"


def _seg_fractional(src: Source, t2: Path, seg: Path) -> str:
    _good(src, t2, seg)
    probabilities = (np.asarray(src.seg.dataobj) > 0).astype(np.float32) * 0.7  # a soft map, not labels
    _save(seg, probabilities, src.seg)
    return "seg"


def _translation(x: float, y: float, z: float) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, 3] = (x, y, z)
    return matrix


@dataclass
class Case:
    make: Callable[[Source, Path, Path], str]
    accepted: bool
    fragment: str  # in the failure reason (refused) or in the warning (accepted; "" for none)


CASES: dict[str, Case] = {
    GOOD: Case(_good, True, ""),
    "corrupt_gzip": Case(_corrupt_gzip, False, "corrupt image data"),
    "corrupt_gzip_checksum": Case(_corrupt_gzip_checksum, False, "corrupt image data (CRC check failed)"),
    "truncated_nifti": Case(_truncated, False, "truncated or corrupt image data"),
    "not_nifti": Case(_not_nifti, False, "not a readable NIfTI file"),
    "image_4d": Case(_four_d, False, "expected a 3D image, got a 4D image"),
    "image_2d": Case(_two_d, False, "expected a 3D image, got a 2D image"),
    "singleton_4d": Case(_singleton_4d, True, ""),
    "sform_qform_disagree": Case(_sform_qform, True, "sform and qform disagree; using the sform"),
    "slope_0_with_offset": Case(_scaled(0.0, 100.0), False, "invalid intensity scale factor"),
    "slope_nan_with_offset": Case(_scaled(np.nan, 100.0), False, "invalid intensity scale factor"),
    "slope_inf": Case(_scaled(np.inf, 0.0), False, "invalid intensity scale factor"),
    "slope_0_plain": Case(_scaled(0.0, 0.0), True, ""),
    "nan_voxels": Case(_bad_voxels(np.nan), False, "32 NaN/Inf voxels"),
    "inf_voxels": Case(_bad_voxels(np.inf), False, "32 NaN/Inf voxels"),
    "all_zero": Case(_all_zero, False, "image is empty (all voxels are zero)"),
    "seg_other_grid": Case(_seg_other_grid, False, "different voxel grid"),
    "seg_other_shape": Case(_seg_other_shape, False, "differs from its image's"),
    "seg_unexpected_labels": Case(_seg_labels, False, "unexpected label"),
    "seg_fractional": Case(_seg_fractional, False, "unexpected label"),
}


@pytest.fixture(scope="module")
def source(raw_brats: Path) -> Source:
    case = sorted(p for p in raw_brats.iterdir() if p.is_dir())[0]
    t2, seg = case / f"{case.name}_t2.nii.gz", case / f"{case.name}_seg.nii.gz"
    return Source(nib.load(t2), nib.load(seg), t2.read_bytes(), seg.read_bytes())


@pytest.fixture(scope="module")
def batch(source: Source, tmp_path_factory: pytest.TempPathFactory):
    """Every case in one raw folder, preprocessed by one CLI run; returns (result, out, bad files)."""
    from typer.testing import CliRunner

    from mriad.cli import app

    root = tmp_path_factory.mktemp("raw_matrix")
    raw, out = root / "raw", root / "out"
    bad_files: dict[str, Path] = {}
    for name, case in CASES.items():
        folder = raw / name
        folder.mkdir(parents=True)
        t2, seg = folder / f"{name}_t2.nii.gz", folder / f"{name}_seg.nii.gz"
        bad_files[name] = {"t2": t2, "seg": seg}[case.make(source, t2, seg)]
    before = {p: p.read_bytes() for p in raw.rglob("*") if p.is_file()}
    result = CliRunner().invoke(
        app,
        ["--hide-progress", "preprocess", str(raw), str(out), "-d", "brats21", "--no-n4", "--no-qc"],
        catch_exceptions=False,
    )
    assert {p: p.read_bytes() for p in raw.rglob("*") if p.is_file()} == before, "an input was modified"
    return result, out, bad_files


def test_the_batch_exits_1_and_finishes_every_acceptable_case(batch) -> None:
    result, out, _ = batch
    assert result.exit_code == 1, result.output
    manifest = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    accepted = sorted(name for name, case in CASES.items() if case.accepted)
    assert sorted(manifest["subject_id"]) == accepted
    failures = pd.read_csv(out / "failures.csv", dtype=str, keep_default_na=False)
    assert sorted(failures["subject"]) == sorted(set(CASES) - set(accepted))
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if not c.accepted])
def test_refused_case(name: str, batch) -> None:
    result, out, bad_files = batch
    failures = pd.read_csv(out / "failures.csv", dtype=str, keep_default_na=False).set_index("subject")
    reason = failures.loc[name, "reason"]
    bad = str(bad_files[name])
    assert reason.startswith(f"{bad}: ") and CASES[name].fragment in reason, reason
    assert "\n" not in reason and failures.loc[name, "file"] == bad
    assert f"failed: {reason}" in result.output  # the same single line on the terminal
    assert not (out / "brats" / name).exists()  # nothing half-made for the refused subject


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c.accepted])
def test_accepted_case(name: str, batch) -> None:
    from mriad.infra.io import read_nifti

    result, out, _ = batch
    manifest = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False).set_index("subject_id")
    image = read_nifti(out / manifest.loc[name, "image"])
    assert image.shape == (96, 96, 50) and 0.0 <= image.data.min() and image.data.max() <= 1.0
    if CASES[name].fragment:
        assert CASES[name].fragment in manifest.loc[name, "source"]
        warning = next(line for line in result.output.splitlines() if CASES[name].fragment in line)
        assert f"{name}_t2.nii.gz" in warning and "mm off" in warning
    if name in ("singleton_4d", "slope_0_plain"):
        # Same voxels as the good case: squeezing and "no scaling" change nothing.
        good = read_nifti(out / manifest.loc[GOOD, "image"])
        np.testing.assert_array_equal(image.data, good.data)


# ---- refusals before any subject is read ------------------------------------------------------------
def _ixi_folder(source: Source, root: Path) -> Path:
    """IXI-named copies of the (skull-stripped, SRI24-space) case: cheap with --skull-strip/--registration none."""
    raw = root / "IXI"
    raw.mkdir(parents=True)
    for name in ("IXI012-HH-1211-T2.nii.gz", "IXI012-Guys-0990-T2.nii.gz", "IXI013-HH-1212-T2.nii.gz"):
        (raw / name).write_bytes(source.image_bytes)
    return raw


def test_wrong_modality_is_refused_before_anything_is_written(cli, source: Source, tmp_path: Path) -> None:
    raw = _ixi_folder(source, tmp_path)
    out = tmp_path / "out"
    result = cli("--hide-progress", "preprocess", raw, out, "-d", "ixi", "--modality", "flair")
    assert result.exit_code == 1
    assert_one_line_error(result.output, "--modality flair", "IXI data set has t1, t2, pd")
    assert not out.exists()


def test_a_modality_missing_from_every_case_fails_each_case(cli, source: Source, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    _good(source, *(raw / "case1" / f"case1_{kind}.nii.gz" for kind in ("t2", "seg")))
    result = cli("--hide-progress", "preprocess", raw, tmp_path / "out", "-d", "brats21", "--modality", "flair")
    assert result.exit_code == 1
    failures = pd.read_csv(tmp_path / "out" / "failures.csv", dtype=str, keep_default_na=False)
    assert list(failures["subject"]) == ["case1"]
    assert failures.loc[0, "reason"].startswith(str(raw / "case1")) and "no *_flair.nii.gz" in failures.loc[0, "reason"]
    assert files_under(tmp_path / "out" / "brats") == []


def test_duplicate_subject_ids_in_raw_data(cli, source: Source, tmp_path: Path) -> None:
    raw = _ixi_folder(source, tmp_path)
    out = tmp_path / "out"
    result = cli(
        "--hide-progress", "preprocess", raw, out, "-d", "ixi", "--skull-strip", "none", "--registration", "none",
        "--no-n4", "--no-qc",
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    failures = pd.read_csv(out / "failures.csv", dtype=str, keep_default_na=False)
    assert list(failures["subject"]) == ["IXI012"]
    assert "a second T2 scan of IXI012" in failures.loc[0, "reason"]
    manifest = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    assert sorted(manifest["subject_id"]) == ["IXI012", "IXI013"]  # the first scan of IXI012, and the other


def test_output_folder_inside_the_input_folder_is_refused(cli, source: Source, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    _good(source, *(raw / "case1" / f"case1_{kind}.nii.gz" for kind in ("t2", "seg")))
    result = cli("--hide-progress", "preprocess", raw, raw / "derived", "-d", "brats21")
    assert result.exit_code == 1
    assert_one_line_error(result.output, str(raw / "derived"), "may not be inside the raw folder")
    assert not (raw / "derived").exists()


def test_missing_raw_folder_is_refused(cli, tmp_path: Path) -> None:
    result = cli("--hide-progress", "preprocess", tmp_path / "nowhere", tmp_path / "out", "-d", "brats21")
    assert result.exit_code == 1
    assert_one_line_error(result.output, str(tmp_path / "nowhere"), "raw data not found")
    assert not (tmp_path / "out").exists()
