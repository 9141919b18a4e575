"""Fabricated run folders as `mriad train` / `reconstruct` / `evaluate` write them (per docs/CONTRACTS.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

SHAPE = (16, 16, 8)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def write_manifest(root: Path, subjects: list[str]) -> Path:
    """Tiny lesion subjects (image, mask, seg) and a manifest listing them as brats test."""
    from mriad.contracts.manifest import write_manifest as write
    from mriad.infra.io import write_nifti

    rows = []
    for index, subject in enumerate(subjects):
        rng = np.random.default_rng(index)
        mask = np.zeros(SHAPE, np.uint8)
        mask[2:-2, 2:-2, 1:-1] = 1
        image = (rng.random(SHAPE).astype(np.float32) * 0.4 + 0.3) * mask
        seg = np.zeros(SHAPE, np.uint8)
        seg[5 : 8 + index % 3, 6:10, 3:5] = 1
        image[seg > 0] = 1.0
        folder = root / "brats" / subject
        write_nifti(folder / "image.nii.gz", image, AFFINE)
        write_nifti(folder / "mask.nii.gz", mask, AFFINE, dtype=np.uint8)
        write_nifti(folder / "seg.nii.gz", seg, AFFINE, dtype=np.uint8)
        rows.append(
            dict(
                subject_id=subject,
                dataset="brats",
                split="test",
                fold="",
                label=1,
                image=folder / "image.nii.gz",
                mask=folder / "mask.nii.gz",
                seg=folder / "seg.nii.gz",
                age="",
                sex="",
                source="test",
            )
        )
    path = root / "manifest.csv"
    write(pd.DataFrame(rows), path)
    return path


def make_run(
    root: Path,
    name: str,
    model: str,
    fold: int | None,
    dice: np.ndarray,
    *,
    subjects: list[str],
    split: str = "brats-test",
    manifest: Path | None = None,
    options: dict | None = None,
    label: str | None = None,
    recon: int = 0,
    evaluated: bool = True,
) -> Path:
    """A run folder with config.json, metrics.csv and (optionally) eval/<split>/ and a few x̂ volumes."""
    from mriad.infra.io import write_nifti

    run = root / name
    run.mkdir(parents=True)
    config = {
        "model": model,
        "fold": fold,
        "data": {"manifest": str(manifest) if manifest else None},
        "options": options or {"lr": 1e-4},
        "versions": {"mriad": "0.1.0"},
        "git_commit": "abc123",
        "created": "2024-01-01T00:00:00",
        "seed": 0,
    }
    if label:
        config["label"] = label
    (run / "config.json").write_text(json.dumps(config))
    epochs = np.arange(1, 11)
    pd.DataFrame(
        {
            "epoch": epochs,
            "step": epochs * 10,
            "train_loss": 1.0 / epochs,
            "val_loss": np.where(epochs % 2 == 0, 1.2 / epochs, np.nan),
            "seconds": epochs * 3.0,
        }
    ).to_csv(run / "metrics.csv", index=False)
    dice = np.asarray(dice, dtype=float)
    if evaluated:
        folder = run / "eval" / split
        folder.mkdir(parents=True)
        frame = pd.DataFrame(
            {
                "subject_id": subjects,
                "dataset": "brats",
                "label": 1,
                "dice": dice,
                "auprc": np.clip(dice + 0.05, 0, 1),
                "auroc": np.clip(0.5 + dice / 2, 0, 1),
                "oracle_dice": np.clip(dice + 0.1, 0, 1),
                "l1": np.nan,
                "lesion_voxels": [20 + 4 * i for i in range(len(subjects))],
                "predicted_voxels": 30,
            }
        )
        frame.to_csv(folder / "per_subject.csv", index=False)
        summary = {
            "run": str(run),
            "model": model,
            "fold": fold,
            "split": split,
            "val_split": "brats-val",
            "threshold": 0.25,
            "threshold_search": "exact",
            "n_subjects": len(subjects),
            "metrics": {
                m: {"mean": float(frame[m].mean()), "std": float(frame[m].std())} for m in ("dice", "auprc", "auroc")
            },
        }
        (folder / "summary.json").write_text(json.dumps(summary))
    if recon and manifest is not None:
        from mriad.infra.io import read_nifti

        table = pd.read_csv(manifest, dtype=str)
        for subject in subjects[:recon]:
            relative = table.loc[table["subject_id"] == subject, "image"].iloc[0]
            image = read_nifti(manifest.parent / relative).data
            rec = np.where(image > 0.9, 0.5, image).astype(np.float32)  # the lesion "healed"
            write_nifti(run / "recon" / split / f"{subject}_rec.nii.gz", rec, AFFINE)
    return run


def standard_runs(root: Path, *, n: int = 12, recon: int = 2) -> tuple[list[Path], list[str], Path]:
    """ddpm and pddpm, folds 0 and 1, pddpm clearly better; returns (runs, subjects, manifest)."""
    subjects = [f"BraTS_{i:03d}" for i in range(n)]
    manifest = write_manifest(root / "data", subjects)
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.5, size=n)
    runs = []
    for model, gain in (("ddpm", 0.0), ("pddpm", 0.15)):
        for fold in (0, 1):
            dice = np.clip(base + gain + rng.normal(0, 0.01, size=n), 0, 1)
            runs.append(
                make_run(
                    root / "runs",
                    f"{model}-fold{fold}",
                    model,
                    fold,
                    dice,
                    subjects=subjects,
                    manifest=manifest,
                    recon=recon,
                )
            )
    return runs, subjects, manifest
