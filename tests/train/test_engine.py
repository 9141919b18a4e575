"""The training engine: exact resume, learning, run-folder rules, checkpoint layout, model kinds."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from tinydata import TINY_PDDPM
from torch import nn

from mriad.infra.errors import MriadError
from mriad.models.base import AnomalyModel
from mriad.models.registry import load_run_model
from mriad.train import fit, train

OPTIONS = {**TINY_PDDPM, "epochs": 6, "val_every": 2, "lr": 1e-3}


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


def test_interrupted_then_resumed_run_is_bit_exact(tiny_manifest: Path, tmp_path: Path) -> None:
    whole = fit("pddpm", data=tiny_manifest, out=tmp_path / "whole", options=OPTIONS, device="cpu", seed=3)
    part = fit("pddpm", data=tiny_manifest, out=tmp_path / "part", options=OPTIONS, device="cpu", seed=3, max_steps=7)
    assert (part.step, part.epoch, part.finished) == (7, 2, False)
    # A row the interrupted run never reached (e.g. written just before a crash) must be dropped.
    with open(tmp_path / "part" / "metrics.csv", "a") as handle:
        handle.write("4,12,9.0,9.0,1.0\n")
    resumed = fit(
        "pddpm", data=tiny_manifest, out=tmp_path / "part", options=OPTIONS, device="cpu", seed=3, resume=True
    )
    assert resumed.finished and resumed.step == whole.step == 18
    assert _rows(tmp_path / "part") == _rows(tmp_path / "whole")
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    # resuming a finished run does nothing
    again = fit("pddpm", data=tiny_manifest, out=tmp_path / "part", options=OPTIONS, device="cpu", seed=3, resume=True)
    assert again.step == 18 and len(_rows(tmp_path / "part")) == 4


def test_tiny_pddpm_learns(tiny_manifest: Path, tmp_path: Path) -> None:
    options = {**TINY_PDDPM, "epochs": 30, "val_every": 10, "lr": 2e-3}
    result = fit("pddpm", data=tiny_manifest, out=tmp_path / "run", options=options, device="cpu", seed=0)
    rows = _rows(tmp_path / "run")
    first, best = float(rows[0]["val_loss"]), result.best_val
    assert rows[0]["epoch"] == "0" and rows[0]["train_loss"] == ""  # baseline of the untrained model
    assert best is not None and best <= 0.5 * first, (first, best)


def test_run_folder_layout_and_checkpoint(tiny_manifest: Path, tmp_path: Path) -> None:
    out = train(
        "pddpm",
        data=tiny_manifest,
        out=tmp_path / "run",
        options={**OPTIONS, "epochs": 2},
        device="cpu",
        seed=1,
        fold=1,
    )
    config = json.loads((out / "config.json").read_text())
    assert {"model", "fold", "data", "options", "versions", "git_commit", "created", "seed", "dataset"} <= set(config)
    assert config["model"] == "pddpm" and config["fold"] == 1 and config["data"] == str(tiny_manifest.resolve())
    assert config["options"]["patch_size"] == 16 and {"mriad", "torch", "python"} <= set(config["versions"])
    assert [r["epoch"] for r in _rows(out)] == ["0", "2"]
    checkpoint = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert {"model", "config", "state_dict", "optimizers", "step", "epoch", "rng", "best_val"} <= set(checkpoint)
    assert checkpoint["model"] == "pddpm" and checkpoint["epoch"] == 2 and len(checkpoint["optimizers"]) == 1
    assert isinstance(checkpoint["rng"]["generator"], torch.Tensor)
    model = load_run_model(out, "best")
    assert model.config["patch_size"] == 16
    assert model.reconstruct(torch.rand(2, 1, 32, 32)).shape == (2, 1, 32, 32)


def test_existing_runs_are_protected(tiny_manifest: Path, tmp_path: Path) -> None:
    options = {**OPTIONS, "epochs": 1}
    out = train("pddpm", data=tiny_manifest, out=tmp_path / "run", options=options, device="cpu")
    with pytest.raises(MriadError, match="--resume"):
        train("pddpm", data=tiny_manifest, out=out, options=options, device="cpu")
    with pytest.raises(MriadError, match="'pddpm', not 'ddpm'"):
        train("ddpm", data=tiny_manifest, out=out, options=options, device="cpu", force=True)
    with pytest.raises(MriadError, match="patch_size"):
        train(
            "pddpm",
            data=tiny_manifest,
            out=out,
            options={**options, "patch_size": 8, "epochs": 2},
            device="cpu",
            resume=True,
        )
    with pytest.raises(MriadError, match="trained with fold 0"):
        train("pddpm", data=tiny_manifest, out=out, options=options, device="cpu", resume=True, fold=2)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(MriadError, match="not a run folder"):
        train("pddpm", data=tiny_manifest, out=tmp_path / "other", options=options, device="cpu")
    # --force starts over; --resume with more epochs continues
    (out / "recon").mkdir()
    train("pddpm", data=tiny_manifest, out=out, options=options, device="cpu", force=True)
    assert not (out / "recon").exists()
    longer = fit("pddpm", data=tiny_manifest, out=out, options={**options, "epochs": 2}, device="cpu", resume=True)
    assert longer.epoch == 2 and json.loads((out / "config.json").read_text())["options"]["epochs"] == 2


class _Untrainable(AnomalyModel):
    name: ClassVar[str] = "untrainable"
    trainable: ClassVar[bool] = False
    defaults: ClassVar[dict[str, Any]] = {"level": 0.5}


class _VolumeModel(AnomalyModel):
    """Sees whole slice stacks; records their shape."""

    name: ClassVar[str] = "volumes"
    batch_kind: ClassVar[str] = "volumes"
    defaults: ClassVar[dict[str, Any]] = {"batch_size": 2, "epochs": 2, "val_every": 1}
    shapes: ClassVar[list[tuple[int, ...]]] = []

    def __init__(self, **config: Any):
        super().__init__(**config)
        self.scale = nn.Parameter(torch.ones(()))

    def training_loss(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.training and batch.device.type != "meta":  # validation batches may be smaller; the
            _VolumeModel.shapes.append(tuple(batch.shape))  # memory guard counts meta batches of 2 and 4
        return (self.scale * batch - batch).abs().mean() + (self.scale - 2).abs()


def test_untrainable_and_volume_models(tiny_manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    classes = {"untrainable": _Untrainable, "volumes": _VolumeModel}
    monkeypatch.setattr("mriad.train.engine.get_model_class", classes.__getitem__)
    out = train("untrainable", data=tiny_manifest, out=tmp_path / "u", options={}, device="cpu")
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]
    result = fit("volumes", data=tiny_manifest, out=tmp_path / "v", options={}, device="cpu")
    assert _VolumeModel.shapes and all(s[0] == 2 and s[1:] == (8, 1, 32, 32) for s in _VolumeModel.shapes)
    assert result.step == 2 * 5  # ceil(9 volumes / 2) steps per epoch
    shutil.rmtree(tmp_path / "v")


def test_missing_validation_split_still_trains(tiny_manifest: Path, tmp_path: Path) -> None:
    import pandas as pd

    frame = pd.read_csv(tiny_manifest, dtype=str, keep_default_na=False)
    frame.loc[frame["split"] == "trainval", "split"] = "train"
    frame["fold"] = ""
    frame["image"] = [str(tiny_manifest.parent / p) for p in frame["image"]]
    frame["mask"] = [str(tiny_manifest.parent / p) for p in frame["mask"]]
    manifest = tmp_path / "manifest.csv"
    frame.to_csv(manifest, index=False)
    result = fit("pddpm", data=manifest, out=tmp_path / "run", options={**OPTIONS, "epochs": 1}, device="cpu")
    assert result.best_val is None and (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    assert not (tmp_path / "run" / "checkpoints" / "best.pt").exists()


def test_train_spec_is_the_one_record_of_a_run(
    tiny_manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mriad.train import TrainSpec

    monkeypatch.setattr("mriad.train.engine.get_model_class", {"untrainable": _Untrainable}.__getitem__)
    spec = TrainSpec(model="untrainable", data=tiny_manifest, out=tmp_path / "u", fold=2, options={"level": None})
    assert spec.options == {} and isinstance(spec.out, Path)
    # A spec and the same fields as keywords train the same run; keywords replace a spec's fields.
    assert train(spec, device="cpu") == tmp_path / "u"
    again = train(spec, device="cpu", out=tmp_path / "k", force=True)
    first, second = (json.loads((p / "config.json").read_text()) for p in (tmp_path / "u", tmp_path / "k"))
    assert first["fold"] == second["fold"] == 2 and again == tmp_path / "k"
    with pytest.raises(MriadError, match="unknown setting"):
        train("untrainable", data=tiny_manifest, out=tmp_path / "x", device="cpu", epoch=3)
    with pytest.raises(MriadError, match="out must be given"):
        train("untrainable", data=tiny_manifest, device="cpu")
