"""Loading a split's volumes (image, reconstruction, score map, masks) for evaluation.

A split is read once, with threads (gzip inflation releases the GIL), into stacked CPU tensors
``(B, X, Y, Z)``; the evaluation then moves chunks of volumes to the device. The preprocessed grid is
fixed by the contract (CONTRACTS.md), so every volume of a split must have the same shape; a subject
that does not is refused by name rather than silently resampled. Multi-channel scans (``preprocess
--modality t2,flair``) and their reconstructions are ``(X, Y, Z, C)``, stacked ``(B, X, Y, Z, C)``;
score maps, masks and segmentations stay 3D.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mriad.contracts.data import read_masks
from mriad.contracts.manifest import blank
from mriad.contracts.recon_records import stale_maps
from mriad.contracts.run_folder import RunFolder
from mriad.infra.errors import InputError, MriadError
from mriad.infra.io import Volume, check_labels, check_same_grid, read_nifti


def recon_files(run: Path, split: str, subject: str) -> tuple[Path, Path]:
    """Where `mriad reconstruct` writes a subject's reconstruction and score map."""
    return RunFolder(run).recon_files(split, subject)


def missing_recon(run: Path, split: str, rows: pd.DataFrame) -> list[str]:
    """Subjects of ``rows`` without maps of their scans as they are now: none on disk, or maps whose
    record names another scan, mask or checkpoint (:func:`~mriad.contracts.recon_records.stale_maps`)."""
    return [
        str(row["subject_id"])
        for _, row in rows.iterrows()
        if stale_maps(run, split, str(row["subject_id"]), row["image"], row.get("mask")) is not None
    ]


def require_recon(run: Path, split: str, rows: pd.DataFrame) -> None:
    """Refuse a split without any map; subjects missing only theirs become failures when loaded.

    Evaluation only reads maps: making them is `mriad reconstruct`'s job (`mriad evaluate` runs it
    for missing maps before evaluating; some subjects may stay without maps when their scans were
    refused there).
    """
    missing = missing_recon(run, split, rows)
    if missing and len(missing) == len(rows):
        rec, _ = recon_files(run, split, missing[0])
        raise InputError(
            rec,
            f"missing ({len(missing)} subject(s) of {split} lack maps): run `mriad reconstruct --run {run} "
            f"--split {split}` first",
        )


@dataclass
class SplitVolumes:
    """All volumes of one split, stacked on the CPU; ``seg`` is all-zero for healthy subjects."""

    rows: pd.DataFrame
    image: torch.Tensor
    reconstruction: torch.Tensor
    score: torch.Tensor
    mask: torch.Tensor
    seg: torch.Tensor
    affine: np.ndarray
    # Voxels no metric counts, neither lesion nor healthy (manifest column ``ignore``, e.g. WMH's
    # label 2); None when no subject of the split has any, so nothing changes for those splits.
    ignore: torch.Tensor | None = None

    @property
    def labels(self) -> np.ndarray:
        return self.rows["label"].to_numpy(dtype=int)

    def __len__(self) -> int:
        return len(self.rows)


def _read_ignore(path: object, grid: Volume) -> np.ndarray | None:
    """The subject's voxels no metric counts (0/1 on its grid), or None when the manifest names none."""
    if path is None or blank(path):
        return None
    volume = read_nifti(str(path), allow_empty=True)
    check_same_grid(grid, volume)
    check_labels(volume, allowed=(0, 1), what="ignore mask")
    return volume.data > 0.5


def _read_subject(run: Path, split: str, row: pd.Series) -> dict:
    subject = str(row["subject_id"])
    rec_path, score_path = recon_files(run, split, subject)
    for path in (rec_path, score_path):
        if not path.is_file():
            raise InputError(path, f"missing: run `mriad reconstruct --run {run} --split {split}`")
    image = read_nifti(row["image"], allow_empty=True, channels=True)
    mask, seg = read_masks(image, row["mask"], row["seg"], require_mask=True)
    stale = stale_maps(run, split, subject, row["image"], row["mask"])
    if stale is not None:  # never score a scan against the maps of another
        raise InputError(rec_path, f"{stale}; run `mriad reconstruct --run {run} --split {split}` to redo it")
    if seg is None:
        seg = np.zeros(image.shape[:3], dtype=bool)
    rec = read_nifti(rec_path, allow_empty=True, channels=True).data
    score = read_nifti(score_path, allow_empty=True).data
    for path, array, shape in ((rec_path, rec, image.shape), (score_path, score, image.shape[:3])):
        if array.shape != shape:
            raise InputError(path, f"shape {array.shape} differs from the image's {shape}")
    ignore = _read_ignore(row.get("ignore"), Volume(mask, image.affine, str(row["image"])))
    return {
        "ignore": ignore,
        "image": image.data,
        "reconstruction": rec,
        "score": score,
        "mask": mask,
        "seg": seg,
        "affine": image.affine,
    }


def load_split(
    run: Path,
    split: str,
    rows: pd.DataFrame,
    workers: int | None = None,
    failures: list[tuple[str, str]] | None = None,
) -> SplitVolumes:
    """Read every subject of ``rows`` (threaded) and stack them into CPU tensors.

    A bad subject raises its :class:`InputError`, unless a ``failures`` list is given: then it is
    appended there as ``(subject_id, one-line reason)`` and left out, so one broken file does not stop
    the evaluation of the others (the caller reports it and exits non-zero).
    """
    workers = workers or min(8, os.cpu_count() or 1, max(len(rows), 1))

    def read(row: pd.Series) -> dict | InputError:
        try:
            return _read_subject(run, split, row)
        except InputError as exc:
            if failures is None:
                raise
            return exc

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda item: read(item[1]), rows.iterrows()))
    keep = []
    for (index, row), item in zip(rows.iterrows(), results):
        if isinstance(item, InputError):
            failures.append((str(row["subject_id"]), str(item)))  # type: ignore[union-attr]
        else:
            keep.append(index)
    loaded = [item for item in results if not isinstance(item, InputError)]
    if not loaded:
        raise MriadError(f"{split}: no subject could be read ({failures[0][1] if failures else 'empty split'})")
    rows = rows.loc[keep]
    shape = loaded[0]["image"].shape
    for (_, row), item in zip(rows.iterrows(), loaded):
        if item["image"].shape != shape:
            raise InputError(row["image"], f"shape {item['image'].shape} differs from the split's {shape}")

    def stack(key: str, dtype: torch.dtype) -> torch.Tensor:
        return torch.from_numpy(np.stack([item[key] for item in loaded])).to(dtype)

    return SplitVolumes(
        rows=rows.reset_index(drop=True),
        image=stack("image", torch.float32),
        reconstruction=stack("reconstruction", torch.float32),
        score=stack("score", torch.float32),
        mask=stack("mask", torch.bool),
        seg=stack("seg", torch.bool),
        affine=loaded[0]["affine"],
        ignore=_stack_ignore([item["ignore"] for item in loaded], loaded[0]["mask"].shape),
    )


def _stack_ignore(masks: list[np.ndarray | None], shape: tuple[int, ...]) -> torch.Tensor | None:
    """``(B, X, Y, Z)`` bool, all-False for subjects without an ignore mask; None when none has one."""
    if all(mask is None for mask in masks):
        return None
    empty = np.zeros(shape, dtype=bool)
    return torch.from_numpy(np.stack([empty if mask is None else mask for mask in masks]))


def reference_channel(stack: torch.Tensor) -> torch.Tensor:
    """``(B, X, Y, Z)`` as it is; ``(B, X, Y, Z, C)`` -> its first channel (the reference modality)."""
    return stack[..., 0] if stack.dim() == 5 else stack


def volumes_per_chunk(voxels: int, device: torch.device) -> int:
    """How many volumes to process at once: ~128 bytes of working memory per voxel in the metrics."""
    budget = (8 << 30) if device.type == "cuda" else (1 << 30)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = min(budget, free // 3)
    return max(1, int(budget // (voxels * 128)))
