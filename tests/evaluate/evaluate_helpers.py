"""Fabricated run folders for the evaluate tests: a subject's volumes, its maps and its manifest row."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mriad.contracts.run_folder import RunFolder
from mriad.infra.io import write_nifti

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def write_subject(
    data: Path,
    run: Path,
    dataset: str,
    split: str,
    subject: str,
    *,
    image: np.ndarray,
    mask: np.ndarray,
    seg: np.ndarray | None,
    score: np.ndarray,
    rec: np.ndarray | None = None,
) -> dict:
    """``data/<dataset>/<subject>/{image,mask[,seg]}.nii.gz``, the run's ``_rec``/``_score`` maps of
    split ``<dataset>-<split>`` (rec: ``image - score`` unless given); returns the manifest row."""
    folder = data / dataset / subject
    row = dict(
        subject_id=subject, dataset=dataset, split=split, fold="", label=int(seg is not None),
        image=folder / "image.nii.gz", mask=folder / "mask.nii.gz", seg="", age="", sex="", source="t",
    )  # fmt: skip
    write_nifti(row["image"], image, AFFINE)
    write_nifti(row["mask"], mask, AFFINE, dtype=np.uint8)
    if seg is not None:
        row["seg"] = folder / "seg.nii.gz"
        write_nifti(row["seg"], seg, AFFINE, dtype=np.uint8)
    rec_path, score_path = RunFolder(run).recon_files(f"{dataset}-{split}", subject)
    write_nifti(rec_path, image - score if rec is None else rec, AFFINE)
    write_nifti(score_path, score, AFFINE)
    return row
