"""End to end on two-channel data (T2 + FLAIR) through the command line: synth -> train pDDPM ->
reconstruct -> evaluate. The run records ``in_channels`` 2, reconstructions are 4D, the maps and the
evaluation are those of single-channel data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mriad.infra.io import read_nifti

# A tiny pDDPM whose box covers the 96 x 96 slice (one network call per slice) and whose middle block
# (self-attention) works at 12 x 12, not 48 x 48: CPU-sized.
TINY = {
    "base_channels": "8",
    "channel_mult": "1,2,2,2",  # the middle block (attention) at 12 x 12, not 48 x 48
    "num_res_blocks": "1",
    "groups": "4",
    "head_channels": "8",
    "patch_size": "96",
    "batch_size": "4",
    "octaves": "3",
}


@pytest.mark.slow
def test_two_channel_synth_train_reconstruct_evaluate(tmp_path: Path, cli) -> None:
    data = tmp_path / "data"
    result = cli("--hide-progress", "synth", data, "--preprocessed", "--healthy", "7", "--lesions", "4",
                 "--modality", "t2,flair")  # fmt: skip
    assert result.exit_code == 0, result.output
    run = tmp_path / "pddpm"
    sets = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={value}")]
    result = cli(
        "--device", "cpu", "--hide-progress", "train", "--model", "pddpm", "--data", data / "manifest.csv",
        "--fold", "0", "--out", run, "--epochs", "2", "--val-every", "1", *sets,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["options"]["in_channels"] == 2

    result = cli("--device", "cpu", "--hide-progress", "reconstruct", "--run", run, "--split", "brats-test")
    assert result.exit_code == 0, result.output
    recs = sorted((run / "recon" / "brats-test").glob("*_rec.nii.gz"))
    assert len(recs) == 3
    assert read_nifti(recs[0], allow_empty=True, channels=True).shape == (96, 96, 50, 2)
    score = str(recs[0]).replace("_rec.nii.gz", "_score.nii.gz")
    assert read_nifti(score, allow_empty=True).shape == (96, 96, 50)

    result = cli("--device", "cpu", "--hide-progress", "evaluate", "--run", run, "--split", "brats-test")
    assert result.exit_code == 0, result.output
    summary = json.loads((run / "eval" / "brats-test" / "summary.json").read_text())
    assert summary["n_subjects"] == 3 and not summary["failures"]
    for name in ("dice", "auprc", "auroc", "l1"):
        assert math.isfinite(summary["metrics"][name]["mean"]), (name, summary["metrics"][name])
    assert (run / "eval" / "brats-test" / "figures").is_dir()  # the figures show the first channel
    result = cli("--hide-progress", "report", run)
    assert result.exit_code == 0, result.output
    assert (run / "report.html").is_file()
