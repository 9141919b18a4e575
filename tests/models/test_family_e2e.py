"""The pDDPM family end to end through the CLI: synthetic preprocessed data -> train -> evaluate.

pDDPM with Mahalanobis scoring, the pDDPM ensemble, cDDPM and AnoDDPM sampling, each with a tiny
network and two epochs: the plumbing (options recorded, maps written, finite metrics), not quality.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

UNET = ["base_channels=4", "groups=2", "head_channels=8", "num_res_blocks=1", "channel_mult=1,2", "batch_size=4"]
RUNS: dict[str, tuple[str, list[str]]] = {
    "pddpm-mhd": ("pddpm", [*UNET, "scoring=mahalanobis", "n_reconstructions=2"]),
    "pddpm-ensemble": ("pddpm", [*UNET, "patch_ensemble=48,96", "t_ensemble=300,500"]),
    "cddpm": ("cddpm", [*UNET, "encoder_widths=4,8", "encoder_blocks=1,1", "cond_dim=8", "t_ensemble=250,500"]),
    "anoddpm": ("ddpm", [*UNET, "sampling=iterative", "t_start=100", "sampling_steps=3"]),
}


@pytest.fixture(scope="module")
def synthetic_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mriad.synth import min_healthy_for_splits, synthesize

    out = tmp_path_factory.mktemp("synth")
    result = synthesize(out / "data", healthy=min_healthy_for_splits(5), lesions=4, preprocessed=True, seed=0)
    assert result.manifest is not None
    return result.manifest


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RUNS))
def test_train_then_evaluate(name: str, synthetic_manifest: Path, tmp_path: Path, cli) -> None:
    model, options = RUNS[name]
    run = tmp_path / name
    sets = [arg for value in options for arg in ("--set", value)]
    base = ("--device", "cpu", "--hide-progress")
    result = cli(
        *base, "train", "--model", model, "--data", synthetic_manifest, "--fold", "0", "--out", run,
        "--epochs", "2", "--val-every", "1", *sets,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    recorded = json.loads((run / "config.json").read_text())["options"]
    assert {key for key, _ in (o.split("=") for o in options)} <= set(recorded)
    result = cli(*base, "evaluate", "--run", run, "--split", "brats-test", "--no-figures")
    assert result.exit_code == 0, result.output
    assert len(list((run / "recon" / "brats-test").glob("*_score.nii.gz"))) == 3
    summary = json.loads((run / "eval" / "brats-test" / "summary.json").read_text())
    for metric in ("dice", "auprc", "auroc"):
        assert math.isfinite(summary["metrics"][metric]["mean"]), (metric, summary["metrics"][metric])


def test_train_help_shows_defaults_and_paper(cli) -> None:
    for model, words in (
        ("cddpm", ["2312.04215", "t_ensemble", "250,500,750", "pretrain_steps"]),
        ("ddpm", ["sampling_steps", "network calls per slice", "AnoDDPM"]),
        ("pddpm", ["patch_ensemble", "mahalanobis_regularisation"]),
    ):
        result = cli("train", "--model", model, "--help")
        assert result.exit_code == 0
        text = " ".join(result.output.split())
        for word in words:
            assert word in text, (model, word)


@pytest.mark.slow
def test_flair_through_preprocess_train_evaluate(tmp_path: Path, cli) -> None:
    """FLAIR: raw BraTS-layout FLAIR scans preprocess with --modality flair; FLAIR volumes train and evaluate."""
    raw = tmp_path / "raw"
    assert cli("--seed", "1", "synth", raw, "--healthy", "0", "--lesions", "1", "--modality", "flair").exit_code == 0
    result = cli("--hide-progress", "preprocess", raw / "BraTS2021", tmp_path / "prep", "--dataset", "brats21",
                 "--modality", "flair")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "prep").glob("brats/*/image.nii.gz"))) == 1

    from mriad.synth import min_healthy_for_splits

    data = tmp_path / "flair"
    result = cli("--seed", "0", "synth", data, "--preprocessed", "--modality", "flair", "--healthy",
                 str(min_healthy_for_splits(5)), "--lesions", "4")  # fmt: skip
    assert result.exit_code == 0, result.output
    run = tmp_path / "cddpm-flair"
    sets = [arg for value in RUNS["cddpm"][1] for arg in ("--set", value)]
    base = ("--device", "cpu", "--hide-progress")
    result = cli(*base, "train", "--model", "cddpm", "--data", data / "manifest.csv", "--out", run, "--epochs", "1",
                 *sets)  # fmt: skip
    assert result.exit_code == 0, result.output
    result = cli(*base, "evaluate", "--run", run, "--split", "brats-test", "--no-figures")
    assert result.exit_code == 0, result.output
    summary = json.loads((run / "eval" / "brats-test" / "summary.json").read_text())
    assert math.isfinite(summary["metrics"]["auroc"]["mean"])
