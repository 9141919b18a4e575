"""NIfTI reading/writing with validation, and atomic file writes.

Every output is written to a temporary file in the destination folder and moved into place with
``os.replace``, so a crash never leaves a half-written file under its final name. Inputs are only
ever opened for reading.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mriad.infra.errors import InputError

# sform and qform may legitimately differ by float rounding; beyond this they describe different spaces.
_AFFINE_TOLERANCE_MM = 1e-3
# The largest image a reader allocates unless told otherwise: 512^3 voxels (512 MiB as float32), far
# above any brain MRI (1 mm SRI24: 9 M voxels), far below what would wake the OOM killer.
MAX_VOXELS_ENV = "MRIAD_MAX_VOXELS"
DEFAULT_MAX_VOXELS = 512**3
_READ_CHUNK = 1 << 20


@dataclass
class Volume:
    """A 3D image in voxel order with its voxel-to-world (RAS mm) affine."""

    data: np.ndarray
    affine: np.ndarray
    path: str = ""
    note: str = ""  # e.g. which of sform/qform was used when they disagreed

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(float(s) for s in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it into place, on error remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keep the real suffix (.nii.gz, .png, ...) so libraries that dispatch on the name still work.
    suffix = suffix if suffix is not None else "".join(path.suffixes)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}.", suffix=".tmp" + suffix, dir=path.parent)
    except OSError as exc:
        _raise_named(exc, path)
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; outputs get the usual umask-governed permissions instead.
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if isinstance(exc, OSError):
            _raise_named(exc, path)
        raise


def _raise_named(exc: OSError, path: Path) -> None:
    """Raise ``exc`` again naming ``path`` when it names no file (a full disk fails a nameless write())."""
    if exc.filename is None and exc.errno is not None:
        raise OSError(exc.errno, exc.strerror, str(path)) from exc


def remove_temporaries(folder: str | Path) -> int:
    """Delete the ``.<name>.XXXX.tmp<suffix>`` files that :func:`atomic_path` writers killed mid-write left.

    Call only while holding the folder (see :func:`mriad.infra.locking.folder_lock`): a live writer's
    temporary file looks the same. Not recursive. Returns how many were removed.
    """
    removed = 0
    folder = Path(folder)
    if folder.is_dir():
        for path in folder.glob(".*.tmp*"):
            if path.is_file():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed += 1
    return removed


def _read_umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


# Read once at import: os.umask can only be read by setting it, which is racy once threads write files.
_UMASK = _read_umask()


def atomic_write_bytes(path: str | Path, payload: bytes) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_write_csv(path: str | Path, frame: Any, **kwargs: Any) -> Path:
    """Write a pandas DataFrame as CSV atomically."""
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, **kwargs)
    return atomic_write_text(path, buffer.getvalue())


def atomic_torch_save(path: str | Path, obj: Any) -> Path:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def link_or_copy(source: str | Path, target: str | Path) -> None:
    """``target`` as a hard link to ``source`` (the same bytes, no space: checkpoints shared between run
    folders), or a copy where a link cannot be made (another file system)."""
    try:
        Path(target).hardlink_to(source)
    except OSError:
        import shutil

        shutil.copyfile(source, target)


def safe_torch_load(path: str | Path, map_location: Any = "cpu") -> Any:
    """Load a checkpoint without ever unpickling code (``weights_only=True``)."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsafe content"
        raise InputError(path, f"refused: not a plain weights checkpoint ({first[:160]})") from None
    except Exception as exc:  # garbage makes torch's unpickler fail in many ways (IndexError, KeyError...)
        raise InputError(path, f"not a readable checkpoint ({type(exc).__name__})") from None


def _pick_affine(img: Any, path: Path) -> tuple[np.ndarray, str]:
    """Choose the affine like ITK does (sform if set, else qform) and say so when they disagree."""
    header = img.header
    sform, scode = img.get_sform(coded=True)
    qform, qcode = img.get_qform(coded=True)
    note = ""
    if sform is not None and qform is not None and scode > 0 and qcode > 0:
        if not np.allclose(sform, qform, atol=_AFFINE_TOLERANCE_MM):
            # How far apart the two put the image: the largest displacement of a corner voxel, in mm.
            corners = np.array(np.meshgrid(*[[0, max(n - 1, 0)] for n in img.shape[:3]], [1], indexing="ij"))
            corners = corners.reshape(4, -1)
            apart = float(np.abs((np.asarray(sform) - np.asarray(qform)) @ corners)[:3].max())
            note = f"{path.name}: sform and qform disagree; using the sform (the qform is up to {apart:.1f} mm off)"
    if sform is not None and scode > 0:
        affine = sform
    else:
        _check_voxel_size(img, path)
        affine = qform if qform is not None and qcode > 0 else header.get_best_affine()
    affine = np.asarray(affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise InputError(path, "invalid voxel-to-world affine (singular or non-finite)")
    return affine, note


def read_nifti(
    path: str | Path, *, allow_empty: bool = False, dtype: Any = np.float32, channels: bool = False
) -> Volume:
    """Read and validate a 3D NIfTI image.

    Accepted: 3D images, and 4D images whose trailing dimensions are 1 (squeezed); with ``channels``
    also 4D images ``(X, Y, Z, C)``, a preprocessed multi-channel image (docs/CONTRACTS.md). Refused with an
    :class:`InputError` naming the file: unreadable or truncated files, other 4D or 2D images,
    NaN/Inf voxels, an unusable scale factor (see :func:`_check_scale_factor`), and (unless
    ``allow_empty``) all-zero images.
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for garbage input
        raise InputError(path, f"not a readable NIfTI file ({_short(exc)})") from None
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise InputError(path, f"not a NIfTI image ({type(img).__name__})")
    _check_scale_factor(img, path)
    shape = img.shape
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3 and not (channels and len(shape) == 4):
        kind = "2D" if len(shape) < 3 else f"{len(shape)}D"
        raise InputError(path, f"expected a 3D image, got a {kind} image of shape {tuple(img.shape)}")
    if min(shape[:3]) < 2:
        raise InputError(path, f"expected a 3D image, got shape {tuple(img.shape)} (a 2D slice?)")
    _check_voxel_type(img, path)
    try:
        source = _bounded_image(img, path)
        data = np.asarray(source.dataobj, dtype=np.float64 if dtype == np.float64 else np.float32)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(path, f"truncated or corrupt image data ({_short(exc)})") from None
    data = data.reshape(shape)
    if not np.all(np.isfinite(data)):
        bad = int((~np.isfinite(data)).sum())
        raise InputError(path, f"{bad} NaN/Inf voxels")
    if not allow_empty and not np.any(data):
        raise InputError(path, "image is empty (all voxels are zero)")
    affine, note = _pick_affine(img, path)
    return Volume(data=data.astype(dtype, copy=False), affine=affine, path=str(path), note=note)


def max_voxels() -> int:
    """The largest image (in voxels) a reader accepts: ``$MRIAD_MAX_VOXELS``, else :data:`DEFAULT_MAX_VOXELS`."""
    text = os.environ.get(MAX_VOXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_VOXELS
    try:
        value = int(text)
    except ValueError:
        raise InputError(MAX_VOXELS_ENV, f"expected a positive whole number of voxels, got {text!r}") from None
    if value < 1:
        raise InputError(MAX_VOXELS_ENV, f"expected a positive whole number of voxels, got {text!r}")
    return value


def _check_voxel_type(img: Any, path: Path) -> None:
    """Refuse voxel types that are not one intensity per voxel: casting them would silently drop data."""
    dtype = img.header.get_data_dtype()
    if dtype.fields is not None:
        raise InputError(path, f"voxels are {dtype} (RGB/multi-channel): convert the scan to one intensity per voxel")
    if dtype.kind == "c":
        raise InputError(path, f"voxels are complex ({dtype}): convert the scan to magnitude images first")
    if dtype.kind not in "uif":
        raise InputError(path, f"voxel type {dtype} is not a number type")


def _bounded_image(img: Any, path: Path) -> Any:
    """The image whose voxels may be read, once the file is known to hold exactly what its header declares.

    The header's size is checked against :func:`max_voxels` and against the file before any voxel is
    allocated (a 119-byte file may declare 16 GB), a .nii.gz is inflated in a stream that stops one byte
    past the declared size (a valid image followed by gigabytes of zeros costs nothing), and data after
    the image is refused. Inflating the whole stream also checks gzip's CRC and length, which nibabel's
    own reader never reaches: flipped bytes in the middle would otherwise decode to wrong voxels.
    """
    voxels = math.prod(int(n) for n in img.shape)
    limit = max_voxels()
    if voxels > limit:
        raise InputError(
            path,
            f"the header declares {'x'.join(str(n) for n in img.shape)} = {voxels} voxels, over the limit "
            f"of {limit} (set {MAX_VOXELS_ENV} to read larger images)",
        )
    # The array proxy knows where the voxels start (a loaded header reports offset 0).
    offset = int(getattr(img.dataobj, "offset", img.header.get_data_offset()))
    needed = offset + voxels * img.header.get_data_dtype().itemsize
    name = path.name.lower()
    if name.endswith(".nii"):
        size = path.stat().st_size
        _check_length(path, size, needed, offset)
        return img
    if not name.endswith(".nii.gz"):
        return img  # a .hdr/.img pair and other layouts: nibabel's reader checks those
    raw = _inflate(path, needed)
    _check_length(path, len(raw), needed, offset)
    return type(img).from_bytes(raw)


def _check_length(path: Path, size: int, needed: int, offset: int) -> None:
    if size < needed:
        raise InputError(
            path,
            f"truncated or corrupt image data (the header declares {needed - offset} bytes of voxels, "
            f"the file holds {max(size - offset, 0)})",
        )
    if size > needed:
        raise InputError(path, f"{size - needed} bytes of trailing data after the image its header declares")


def _inflate(path: Path, limit: int) -> bytes:
    """Decompress a gzip file, stopping one byte past ``limit`` (so memory stays bounded by it)."""
    decompressor = zlib.decompressobj(wbits=31)  # gzip framing, CRC and length checked at the end
    chunks: list[bytes] = []
    total = 0
    with open(path, "rb") as handle:
        while not decompressor.eof:
            pending = handle.read(_READ_CHUNK)
            if not pending:
                raise InputError(path, "truncated or corrupt image data (the gzip stream ends early)")
            while pending and not decompressor.eof:
                try:
                    out = decompressor.decompress(pending, limit + 1 - total)
                except zlib.error as exc:
                    raise InputError(path, f"truncated or corrupt image data ({_zlib_reason(exc)})") from None
                chunks.append(out)
                total += len(out)
                if total > limit:
                    # Either data after the image or a corrupt stream: inflating further costs the memory it bounds.
                    raise InputError(
                        path,
                        f"corrupt image data or trailing data after the image: the gzip stream holds more "
                        f"than the {limit} bytes its header declares (inflating stopped there)",
                    )
                pending = decompressor.unconsumed_tail
        if decompressor.unused_data.strip(b"\0") or handle.read(_READ_CHUNK).strip(b"\0"):
            raise InputError(path, "trailing data after the end of the gzip stream")
    return b"".join(chunks)


def _zlib_reason(exc: zlib.error) -> str:
    text = str(exc)
    if "incorrect data check" in text:
        return "CRC check failed"
    if "incorrect length check" in text:
        return "gzip length check failed"
    return text.split(": ", 1)[-1][:160]


def _check_scale_factor(img: Any, path: Path) -> None:
    """Refuse a stored intensity scaling that cannot be applied as the file intends.

    The NIfTI standard reads scl_slope = 0 as "no scaling", and nibabel writes NaN for the same, so a
    0 or NaN slope alone is normal (real BraTS int16 files carry slope 0, offset 0). Refused are a 0 or
    NaN slope together with a non-zero offset (the header asks for scaling but nibabel would silently
    drop the offset) and an infinite slope or offset (nibabel would silently read the voxels unscaled).
    The values are read from the file's own header: a loaded image's header has them reset to NaN.
    """
    slope, inter = _stored_scaling(img)
    if slope is None:
        return
    unusable = slope == 0 or np.isnan(slope)
    if (unusable and np.isfinite(inter) and inter != 0) or np.isinf(slope) or np.isinf(inter):
        raise InputError(path, f"invalid intensity scale factor in the header (scl_slope={slope}, scl_inter={inter})")


def _stored_header(img: Any) -> Any:
    """The header as stored on disk (a loaded one has scaling reset and pixdim repaired); None if unreadable."""
    try:
        holder = img.file_map.get("header") or img.file_map["image"]  # a .hdr/.img pair, or one .nii file
        with holder.get_prepare_fileobj("rb") as handle:
            return type(img.header).from_fileobj(handle, check=False)
    except Exception:  # in-memory images, exotic file maps: nothing stored to check
        return None


def _stored_scaling(img: Any) -> tuple[float | None, float]:
    """(scl_slope, scl_inter) as stored on disk; (None, 0) when the header cannot be read again."""
    header = _stored_header(img)
    if header is None:
        return None, 0.0
    return float(np.asarray(header["scl_slope"])), float(np.asarray(header["scl_inter"]))


def _check_voxel_size(img: Any, path: Path) -> None:
    """Without an sform the voxel size is pixdim, which nibabel silently repairs (0 or NaN -> 1 mm)."""
    header = _stored_header(img)
    if header is None:
        return
    zooms = np.asarray(header["pixdim"][1:4], dtype=np.float64)
    if not np.all(np.isfinite(zooms)) or np.any(zooms == 0):
        shown = ", ".join(f"{z:g}" for z in zooms)
        raise InputError(path, f"invalid voxel size ({shown} mm) in the header's pixdim, and no sform to use instead")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]


def write_nifti(
    path: str | Path, data: np.ndarray, affine: np.ndarray, *, dtype: Any = np.float32, compress_level: int = 1
) -> Path:
    """Write a NIfTI image atomically with both sform and qform set to ``affine``."""
    import nibabel as nib

    array = np.asarray(data).astype(dtype, copy=False)
    img = nib.Nifti1Image(array, np.asarray(affine, dtype=np.float64))
    img.header.set_data_dtype(dtype)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header["scl_slope"] = 1.0
    img.header["scl_inter"] = 0.0
    # gzip level 1: several times faster than the default 9, files barely larger for float images.
    buffer = io.BytesIO()
    file_map = nib.Nifti1Image.make_file_map()
    if str(path).endswith(".gz"):
        import gzip

        raw = io.BytesIO()
        file_map["image"].fileobj = raw
        img.to_file_map(file_map)
        buffer.write(gzip.compress(raw.getvalue(), compresslevel=compress_level, mtime=0))
    else:
        file_map["image"].fileobj = buffer
        img.to_file_map(file_map)
    return atomic_write_bytes(path, buffer.getvalue())


def check_labels(volume: Volume, allowed: Any = None, what: str = "segmentation") -> np.ndarray:
    """Refuse a label map with values other than non-negative integers (or outside ``allowed``).

    Catches a probability map or an intensity image given as a segmentation, and labels a data set
    does not define (BraTS: 1, 2, 4; a lesion mask: 1): guessing a threshold for a soft map, or which
    unknown label is the lesion, would silently change the masks every metric is computed against.
    Returns the sorted distinct labels.
    """
    values = np.unique(volume.data)
    fractional = values[values != np.round(values)]
    if fractional.size:
        raise InputError(
            volume.path,
            f"{what} holds unexpected label values (e.g. {float(fractional[0]):g}): "
            "it must hold integer labels, not probabilities",
        )
    bad = values[values < 0]
    if allowed is not None:
        bad = np.union1d(bad, values[~np.isin(values, sorted(allowed))])
    if bad.size:
        shown = ", ".join(f"{v:g}" for v in bad[:5]) + (", ..." if bad.size > 5 else "")
        expected = ", ".join(str(v) for v in sorted(allowed)) if allowed is not None else "non-negative integers"
        raise InputError(volume.path, f"{what} holds unexpected label(s) {shown} (expected {expected})")
    return values


def check_same_grid(reference: Volume, other: Volume, tolerance_mm: float = 1e-2) -> None:
    """Refuse ``other`` (e.g. a segmentation) unless it lies on the same voxel grid as ``reference``."""
    if other.shape != reference.shape:
        raise InputError(other.path, f"shape {other.shape} differs from its image's {reference.shape}")
    if not np.allclose(other.affine, reference.affine, atol=tolerance_mm):
        raise InputError(other.path, "lies on a different voxel grid (affine) than its image")
