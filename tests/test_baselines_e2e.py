"""End to end for every baseline: synthetic preprocessed data -> train -> reconstruct -> evaluate.

Through the real command line (``mriad.cli.app`` in-process), with tiny networks and a few epochs, so
each model takes seconds on CPU. What is checked is the plumbing: every stage writes what the run
folder contract promises (checkpoints, maps, ``eval/brats-test/summary.json`` with finite metrics).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

# Epochs and `--set` options per model: tiny widths, small batches (the synthetic slices are 96x96,
# as real ones). Fold 0 has 4 training volumes, so an epoch is ceil(4 / batch_size) steps; the SVAE
# sees whole 50-slice volumes per step, hence fewer epochs.
EPOCHS = {"thresh": 1, "ae": 3, "vae": 3, "svae": 2, "dae": 3, "fanogan": 4}
TINY_SETS: dict[str, list[str]] = {
    "thresh": [],
    "ae": ["base_channels=4", "latent_dim=16", "batch_size=4"],
    "vae": ["base_channels=4", "latent_dim=16", "batch_size=4"],
    "svae": ["base_channels=4", "latent_dim=16", "transformer_ff=32", "transformer_layers=1", "batch_size=2"],
    "dae": ["base_channels=4", "channel_mult=1,2,2", "batch_size=4"],
    # Two GAN steps (critic + generator with n_critic=1), then encoder steps.
    "fanogan": ["base_channels=4", "latent_dim=16", "batch_size=4", "gan_steps=2", "n_critic=1"],
}


@pytest.fixture(scope="module")
def synthetic_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """7 healthy IXI-like subjects (2 test, 5 trainval folds) and 4 BraTS-like lesion subjects."""
    from mriad.synth import min_healthy_for_splits, synthesize

    out = tmp_path_factory.mktemp("synth")
    result = synthesize(out / "data", healthy=min_healthy_for_splits(5), lesions=4, preprocessed=True, seed=0)
    assert result.manifest is not None
    return result.manifest


@pytest.mark.parametrize("model", list(TINY_SETS))
def test_train_reconstruct_evaluate(model: str, synthetic_manifest: Path, tmp_path: Path, cli) -> None:
    run = tmp_path / f"{model}-fold0"
    sets = [arg for value in TINY_SETS[model] for arg in ("--set", value)]
    result = cli(
        "--device", "cpu", "--hide-progress", "train", "--model", model, "--data", synthetic_manifest,
        "--fold", "0", "--out", run, "--epochs", str(EPOCHS[model]), "--val-every", "1", *sets,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == model
    if model != "thresh":
        assert (run / "checkpoints" / "last.pt").is_file()

    result = cli("--device", "cpu", "--hide-progress", "reconstruct", "--run", run, "--split", "brats-test")
    assert result.exit_code == 0, result.output
    assert len(list((run / "recon" / "brats-test").glob("*_score.nii.gz"))) == 3

    result = cli(
        "--device", "cpu", "--hide-progress", "evaluate", "--run", run, "--split", "brats-test", "--no-figures"
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((run / "eval" / "brats-test" / "summary.json").read_text())
    assert summary["n_subjects"] == 3
    for name in ("dice", "auprc", "auroc"):
        assert math.isfinite(summary["metrics"][name]["mean"]), (name, summary["metrics"][name])


def test_fanogan_phase_split_follows_the_engines_step_count(synthetic_manifest: Path, tmp_path: Path) -> None:
    """Without --set gan_steps, the GAN gets gan_fraction of the run's steps, the encoder the rest."""
    from mriad.train.engine import fit

    options = {"base_channels": 4, "latent_dim": 16, "batch_size": 4, "n_critic": 1, "epochs": 4, "val_every": 2}
    result = fit("fanogan", data=synthetic_manifest, fold=0, out=tmp_path / "run", options=options, device="cpu")
    model = result.model
    assert int(model.total_steps) == result.step == 4  # 4 epochs x ceil(4 volumes / batch 4)
    assert int(model.encoder_from) == 3  # round(0.75 * 4)
