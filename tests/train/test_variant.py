"""`mriad variant`: one trained network, other test-time settings, no retraining."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

UNET = ["base_channels=4", "groups=2", "head_channels=8", "num_res_blocks=1", "channel_mult=1,2", "batch_size=4"]
BASE = ("--device", "cpu", "--hide-progress")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny pDDPM trained for two epochs on synthetic preprocessed data."""
    from typer.testing import CliRunner

    from mriad.cli import app
    from mriad.synth import min_healthy_for_splits, synthesize

    out = tmp_path_factory.mktemp("variant")
    manifest = synthesize(out / "data", healthy=min_healthy_for_splits(5), lesions=4, preprocessed=True, seed=0)
    sets = [arg for value in UNET for arg in ("--set", value)]
    args = [*BASE, "train", "--model", "pddpm", "--data", str(manifest.manifest), "--fold", "0"]
    result = CliRunner().invoke(app, [*args, "--out", str(out / "pddpm"), "--epochs", "2", *sets])
    assert result.exit_code == 0, result.output
    return out / "pddpm"


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_variant_scores_the_same_network_differently(trained: Path, tmp_path: Path, cli) -> None:
    before = _files(trained)
    variant = tmp_path / "pddpm-mhd"
    sets = ("--set", "scoring=mahalanobis", "--set", "n_reconstructions=3")
    result = cli(*BASE, "variant", trained, "--out", variant, *sets)
    assert result.exit_code == 0, result.output

    config = json.loads((variant / "config.json").read_text())
    assert config["options"]["scoring"] == "mahalanobis" and config["options"]["n_reconstructions"] == 3
    assert config["variant_of"]["changed"] == {"scoring": "mahalanobis", "n_reconstructions": 3}
    source = json.loads((trained / "config.json").read_text())
    differing = {k for k in source["options"] if source["options"][k] != config["options"][k]}
    assert differing == {"scoring", "n_reconstructions"}
    for name in ("best.pt", "last.pt"):
        assert (variant / "checkpoints" / name).read_bytes() == (trained / "checkpoints" / name).read_bytes()

    from mriad.models.registry import load_run_model

    model = load_run_model(variant)
    assert model.config["scoring"] == "mahalanobis" and model.plan.members[0].t_test == model.config["t_test"]
    assert load_run_model(trained).config["scoring"] == "residual"

    import torch

    volumes = torch.rand(1, 3, 1, 96, 96) * 0.8  # three slices: enough to tell the scorings apart
    _, plain = load_run_model(trained).score_volumes(volumes)
    _, mhd = model.score_volumes(volumes)
    assert plain.shape == mhd.shape and not torch.allclose(plain, mhd)
    after = _files(trained)
    assert {k: v for k, v in after.items() if k in before} == before  # the source run is only read


@pytest.mark.parametrize(
    ("sets", "words"),
    [
        (["--set", "lr=1"], "training options"),
        (["--set", "patch_size=32"], "training options"),
        (["--set", "colour=red"], "unknown"),
        (["--set", "scoring=cosine"], "scoring"),
        ([], "--set"),
    ],
)
def test_variant_refuses_what_it_cannot_do_in_one_line(
    trained: Path, tmp_path: Path, cli, sets: list[str], words: str
) -> None:
    out = tmp_path / "v"
    result = cli("variant", trained, "--out", out, *sets)
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in result.output, result.output
    assert not out.exists()


def test_variant_refuses_an_existing_folder(trained: Path, tmp_path: Path, cli) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    result = cli("variant", trained, "--out", out, "--set", "t_test=300")
    assert result.exit_code != 0 and "not an empty folder" in result.output
    assert (out / "notes.txt").read_text() == "keep me" and len(list(out.iterdir())) == 1
