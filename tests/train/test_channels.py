"""Training on multi-channel data: ``in_channels`` comes from the data and is recorded in config.json,
so reconstruct rebuilds the same network; every mismatch is refused with one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tinydata import TINY_PDDPM, write_tiny_dataset

from mriad.contracts.manifest import read_manifest
from mriad.infra.errors import MriadError
from mriad.infra.io import read_nifti, write_nifti
from mriad.models.registry import load_run_model
from mriad.reconstruct import reconstruct
from mriad.train import fit

OPTIONS = {**TINY_PDDPM, "epochs": 1, "val_every": 1, "lr": 1e-3}


@pytest.fixture(scope="module")
def two_channel_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny data set with a second, inverted contrast as channel 2 (written as 4D image.nii.gz)."""
    manifest = write_tiny_dataset(tmp_path_factory.mktemp("twochannel"))
    for path in read_manifest(manifest)["image"]:
        volume = read_nifti(path)
        brain = volume.data > 0
        second = np.where(brain, 1.0 - volume.data, 0.0).astype(np.float32)
        write_nifti(path, np.stack([volume.data, second], axis=-1), volume.affine)
    return manifest


@pytest.fixture(scope="module")
def two_channel_run(two_channel_manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "pddpm"
    fit("pddpm", data=two_channel_manifest, out=out, options=OPTIONS, device="cpu", seed=0)
    return out


def test_in_channels_is_taken_from_the_data_and_recorded(two_channel_run: Path) -> None:
    config = json.loads((two_channel_run / "config.json").read_text())
    assert config["options"]["in_channels"] == 2
    model = load_run_model(two_channel_run, which="last")
    assert model.net.stem.in_channels == 2 and model.config["in_channels"] == 2


def test_reconstructions_are_4d_and_maps_3d(two_channel_run: Path) -> None:
    result = reconstruct(two_channel_run, "ixi-test", which="last")
    assert len(result.written) == 2 and not result.failures
    rows = read_manifest(json.loads((two_channel_run / "config.json").read_text())["data"])
    row = rows[rows["subject_id"] == result.written[0]].iloc[0]
    folder = two_channel_run / "recon" / "ixi-test"
    image = read_nifti(row["image"], channels=True).data
    rec = read_nifti(folder / f"{row['subject_id']}_rec.nii.gz", channels=True).data
    score = read_nifti(folder / f"{row['subject_id']}_score.nii.gz", allow_empty=True).data
    assert rec.shape == image.shape == (32, 32, 8, 2) and score.shape == (32, 32, 8)
    np.testing.assert_allclose(score, np.abs(image - rec).mean(axis=-1), rtol=1e-5, atol=1e-6)


def test_a_checkpoint_refuses_data_with_another_channel_count(two_channel_run: Path, tiny_manifest: Path) -> None:
    with pytest.raises(MriadError, match=r"image.nii.gz: holds 1 channel\(s\) but model pddpm has 2"):
        reconstruct(two_channel_run, "ixi-test", data=tiny_manifest, which="last", force=True)


def test_baselines_refuse_multichannel_data_in_one_line(two_channel_manifest: Path, tmp_path: Path) -> None:
    options = {"base_channels": 4, "latent_dim": 8, "batch_size": 4, "epochs": 1}
    with pytest.raises(MriadError, match="2 channels, but model ae takes single-channel images only"):
        fit("ae", data=two_channel_manifest, out=tmp_path / "ae", options=options, device="cpu")
    assert not (tmp_path / "ae" / "config.json").exists()


def test_an_explicit_in_channels_must_match_the_data(two_channel_manifest: Path, tmp_path: Path) -> None:
    with pytest.raises(MriadError, match=r"images hold 2 channel\(s\), but --set in_channels asks for 3"):
        fit("pddpm", data=two_channel_manifest, out=tmp_path / "r", options={**OPTIONS, "in_channels": 3})
