"""Memory bombs (issue 14, defect 5): files whose header or gzip stream asks for far more memory than
the file holds. Each is read by `mriad.infra.io.read_nifti` in a child process whose peak RSS is
measured (and whose address space is capped at 3 GiB, so a regression fails the test instead of
waking the OOM killer on a shared machine).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from reliability_helpers import ROOT, snapshot

PEAK_LIMIT_MB = 1024
_ADDRESS_SPACE = 3 << 30

# The child reads one file and reports its own peak RSS: VmHWM of /proc/self/status, in KiB. Not
# getrusage's ru_maxrss: Linux carries that across fork + exec, so the child would report the parent's
# (a long pytest session's) peak instead of its own.
_CHILD = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))
from mriad.infra.errors import InputError
from mriad.infra.io import read_nifti
try:
    read_nifti(sys.argv[1])
    outcome = "accepted"
except InputError as exc:
    outcome = str(exc)
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({{"outcome": outcome, "peak_mb": int(hwm.split()[1]) / 1024}}))
"""


def _read_in_child(path: Path, **env: str) -> tuple[str, float]:
    result = subprocess.run(
        [sys.executable, "-c", _CHILD.format(cap=_ADDRESS_SPACE), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return report["outcome"], report["peak_mb"]


def _nifti_bytes(data: np.ndarray) -> bytes:
    image = nib.Nifti1Image(data, np.eye(4))
    buffer = io.BytesIO()
    file_map = nib.Nifti1Image.make_file_map()
    file_map["image"].fileobj = buffer
    image.to_file_map(file_map)
    return buffer.getvalue()


def _header_bomb(path: Path) -> Path:
    """A valid NIfTI header declaring 2000x2000x1000 float32 (16 GB) and no voxels at all."""
    header = bytearray(_nifti_bytes(np.zeros((2, 2, 2), np.float32))[:352])
    struct.pack_into("<8h", header, 40, 3, 2000, 2000, 1000, 1, 1, 1, 1)
    path.write_bytes(gzip.compress(bytes(header), compresslevel=9, mtime=0))
    return path


def test_header_bomb_is_refused_before_allocating(tmp_path: Path) -> None:
    bomb = _header_bomb(tmp_path / "bomb.nii.gz")
    assert bomb.stat().st_size < 200
    before = snapshot(tmp_path, ["*"])
    # Default cap: 4e9 voxels is over the limit, refused from the header alone.
    outcome, peak = _read_in_child(bomb)
    assert "voxels, over the limit" in outcome and str(bomb) in outcome, outcome
    assert peak < PEAK_LIMIT_MB, f"peak RSS {peak:.0f} MB"
    # With the cap raised, the declared size is checked against what the file holds.
    outcome, peak = _read_in_child(bomb, MRIAD_MAX_VOXELS=str(10**10))
    assert "the header declares 16000000000 bytes of voxels, the file holds 0" in outcome, outcome
    assert peak < PEAK_LIMIT_MB, f"peak RSS {peak:.0f} MB"
    assert snapshot(tmp_path, ["*"]) == before  # reading changes nothing


def test_uncompressed_header_bomb_is_refused(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.nii"
    bomb.write_bytes(gzip.decompress(_header_bomb(tmp_path / "bomb.nii.gz").read_bytes()))
    outcome, peak = _read_in_child(bomb, MRIAD_MAX_VOXELS=str(10**10))
    assert "bytes of voxels, the file holds 0" in outcome, outcome
    assert peak < PEAK_LIMIT_MB


def test_gzip_bomb_with_trailing_zeros_is_refused(tmp_path: Path) -> None:
    """A valid 32x32x8 image followed, in the same gzip stream, by 2.5 GiB of zeros (~12 MB on disk)."""
    rng = np.random.default_rng(0)
    image = _nifti_bytes(rng.random((32, 32, 8), dtype=np.float32))
    bomb = tmp_path / "bomb.nii.gz"
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    with open(bomb, "wb") as handle:  # streamed: the test itself never holds more than 1 MiB of zeros
        handle.write(compressor.compress(image))
        for _ in range(2560):
            handle.write(compressor.compress(zeros))
        handle.write(compressor.flush())
    assert bomb.stat().st_size < 20 << 20
    before = snapshot(tmp_path, ["*"])
    outcome, peak = _read_in_child(bomb)
    assert "trailing data after the image" in outcome and str(bomb) in outcome, outcome
    assert "holds more than the 33120 bytes its header declares" in outcome, outcome
    assert peak < PEAK_LIMIT_MB, f"peak RSS {peak:.0f} MB"
    assert snapshot(tmp_path, ["*"]) == before


@pytest.mark.parametrize(
    ("dtype", "fragment"),
    [(np.complex64, "voxels are complex"), (np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")]), "RGB")],
)
def test_complex_and_rgb_voxels_are_refused(tmp_path: Path, dtype: object, fragment: str) -> None:
    from mriad.infra.errors import InputError
    from mriad.infra.io import read_nifti

    path = tmp_path / "odd.nii.gz"
    path.write_bytes(gzip.compress(_nifti_bytes(np.ones((4, 4, 4), dtype=dtype)), mtime=0))
    with pytest.raises(InputError, match=fragment) as caught:
        read_nifti(path)
    assert str(caught.value).startswith(str(path))


def test_trailing_bytes_after_an_uncompressed_image_are_refused(tmp_path: Path) -> None:
    from mriad.infra.errors import InputError
    from mriad.infra.io import read_nifti

    path = tmp_path / "padded.nii"
    path.write_bytes(_nifti_bytes(np.ones((4, 4, 4), np.float32)) + b"x" * 100)
    with pytest.raises(InputError, match="100 bytes of trailing data"):
        read_nifti(path)


@pytest.mark.parametrize("pixdim", [0.0, float("nan")])
def test_a_bad_voxel_size_names_the_image(tmp_path: Path, pixdim: float) -> None:
    """pixdim 0 or NaN without an sform: nibabel reads 1 mm; refused instead, naming the image (its
    mask, on a proper grid, would otherwise be refused for lying on "another grid")."""
    from mriad.infra.errors import InputError
    from mriad.infra.io import read_nifti

    header = bytearray(_nifti_bytes(np.ones((4, 4, 4), np.float32)))
    struct.pack_into("<f", header, 80, pixdim)  # pixdim[1]
    struct.pack_into("<hh", header, 252, 0, 0)  # qform_code, sform_code: none
    path = tmp_path / "image.nii.gz"
    path.write_bytes(gzip.compress(bytes(header), mtime=0))
    with pytest.raises(InputError, match="invalid voxel size") as caught:
        read_nifti(path)
    assert str(caught.value).startswith(str(path))
