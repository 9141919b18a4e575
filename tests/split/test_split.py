from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mriad.contracts.manifest import read_manifest
from mriad.split import SplitSettings, split_frame


def _healthy(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame(
        {
            "subject_id": [f"S{i}" for i in range(n)],
            "dataset": "ixi",
            "split": "",
            "fold": -1,
            "label": 0,
            "image": [f"/x/{i}.nii.gz" for i in range(n)],
            "mask": "",
            "seg": "",
            "age": rng.uniform(20, 86, n).round(1),
            "sex": "",
            "source": "",
        }
    )


def test_split_is_deterministic_by_seed() -> None:
    frame = _healthy(60)
    a, b, c = split_frame(frame, seed=1), split_frame(frame, seed=1), split_frame(frame, seed=2)
    pd.testing.assert_frame_equal(a, b)
    assert not a[["split", "fold"]].equals(c[["split", "fold"]])


def test_folds_are_age_stratified_and_test_fraction_respected() -> None:
    frame = _healthy(200)
    result = split_frame(frame, SplitSettings(healthy_test_fraction=0.25), seed=0)
    assert (result["split"] == "test").sum() == 50
    trainval = result[result["split"] == "trainval"]
    assert sorted(trainval["fold"].unique()) == [0, 1, 2, 3, 4]
    sizes = trainval.groupby("fold").size()
    assert sizes.max() - sizes.min() <= 1
    mean_ages = trainval.groupby("fold")["age"].mean()
    # Random folds of 30 from U(20, 86) would differ by ~10 years; stratified ones by far less.
    assert mean_ages.max() - mean_ages.min() < 3.0
    assert abs(result.loc[result["split"] == "test", "age"].mean() - trainval["age"].mean()) < 3.0


def test_split_command_writes_manifest_without_leaks(cli, small_manifest: Path) -> None:
    result = cli("--seed", "4", "split", small_manifest, "--test-fraction", "0.2", "--brats-val", "0.25")
    assert result.exit_code == 0, result.output
    frame = read_manifest(small_manifest)
    assert (frame.loc[frame.dataset == "ixi", "split"] == "test").sum() == 2
    assert set(frame.loc[frame.dataset == "brats", "split"]) == {"val", "test"}
    assert frame["subject_id"].is_unique
    first = small_manifest.read_bytes()
    assert cli("--seed", "4", "split", small_manifest, "--test-fraction", "0.2", "--brats-val", "0.25").exit_code == 0
    assert small_manifest.read_bytes() == first
