"""`mriad atlas install sri24`: add the full SRI24 distribution (T1, T2, PD templates) to atlases/.

The repository ships only the T1 template in BraTS space; the T2 and PD channels of SRI24 are
CC BY-SA 3.0 and are installed on request, from NITRC or from a local archive, as
``<atlas root>/sri24/full/{t1,t2,pd}_{head,brain}.nii.gz`` (see ``mriad.atlas.OPTIONAL_FILES``).

The SRI24 "anatomy" archive names its channels after the acquisitions: ``spgr`` (T1), ``late``
(late echo: T2) and ``erly`` (early echo: PD), skull-stripped versions ``*_brain``, possibly in a
subfolder. ``T1``/``T2``/``PD`` names are accepted too. Members are read one by one, never
extracted wholesale (no path traversal), validated, and the folder is swapped in at the end, so a
failed install leaves the previous state untouched.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from mriad.infra.errors import MriadError

SRI24_URL = "https://www.nitrc.org/frs/download.php/4502/sri24_anatomy_nifti.zip"
DOWNLOAD_TIMEOUT_S = 20
# Accepted stems (lower case, extension removed) for each modality.
_ALIASES = {"t1": ("spgr", "t1"), "t2": ("late", "t2"), "pd": ("erly", "pd")}
_BRAIN_SUFFIXES = ("_brain", "brain", "_stripped", "_skullstripped")
_MASK_STEMS = ("brainmask", "brain_mask", "mask")
# SRI24 is a 1 mm atlas; anything far from that is not the file we think it is.
_SPACING_RANGE_MM = (0.8, 1.25)
LICENSE_TEXT = """SRI24 multichannel atlas of normal adult human brain structure
================================================================

Files in this folder were installed by `mriad atlas install sri24` from: {source}
(archive sha256 {digest}).

License: Creative Commons Attribution-ShareAlike 3.0 (CC BY-SA 3.0),
https://creativecommons.org/licenses/by-sa/3.0/ . Derived files must carry the same license.

Cite: T. Rohlfing, N. M. Zahr, E. V. Sullivan, A. Pfefferbaum. The SRI24 multichannel atlas of
normal adult human brain structure. Human Brain Mapping 31(5):798-819, 2010.
https://www.nitrc.org/projects/sri24/

Channel names in the original distribution: spgr = T1-weighted, late = T2-weighted (late echo),
erly = proton density (early echo). {grid_note}
"""


def _stem(name: str) -> str:
    base = Path(name).name.lower()
    return re.sub(r"\.nii(\.gz)?$", "", base)


def _kind_of(name: str) -> str | None:
    """``t2_head``, ``pd_brain``, ``mask`` ... for an archive member name, or None if irrelevant."""
    if not re.search(r"\.nii(\.gz)?$", name.lower()) or Path(name).name.startswith("._"):
        return None
    stem = _stem(name)
    if stem in _MASK_STEMS:
        return "mask"
    for modality, aliases in _ALIASES.items():
        for alias in aliases:
            if stem in (alias, f"{alias}_head"):
                return f"{modality}_head"
            if any(stem == alias + suffix for suffix in _BRAIN_SUFFIXES):
                return f"{modality}_brain"
    return None


class _Archive:
    """Read-only access to the NIfTI members of a .zip or .tar(.gz) archive, by member name."""

    def __init__(self, path: Path):
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        self._tar: tarfile.TarFile | None = None
        try:
            if zipfile.is_zipfile(path):
                self._zip = zipfile.ZipFile(path)
                self.names = [i.filename for i in self._zip.infolist() if not i.is_dir()]
            elif tarfile.is_tarfile(path):
                self._tar = tarfile.open(path, "r:*")
                self.names = [m.name for m in self._tar.getmembers() if m.isfile()]
            else:
                raise MriadError(f"{path}: not a .zip or .tar.gz archive")
        except (OSError, zipfile.BadZipFile, tarfile.TarError) as exc:
            raise MriadError(f"{path}: unreadable archive ({str(exc).splitlines()[0][:120]})") from None

    def read(self, name: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(name)
        assert self._tar is not None
        handle = self._tar.extractfile(name)
        if handle is None:
            raise MriadError(f"{self.path}: member {name} is not a regular file")
        return handle.read()

    def close(self) -> None:
        for handle in (self._zip, self._tar):
            if handle is not None:
                handle.close()


def _load_member(archive: _Archive, name: str, scratch: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one member through a scratch file and validate it: 3D, finite, non-empty, ~1 mm."""
    import nibabel as nib

    suffix = ".nii.gz" if name.lower().endswith(".gz") else ".nii"
    tmp = scratch / f"member{suffix}"
    tmp.write_bytes(archive.read(name))
    where = f"{archive.path}: {name}"
    try:
        img: Any = nib.load(str(tmp))  # a NIfTI image: nibabel types load() as the generic base
        shape = tuple(s for i, s in enumerate(img.shape) if i < 3 or s != 1)
        data = np.asarray(img.dataobj, dtype=np.float32).reshape(shape)
        affine = img.affine.copy()
    except Exception as exc:  # nibabel raises many types for broken files
        raise MriadError(f"{where}: not a readable NIfTI image ({str(exc).splitlines()[0][:120]})") from None
    finally:
        tmp.unlink(missing_ok=True)
    if data.ndim != 3:
        raise MriadError(f"{where}: expected a 3D image, got shape {data.shape}")
    if not np.all(np.isfinite(data)):
        raise MriadError(f"{where}: {int((~np.isfinite(data)).sum())} NaN/Inf voxels")
    if not np.any(data):
        raise MriadError(f"{where}: image is empty (all voxels are zero)")
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    if np.any(spacing < _SPACING_RANGE_MM[0]) or np.any(spacing > _SPACING_RANGE_MM[1]):
        raise MriadError(f"{where}: voxel spacing {tuple(np.round(spacing, 3))} mm, expected about 1 mm")
    return data, affine


def _download(url: str, target: Path) -> Path:
    """Fetch ``url`` to ``target``; any network failure becomes a one-line 'offline' error."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(target, "wb") as handle:
            shutil.copyfileobj(response, handle)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MriadError(
            f"could not download SRI24 from {url} ({str(reason).splitlines()[0][:100]}): this machine looks "
            "offline; download sri24_anatomy_nifti.zip elsewhere and run `mriad atlas install sri24 --from FILE`"
        ) from None
    if not zipfile.is_zipfile(target):
        raise MriadError(
            f"{url}: the download is not a zip archive (NITRC may want a browser); download it by hand "
            "and pass --from FILE"
        )
    return target


def _on_shipped_grid(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Canonical (RAS) copy; when it has the shipped template's 240x240x155 voxels, adopt its affine.

    BraTS space *is* the SRI24 voxel grid, but header origins differ between distributions; taking
    the shipped affine makes the installed channels agree with the shipped T1 in world coordinates.
    """
    import nibabel as nib

    from mriad.atlas import EXPECTED_SHAPE, load_template

    img = nib.as_closest_canonical(nib.Nifti1Image(data, affine))
    canonical = np.asarray(img.dataobj, dtype=np.float32)
    if canonical.shape == EXPECTED_SHAPE:
        with contextlib.suppress(MriadError):
            return canonical, load_template("t1_head").affine.copy(), True
    return canonical, img.affine.copy(), False


def install_sri24(name: str = "sri24", archive: Path | None = None) -> dict[str, Path]:
    """Install the SRI24 T1/T2/PD templates (head and brain) from ``archive`` or from NITRC.

    Returns ``{kind: installed path}`` for kinds among ``t1_head``, ``t1_brain``, ``t2_head``, ...
    Raises :class:`MriadError` (one line, naming the archive) when nothing usable is found.
    """
    from mriad.atlas import ATLAS_NAME, atlas_root, sha256
    from mriad.infra.io import atomic_write_text, write_nifti

    if name != ATLAS_NAME:
        raise MriadError(f"unknown atlas {name!r}: only {ATLAS_NAME} can be installed")
    root = atlas_root() / ATLAS_NAME
    if not root.is_dir():
        raise MriadError(f"{root}: atlas folder missing; set MRIAD_ATLAS_DIR or reinstall mriad")
    try:
        scratch_dir = tempfile.TemporaryDirectory(prefix=".install-", dir=root)
    except OSError as exc:
        raise MriadError(
            f"{root}: cannot write there ({exc.strerror}); point MRIAD_ATLAS_DIR at a writable copy of atlases/"
        ) from None
    with scratch_dir as scratch_name:
        scratch = Path(scratch_name)
        if archive is None:
            archive = _download(SRI24_URL, scratch / "sri24_anatomy_nifti.zip")
            source = SRI24_URL
        else:
            archive = Path(archive)
            if not archive.is_file():
                raise MriadError(f"{archive}: archive not found")
            source = archive.name
        reader = _Archive(archive)
        try:
            members: dict[str, str] = {}
            for member in sorted(reader.names, key=lambda n: (n.count("/"), n)):
                kind = _kind_of(member)
                if kind is not None and kind not in members:
                    members[kind] = member
            if not any(k.startswith(("t2_", "pd_")) for k in members):
                found = ", ".join(sorted(members)) or "no template"
                raise MriadError(
                    f"{archive}: no SRI24 T2/PD template inside (found {found}); expected spgr/late/erly "
                    "(or T1/T2/PD) .nii files and their *_brain versions"
                )
            volumes = {kind: _load_member(reader, member, scratch) for kind, member in members.items()}
        finally:
            reader.close()
        mask = volumes.pop("mask", None)
        for modality in _ALIASES:  # derive a missing skull-stripped channel from the archive's mask
            head = volumes.get(f"{modality}_head")
            if head is not None and f"{modality}_brain" not in volumes and mask is not None:
                if mask[0].shape == head[0].shape:
                    volumes[f"{modality}_brain"] = (head[0] * (mask[0] > 0), head[1])
        staging = scratch / "full"
        staging.mkdir()
        adopted = []
        installed: dict[str, Path] = {}
        for kind, (data, affine) in sorted(volumes.items()):
            canonical, grid_affine, same_grid = _on_shipped_grid(data, affine)
            adopted.append(same_grid)
            write_nifti(staging / f"{kind}.nii.gz", canonical, grid_affine)
            installed[kind] = root / "full" / f"{kind}.nii.gz"
        note = (
            "The volumes have the shipped template's 240x240x155 voxel grid and were given its (BraTS-space) affine."
            if all(adopted)
            else "The volumes keep their own voxel-to-world affines."
        )
        atomic_write_text(
            staging / "LICENSE.txt", LICENSE_TEXT.format(source=source, digest=sha256(archive), grid_note=note)
        )
        target = root / "full"
        old = scratch / "previous"
        if target.exists():
            os.replace(target, old)
        os.replace(staging, target)
    return installed
