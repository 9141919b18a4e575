"""The shipped SRI24 atlas checks out, and `mriad atlas install` adds the T2/PD channels safely."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mriad.infra.errors import MriadError

SHIPPED = Path(__file__).resolve().parents[2] / "atlases" / "sri24"


def test_atlas_check_passes(cli) -> None:
    result = cli("atlas", "check")
    assert result.exit_code == 0, result.output
    assert "FAIL" not in result.output and "world alignment" in result.output


def test_atlas_install_help(cli) -> None:
    result = cli("atlas", "install", "--help")
    assert result.exit_code == 0 and "--from" in result.output and "CC BY-SA" in result.output


@pytest.fixture
def atlas_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private atlas root (links to the shipped files), so installs never touch the repository."""
    root = tmp_path / "atlases"
    (root / "sri24").mkdir(parents=True)
    for path in SHIPPED.iterdir():
        if path.is_file():
            (root / "sri24" / path.name).symlink_to(path)
    monkeypatch.setenv("MRIAD_ATLAS_DIR", str(root))
    return root / "sri24"


def _volume(value: float, *, shape=(12, 14, 10), spacing=1.0, bad: bool = False) -> bytes:
    """A small fake template whose constant interior tells which channel it is."""
    data = np.zeros(shape, np.float32)
    data[2:-2, 2:-2, 2:-2] = value
    if bad:
        data[0, 0, 0] = np.nan
    img = nib.Nifti1Image(data, np.diag([spacing, spacing, spacing, 1.0]))
    return img.to_bytes()


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, payload in members.items():
            archive.writestr(name, payload)
    return path


SRI24_NAMES = {
    "sri24/spgr.nii": 1.0,
    "sri24/spgr_brain.nii": 2.0,
    "sri24/late.nii": 3.0,
    "sri24/late_brain.nii": 4.0,
    "sri24/erly.nii": 5.0,
    "sri24/erly_brain.nii": 6.0,
}


def test_install_from_a_zip_with_sri24_names(atlas_copy: Path) -> None:
    from mriad.atlas import available_templates, load_template
    from mriad.atlas.install import install_sri24

    archive = _zip(
        atlas_copy.parent / "sri24_anatomy_nifti.zip",
        {name: _volume(value) for name, value in SRI24_NAMES.items()} | {"sri24/README.txt": b"x"},
    )
    installed = install_sri24(archive=archive)
    assert sorted(installed) == ["pd_brain", "pd_head", "t1_brain", "t1_head", "t2_brain", "t2_head"]
    for kind, path in installed.items():
        assert path == atlas_copy / "full" / f"{kind}.nii.gz" and path.is_file()
    license_text = (atlas_copy / "full" / "LICENSE.txt").read_text()
    assert "CC BY-SA 3.0" in license_text and "Rohlfing" in license_text
    t2 = load_template("t1_brain", modality="t2")
    assert t2.path.endswith("full/t2_brain.nii.gz") and t2.data.max() == 4.0
    assert load_template("t1_head", modality="pd").data.max() == 5.0
    assert load_template("t1_brain").path.endswith("t1_skullstripped_brats_space.nii.gz")  # shipped T1 kept
    assert "t2_head" in available_templates()
    assert not any(p.name.startswith(".install-") for p in atlas_copy.iterdir())  # scratch cleaned up


def test_install_from_a_tarball_with_plain_names_and_derived_brains(atlas_copy: Path) -> None:
    from mriad.atlas import load_template
    from mriad.atlas.install import install_sri24

    mask = np.zeros((12, 14, 10), np.float32)
    mask[4:8, 4:8, 4:8] = 1
    members = {
        "T1.nii.gz": _gz(_volume(1.0)),
        "T2.nii.gz": _gz(_volume(3.0)),
        "brainmask.nii": nib.Nifti1Image(mask, np.eye(4)).to_bytes(),
    }
    archive = atlas_copy.parent / "sri24.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"anatomy/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    installed = install_sri24(archive=archive)
    assert sorted(installed) == ["t1_brain", "t1_head", "t2_brain", "t2_head"]
    brain = load_template("t1_brain", modality="t2")
    assert brain.path.endswith("t2_brain.nii.gz") and int((brain.data > 0).sum()) == 64


def test_atlas_check_and_cli_after_install(atlas_copy: Path, cli) -> None:
    archive = _zip(atlas_copy.parent / "a.zip", {name: _volume(v) for name, v in SRI24_NAMES.items()})
    result = cli("atlas", "install", "sri24", "--from", archive)
    assert result.exit_code == 0, result.output
    assert "t2_head" in result.output
    result = cli("atlas", "check")
    assert result.exit_code == 0, result.output
    assert "full/t2_head.nii.gz" in result.output


def _gz(payload: bytes) -> bytes:
    import gzip

    return gzip.compress(payload)


def test_archive_without_templates_is_refused(atlas_copy: Path) -> None:
    from mriad.atlas.install import install_sri24

    archive = _zip(atlas_copy.parent / "wrong.zip", {"notes/readme.txt": b"hello", "other/brain.nii": _volume(1)})
    with pytest.raises(MriadError, match=r"wrong\.zip: no SRI24 T2/PD template"):
        install_sri24(archive=archive)
    assert not (atlas_copy / "full").exists()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (_volume(3.0, bad=True), "NaN/Inf"),
        (_volume(0.0), "empty"),
        (_volume(3.0, spacing=2.0), "spacing"),
        (b"not a nifti", "not a readable NIfTI"),
    ],
)
def test_bad_members_are_refused_by_name(atlas_copy: Path, payload: bytes, message: str) -> None:
    from mriad.atlas.install import install_sri24

    archive = _zip(atlas_copy.parent / "bad.zip", {"sri24/spgr.nii": _volume(1.0), "sri24/late.nii": payload})
    with pytest.raises(MriadError, match=rf"bad\.zip: sri24/late\.nii: .*{message}"):
        install_sri24(archive=archive)
    assert not (atlas_copy / "full").exists()


def test_not_an_archive_and_missing_archive(atlas_copy: Path) -> None:
    from mriad.atlas.install import install_sri24

    text = atlas_copy.parent / "notes.zip"
    text.write_text("plain text")
    with pytest.raises(MriadError, match="notes.zip: not a .zip or .tar.gz archive"):
        install_sri24(archive=text)
    with pytest.raises(MriadError, match="archive not found"):
        install_sri24(archive=atlas_copy.parent / "missing.zip")
    with pytest.raises(MriadError, match="only sri24"):
        install_sri24(name="mni152")


def test_offline_download_says_so(atlas_copy: Path, monkeypatch: pytest.MonkeyPatch, cli) -> None:
    import urllib.error
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    result = cli("atlas", "install", "sri24")
    assert result.exit_code == 1
    assert "offline" in result.output and "--from" in result.output
    assert not (atlas_copy / "full").exists()


def test_reinstall_replaces_the_previous_install(atlas_copy: Path) -> None:
    from mriad.atlas.install import install_sri24

    install_sri24(archive=_zip(atlas_copy.parent / "one.zip", {"late.nii": _volume(3.0), "erly.nii": _volume(5.0)}))
    install_sri24(archive=_zip(atlas_copy.parent / "two.zip", {"late.nii": _volume(7.0)}))
    assert sorted(p.name for p in (atlas_copy / "full").iterdir()) == ["LICENSE.txt", "t2_head.nii.gz"]
    assert nib.load(str(atlas_copy / "full" / "t2_head.nii.gz")).get_fdata().max() == 7.0
