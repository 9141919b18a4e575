"""Healthy slices from patients, step-K checkpoints, early stopping and checkpoint views (issue 21)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from tinydata import TINY_PDDPM, _volume

from mriad.contracts.data import SplitData
from mriad.contracts.manifest import read_manifest, select_split, write_manifest
from mriad.contracts.run_folder import RunFolder, make_checkpoint_view, step_of
from mriad.infra.errors import InputError, MriadError
from mriad.infra.io import write_nifti
from mriad.split import SplitSettings, split_frame
from mriad.train import fit
from mriad.train.loop import TrainingLoop
from mriad.train.sampler import DeviceSlices, healthy_slice_table
from mriad.train.spec import TrainSpec

LESION_VALUE = 0.97  # brain voxels of a lesion slice; healthy slices of the fixture stay below 0.9


def _split(lesion_slices: list[list[int]], depth: int = 12) -> SplitData:
    """Volumes whose slice z of volume v holds the value ``v * depth + z`` (so a slice names itself)."""
    v = len(lesion_slices)
    images = torch.arange(v * depth, dtype=torch.float32).reshape(v, 1, 1, depth).expand(v, 6, 6, depth).clone()
    masks = torch.zeros(v, 6, 6, depth, dtype=torch.uint8)
    masks[:, 1:5, 1:5, 1:-1] = 1  # 16 voxels of brain in every slice but the two end ones
    masks[:, :, :, 1] = 0
    masks[:, 2:4, 2:4, 1] = 1  # slice 1: 4 of 16 voxels = 0.25 of the largest area
    segs = torch.zeros_like(masks)
    for vol, zs in enumerate(lesion_slices):
        for z in zs:
            segs[vol, 2, 2, z] = 1
    return SplitData([f"s{i}" for i in range(v)], images, masks, segs, [np.eye(4)] * v, pd.DataFrame())


def test_table_keeps_a_margin_from_lesions_and_enough_brain() -> None:
    table = healthy_slice_table(_split([[6], []]), margin=2, min_brain_fraction=0.3)
    assert table[0].nonzero().flatten().tolist() == [2, 3, 9, 10]  # 4..8 near the lesion, 1 too small, 0/11 empty
    assert table[1].nonzero().flatten().tolist() == list(range(2, 11))
    relaxed = healthy_slice_table(_split([[6], []]), margin=0, min_brain_fraction=0.2)
    assert relaxed[0].nonzero().flatten().tolist() == [1, 2, 3, 4, 5, 7, 8, 9, 10]


def test_lesion_slices_never_reach_the_batch() -> None:
    depth = 12
    split = _split([[3, 4, 5, 6, 7, 8, 9, 10], [5], [9]], depth)  # volume 0: no healthy slice
    usable = healthy_slice_table(split, margin=1, min_brain_fraction=0.3)
    data = DeviceSlices.from_split(split, usable)
    assert data.volumes == 2 and data.n_brain_slices == int(usable.sum())  # volume 0 dropped
    generator = torch.Generator().manual_seed(0)
    drawn = {int(v) for v in data.sample_slices(4000, generator)[:, 0, 0, 0].tolist()}
    allowed = {v * depth + z for v, z in usable.nonzero().tolist()}
    assert drawn == allowed  # every healthy slice is drawn, nothing else
    val = {int(x) for x in data.slices[data.evenly_spaced_brain_slices(10)][:, 0, 0, 0].tolist()}
    assert val <= allowed


def _lesion_manifest(root: Path) -> Path:
    """Six tiny 'patients': a bright lesion in the slices 3-4 of each; split 2 train / 2 val / 2 test."""
    rng = np.random.default_rng(1)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    rows = []
    for i in range(6):
        image, mask = _volume(rng)
        image = np.minimum(image, 0.85)
        seg = np.zeros_like(mask)
        seg[12:18, 12:18, 3:5] = 1
        image[:, :, 3:5] = np.where(mask[:, :, 3:5] > 0, LESION_VALUE, 0)
        folder = root / "brats" / f"P{i}"
        for name, array, dtype in (("image", image, np.float32), ("mask", mask, np.uint8), ("seg", seg, np.uint8)):
            write_nifti(folder / f"{name}.nii.gz", array, affine, dtype=dtype)
        rows.append(
            {"subject_id": f"P{i}", "dataset": "brats", "split": "", "fold": -1, "label": 1,
             "image": str(folder / "image.nii.gz"), "mask": str(folder / "mask.nii.gz"),
             "seg": str(folder / "seg.nii.gz"), "age": "", "sex": "", "source": "tiny"}
        )  # fmt: skip
    frame = pd.DataFrame(rows)
    settings = SplitSettings(lesion_val_fraction={"brats": 2 / 6}, lesion_train_fraction={"brats": 2 / 6})
    return write_manifest(split_frame(frame, settings, seed=0), root / "manifest.csv")


def test_split_puts_patients_in_disjoint_train_val_test(tmp_path: Path) -> None:
    frame = read_manifest(_lesion_manifest(tmp_path))
    parts = [set(select_split(frame, f"brats-{s}")["subject_id"]) for s in ("train", "val", "test")]
    assert [len(p) for p in parts] == [2, 2, 2] and len(set().union(*parts)) == 6
    # without --brats-train the split is the old one: val and test only
    plain = split_frame(frame.assign(split=""), SplitSettings(lesion_val_fraction={"brats": 2 / 6}), seed=0)
    assert set(plain["split"]) == {"val", "test"}
    assert set(plain.loc[plain["split"] == "val", "subject_id"]) == parts[1]


def test_training_on_healthy_slices_of_patients(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = _lesion_manifest(tmp_path / "data")
    seen: list[torch.Tensor] = []
    original = TrainingLoop._batch

    def spy(self: TrainingLoop) -> torch.Tensor:
        batch = original(self)
        seen.append(batch.detach().clone())
        return batch

    monkeypatch.setattr(TrainingLoop, "_batch", spy)
    options = {**TINY_PDDPM, "epochs": 20, "val_every": 2, "lr": 1e-3}
    result = fit(
        "pddpm", data=manifest, out=tmp_path / "run", dataset="brats", options=options, device="cpu",
        healthy_slices=True, slice_margin=1, min_brain_fraction=0.3, checkpoint_every=4, max_steps=10,
    )  # fmt: skip
    assert result.step == 10 and len(seen) == 10
    batches = torch.cat(seen)
    assert float(batches.max()) < 0.9  # no lesion slice (0.97) ever reached a batch
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["dataset"] == "brats"
    assert config["training"]["healthy_slices"] == {"slice_margin": 1, "min_brain_fraction": 0.3}
    assert config["training"]["checkpoint_every"] == 4
    assert sorted(RunFolder(tmp_path / "run").step_checkpoints()) == [4, 8]
    # the same data without the filter does draw the lesion slices
    seen.clear()
    fit("pddpm", data=manifest, out=tmp_path / "all", dataset="brats", options=options, device="cpu", max_steps=10)
    assert float(torch.cat(seen).max()) > 0.95


def test_early_stopping_stops_after_patience_validations(tiny_manifest: Path, tmp_path: Path) -> None:
    # lr 0: the validation loss never improves on the baseline, so patience 2 stops at the 2nd validation
    options = {**TINY_PDDPM, "epochs": 40, "val_every": 1, "lr": 0.0}
    result = fit("pddpm", data=tiny_manifest, out=tmp_path / "run", options=options, device="cpu", patience=2)
    assert result.finished and result.epoch == 2
    rows = (tmp_path / "run" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 3  # header, baseline, two validations without improvement
    again = fit("pddpm", data=tiny_manifest, out=tmp_path / "run", options=options, device="cpu", patience=2,
                resume=True)  # fmt: skip
    assert again.step == result.step  # a stopped run stays stopped
    with pytest.raises(MriadError, match="--patience 0"):
        TrainSpec(model="pddpm", data=tiny_manifest, out=tmp_path / "x", patience=0)


def test_checkpoint_names_and_views(tiny_manifest: Path, tmp_path: Path) -> None:
    assert [step_of(s) for s in ("step-300", "step-0", "step-x", "step-03", "best")] == [300, 0, None, None, None]
    options = {**TINY_PDDPM, "epochs": 3, "val_every": 1}
    fit("pddpm", data=tiny_manifest, out=tmp_path / "run", options=options, device="cpu", checkpoint_every=3)
    run = RunFolder(tmp_path / "run")
    assert list(run.step_checkpoints()) == [3, 6, 9]
    view = make_checkpoint_view(run.root, "step-6")
    assert view.root == run.root / "checkpoint-views" / "step-6"
    assert view.best.read_bytes() == run.step_checkpoint(6).read_bytes()
    assert json.loads(view.config.read_text())["checkpoint"] == "step-6"
    assert view.eval_dir("brats-test") != run.eval_dir("brats-test")
    with pytest.raises(InputError, match="kept: step-3, step-6, step-9"):
        make_checkpoint_view(run.root, "step-5")
    with pytest.raises(MriadError, match="step-K"):
        run.checkpoint("latest")


@pytest.mark.slow  # trains, then reconstructs and evaluates twice: ~10 s alone, more on shared cores
def test_evaluate_a_step_checkpoint_leaves_the_best_evaluation_alone(tmp_path: Path, cli) -> None:
    manifest = _lesion_manifest(tmp_path / "data")
    run = tmp_path / "run"
    options = {**TINY_PDDPM, "epochs": 20, "val_every": 2}
    fit("pddpm", data=manifest, out=run, dataset="brats", options=options, device="cpu",
        healthy_slices=True, slice_margin=1, checkpoint_every=4, max_steps=8)  # fmt: skip
    common = ["--device", "cpu", "evaluate", "--run", run, "--split", "brats-test", "--val-split", "brats-val"]
    assert cli(*common, "--no-figures").exit_code == 0
    best = (run / "eval" / "brats-test" / "per_subject.csv").read_bytes()
    result = cli(*common, "--no-figures", "--checkpoint", "step-4")
    assert result.exit_code == 0, result.output
    view = RunFolder(run / "checkpoint-views" / "step-4")
    assert view.per_subject("brats-test").is_file() and view.recon_dir("brats-test").is_dir()
    assert (run / "eval" / "brats-test" / "per_subject.csv").read_bytes() == best  # untouched
    assert cli(*common, "--checkpoint", "step-5").exit_code != 0
