"""Multi-channel images (T2 + FLAIR as one 4D image.nii.gz): reading, slicing and loading a split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mriad.contracts.data import (
    image_channels,
    load_volumes,
    read_image,
    read_masks,
    slices_to_volume,
    volume_to_slices,
)
from mriad.infra.errors import InputError, MriadError
from mriad.infra.io import read_nifti, write_nifti
from mriad.train.sampler import DeviceSlices

SHAPE = (12, 10, 6)


def _subject(folder: Path, name: str, channels: int, seed: int) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    mask = np.zeros(SHAPE, np.uint8)
    mask[2:-2, 2:-2, 1:-1] = 1
    data = rng.uniform(0.1, 1.0, (*SHAPE, channels)).astype(np.float32) * mask[..., None]
    image = data[..., 0] if channels == 1 else data
    folder.mkdir(parents=True, exist_ok=True)
    write_nifti(folder / f"{name}_image.nii.gz", image, np.diag([2.0, 2.0, 2.0, 1.0]))
    write_nifti(folder / f"{name}_mask.nii.gz", mask, np.diag([2.0, 2.0, 2.0, 1.0]), dtype=np.uint8)
    return {
        "subject_id": name,
        "image": str(folder / f"{name}_image.nii.gz"),
        "mask": str(folder / f"{name}_mask.nii.gz"),
        "seg": "",
    }


def test_slices_of_a_multichannel_volume_round_trip() -> None:
    volume = torch.rand(*SHAPE, 3)
    slices = volume_to_slices(volume)
    assert slices.shape == (SHAPE[2], 3, SHAPE[0], SHAPE[1])
    assert torch.equal(slices[4, 2], volume[:, :, 4, 2])
    assert torch.equal(slices_to_volume(slices), volume)
    # One channel keeps the 3D convention of docs/CONTRACTS.md.
    single = torch.rand(*SHAPE)
    assert volume_to_slices(single).shape == (SHAPE[2], 1, SHAPE[0], SHAPE[1])
    assert torch.equal(slices_to_volume(volume_to_slices(single)), single)


def test_a_4d_image_is_read_as_channels_and_its_masks_stay_3d(tmp_path: Path) -> None:
    row = _subject(tmp_path, "s", 2, seed=0)
    with pytest.raises(InputError, match="expected a 3D image, got a 4D image"):
        read_nifti(row["image"])  # readers of 3D images still refuse it
    image = read_image(row["image"])
    assert image.shape == (*SHAPE, 2) and image_channels(image) == 2
    mask, seg = read_masks(image, row["mask"])
    assert mask.shape == SHAPE and seg is None


def test_a_4d_image_outside_the_intensity_contract_is_refused(tmp_path: Path) -> None:
    write_nifti(tmp_path / "raw.nii.gz", np.full((*SHAPE, 2), 300.0, np.float32), np.eye(4))
    with pytest.raises(InputError, match=r"raw.nii.gz: intensities span \[300, 300\]"):
        read_image(tmp_path / "raw.nii.gz")


def test_a_split_of_two_channel_volumes_becomes_two_channel_slices(tmp_path: Path) -> None:
    rows = pd.DataFrame([_subject(tmp_path, f"s{i}", 2, seed=i) for i in range(3)])
    split = load_volumes(rows)
    assert split.images.shape == (3, *SHAPE, 2) and split.masks.shape == (3, *SHAPE)
    assert split.channels == 2
    slices = DeviceSlices.from_split(split)
    assert slices.slices.shape == (3 * SHAPE[2], 2, SHAPE[0], SHAPE[1])
    # Slice k of volume v is volume v's axial slice k, both channels.
    assert torch.equal(slices.slices[SHAPE[2] + 3], split.images[1, :, :, 3].permute(2, 0, 1))
    assert slices.sample_slices(5, torch.Generator().manual_seed(0)).shape == (5, 2, SHAPE[0], SHAPE[1])


def test_single_channel_splits_load_as_before(tmp_path: Path) -> None:
    rows = pd.DataFrame([_subject(tmp_path, f"s{i}", 1, seed=i) for i in range(2)])
    split = load_volumes(rows)
    assert split.images.shape == (2, *SHAPE) and split.channels == 1
    slices = DeviceSlices.from_split(split)
    expected = split.images.permute(0, 3, 1, 2).reshape(2 * SHAPE[2], 1, SHAPE[0], SHAPE[1])
    assert torch.equal(slices.slices, expected)


def test_a_split_mixing_channel_counts_is_refused_naming_the_file(tmp_path: Path) -> None:
    rows = pd.DataFrame([_subject(tmp_path, "two", 2, seed=0), _subject(tmp_path, "one", 1, seed=1)])
    with pytest.raises(MriadError, match=r"one_image.nii.gz: holds 1 channel\(s\) but the split has 2"):
        load_volumes(rows)
