"""``preprocess --modality t2,flair``: one geometry from the first modality, N4 and normalisation per
channel, one 4D image.nii.gz per subject with its channels recorded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mriad.infra.errors import MriadError
from mriad.infra.io import read_nifti
from mriad.preprocess import preprocess

FAST = {"skull_strip": "none", "registration": "none", "qc": False}


@pytest.fixture(scope="module")
def raw_two_modalities(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mriad.synth import synthesize

    root = tmp_path_factory.mktemp("raw_t2flair")
    synthesize(root, healthy=0, lesions=1, layout="brats", seed=1, modality="t2,flair")
    return root / "BraTS2021"


def test_two_modalities_become_one_4d_image_on_the_first_ones_geometry(
    raw_two_modalities: Path, tmp_path: Path
) -> None:
    both = preprocess(raw_two_modalities, tmp_path / "both", dataset="brats21", modality="t2,flair", n4=False, **FAST)
    t2 = preprocess(raw_two_modalities, tmp_path / "t2", dataset="brats21", modality="t2", n4=False, **FAST)
    assert both.ok and t2.ok, (both.failures, t2.failures)
    row = pd.read_csv(both.manifest).iloc[0]
    assert row["channels"] == "t2,flair"
    assert "channels" not in pd.read_csv(t2.manifest).columns  # single-modality manifests are unchanged
    image = read_nifti(tmp_path / "both" / row["image"], channels=True)
    single = read_nifti(tmp_path / "t2" / pd.read_csv(t2.manifest).iloc[0]["image"])
    assert image.shape == (96, 96, 50, 2)
    # Channel 0 is the T2 as the single-modality run makes it (same geometry, same steps), mask and seg too.
    assert np.array_equal(image.data[..., 0], single.data)
    for column in ("mask", "seg"):
        assert np.array_equal(
            read_nifti(tmp_path / "both" / row[column], allow_empty=True).data,
            read_nifti(tmp_path / "t2" / pd.read_csv(t2.manifest).iloc[0][column], allow_empty=True).data,
        )
    flair = image.data[..., 1]
    brain = read_nifti(tmp_path / "both" / row["mask"], allow_empty=True).data > 0
    assert flair.max() == pytest.approx(1.0) and not flair[~brain].any()  # normalised on its own, 0 outside
    assert not np.allclose(flair, image.data[..., 0])
    done = json.loads((tmp_path / "both" / "brats" / row["subject_id"] / "done.json").read_text())
    assert done["options"]["modality"] == "t2,flair" and done["row"]["channels"] == "t2,flair"


@pytest.mark.slow  # N4 twice at full resolution
def test_n4_runs_per_channel(raw_two_modalities: Path, tmp_path: Path) -> None:
    result = preprocess(raw_two_modalities, tmp_path / "n4", dataset="brats21", modality="t2,flair", **FAST)
    assert result.ok, result.failures
    image = read_nifti(tmp_path / "n4" / pd.read_csv(result.manifest).iloc[0]["image"], channels=True)
    assert image.shape[-1] == 2 and 0.0 <= image.data.min() and image.data.max() <= 1.0


def test_a_case_missing_a_modality_is_a_failure_of_that_case(raw_two_modalities: Path, tmp_path: Path) -> None:
    import shutil

    raw = tmp_path / "raw"
    shutil.copytree(raw_two_modalities, raw)
    for flair in raw.rglob("*_flair.nii.gz"):
        flair.unlink()
    result = preprocess(raw, tmp_path / "out", dataset="brats21", modality="t2,flair", n4=False, **FAST)
    assert not result.ok and not result.done
    assert "no *_flair.nii.gz scan in the case folder" in result.failures[0].reason


def test_adapters_with_one_scan_per_subject_refuse_a_list(raw_two_modalities: Path, tmp_path: Path) -> None:
    with pytest.raises(MriadError, match="--modality t2,flair: the mslub adapter finds one scan per subject"):
        preprocess(raw_two_modalities, tmp_path / "out", dataset="mslub", modality="t2,flair", **FAST)


def test_the_command_line_takes_a_modality_list(raw_two_modalities: Path, tmp_path: Path, cli) -> None:
    result = cli("preprocess", raw_two_modalities, tmp_path / "out", "--dataset", "mslub", "--modality", "t2,flair")
    assert result.exit_code == 1 and "the mslub adapter finds one scan per subject" in result.output
    result = cli("preprocess", raw_two_modalities, tmp_path / "out", "--dataset", "brats21", "--modality", "t2,dwi")
    assert result.exit_code == 2 and "'dwi' is not one of" in result.output
