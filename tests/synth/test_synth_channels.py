"""Multi-modality synthesis (``modality="t2,flair"``): the same subjects in several contrasts."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from mriad.infra.errors import MriadError
from mriad.synth import parse_modalities, synthesize


def _data(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def test_preprocessed_two_channel_subjects_extend_the_single_channel_ones(tmp_path: Path) -> None:
    single = synthesize(tmp_path / "t2", healthy=0, lesions=1, preprocessed=True, seed=4)
    double = synthesize(tmp_path / "t2flair", healthy=0, lesions=1, preprocessed=True, seed=4, modality="t2,flair")
    one = pd.read_csv(single.manifest).iloc[0]
    two = pd.read_csv(double.manifest).iloc[0]
    assert "channels" not in pd.read_csv(single.manifest).columns and two["channels"] == "t2,flair"
    image = _data(tmp_path / "t2flair" / two["image"])
    assert image.shape == (96, 96, 50, 2) and image.dtype == np.float32
    # The first channel is the single-modality image, byte for byte; masks and lesions are shared.
    assert np.array_equal(image[..., 0], _data(tmp_path / "t2" / one["image"]))
    for column in ("mask", "seg"):
        assert np.array_equal(_data(tmp_path / "t2flair" / two[column]), _data(tmp_path / "t2" / one[column]))
    brain = _data(tmp_path / "t2flair" / two["mask"]) > 0
    lesion = _data(tmp_path / "t2flair" / two["seg"]) > 0
    flair = image[..., 1]
    assert flair.min() >= 0 and flair.max() <= 1 and not flair[~brain].any()
    assert not np.allclose(flair[brain], image[..., 0][brain])  # another contrast
    assert flair[lesion].mean() > flair[brain & ~lesion].mean() + 0.2  # the lesion is bright on FLAIR too


def test_raw_brats_writes_one_file_per_modality(tmp_path: Path) -> None:
    result = synthesize(tmp_path / "raw", healthy=0, lesions=1, layout="brats", seed=1, modality="t2,flair")
    case = result.out / "BraTS2021" / "BraTS2021_00000"
    names = sorted(p.name for p in case.iterdir())
    assert names == ["BraTS2021_00000_flair.nii.gz", "BraTS2021_00000_seg.nii.gz", "BraTS2021_00000_t2.nii.gz"]
    t2, flair = (_data(case / f"BraTS2021_00000_{m}.nii.gz") for m in ("t2", "flair"))
    assert t2.shape == flair.shape and not np.array_equal(t2, flair)


def test_impossible_modality_lists_are_refused(tmp_path: Path) -> None:
    assert parse_modalities(" T2, flair") == ("t2", "flair")
    with pytest.raises(MriadError, match="unknown modality 'dwi'"):
        synthesize(tmp_path / "a", healthy=0, lesions=1, preprocessed=True, modality="t2,dwi")
    with pytest.raises(MriadError, match="names a modality twice"):
        synthesize(tmp_path / "b", healthy=0, lesions=1, preprocessed=True, modality="t2,t2")
    with pytest.raises(MriadError, match="BraTS layout only"):
        synthesize(tmp_path / "c", healthy=2, lesions=1, layout="brats", modality="t2,flair")
