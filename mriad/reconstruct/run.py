"""Write every subject's reconstruction and score map for a split, each with a record of what made it.

Several volumes go through the model together (the model chunks its own network calls); reading the
next group and writing finished NIfTI files happen on worker threads so the device is not left
waiting on gzip. Subjects whose maps were made from the same scan, mask, checkpoint and settings are
skipped, so an interrupted run resumes where it stopped; any other map is made again.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mriad.contracts.data import check_channels, image_channels, read_image
from mriad.contracts.manifest import read_manifest, select_split
from mriad.contracts.recon_records import input_digests, recon_mismatch, write_recon_record
from mriad.contracts.run_folder import RunFolder, model_identity, read_run_config, resolve_manifest
from mriad.infra.console import info, track, warn
from mriad.infra.errors import InputError, MriadError
from mriad.infra.io import atomic_write_csv, read_nifti, write_nifti
from mriad.infra.locking import folder_lock, shard_lock
from mriad.runtime.memory import check_inference_memory


@dataclass
class ReconstructResult:
    out: Path
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "written": len(self.written),
            "skipped": len(self.skipped),
            "failed": len(self.failures),
            "seconds": round(self.seconds, 3),
        }


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"1/4"`` -> (1, 4); ``None`` -> the torchrun rank/world size when launched by torchrun."""
    if text:
        from mriad.infra.shards import parse_shard as parse

        return parse(text)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        return int(os.environ.get("RANK", "0")), world
    return None


def split_rows(run: Path, split: str, data: Path | None, fold: int | None) -> tuple[pd.DataFrame, int]:
    config = read_run_config(run)
    manifest = resolve_manifest(run, config, data)
    if not manifest.is_file():
        raise MriadError(f"{run}: its manifest {manifest} is gone; pass --data MANIFEST")
    fold = int(config.get("fold", 0)) if fold is None else fold
    return select_split(read_manifest(manifest), split, fold), fold


@dataclass
class _Loaded:
    """One subject read from disk: its image and, when the manifest names one, its brain mask."""

    row: Any
    image: Any
    mask: np.ndarray | None


def _read_mask(row: Any, image: Any) -> np.ndarray | None:
    """The subject's brain mask as bool, or None: then every box is reconstructed.

    The mask only saves work (boxes without brain skip the network), so a missing, empty, unreadable
    or misshapen mask costs time, not the subject: it is reported and the volume reconstructed whole.
    """
    path = getattr(row, "mask", None)
    if not isinstance(path, str | os.PathLike) or not str(path).strip():
        return None
    try:
        mask = read_nifti(os.fspath(path), allow_empty=True)
    except InputError as exc:
        warn(f"{row.subject_id}: mask not used ({exc}); reconstructing every box")
        return None
    if mask.shape != image.shape[:3]:
        warn(f"{row.subject_id}: mask shape {mask.shape} differs from the image's {image.shape[:3]}; not used")
        return None
    brain = mask.data > 0.5
    return brain if brain.any() else None


def _load_group(rows: list[Any], use_mask: bool, model: Any) -> tuple[list[_Loaded], list[tuple[str, str]]]:
    """The group's scans (and masks); a bad scan is a failure of its subject, while a scan with
    another channel count than the model's stops the stage (the data and the run disagree)."""
    loaded, failed = [], []
    channels = int(model.config.get("in_channels", 1))
    for row in rows:
        try:
            image = read_image(row.image)
            check_channels(row.image, image_channels(image), channels, f"model {model.name}")
            loaded.append(_Loaded(row, image, _read_mask(row, image) if use_mask else None))
        except InputError as exc:
            failed.append((str(row.subject_id), str(exc)))
    return loaded, failed


def reconstruct(
    run: str | Path,
    split: str,
    *,
    data: str | Path | None = None,
    fold: int | None = None,
    device: Any = "cpu",
    shard: str | tuple[int, int] | None = None,
    force: bool = False,
    volumes_per_batch: int = 4,
    which: str = "best",
    seed: int = 0,
    skip_empty_boxes: bool = True,
    inference: dict[str, Any] | None = None,
) -> ReconstructResult:
    """Reconstruct every subject of ``split`` with the run's model; resumable and shardable.

    ``skip_empty_boxes``: pass each subject's brain mask (the manifest's ``mask`` column) to models
    that accept one, so boxes without brain skip the network; the map inside the mask is unchanged.
    ``inference``: keyword arguments for the model's ``configure_inference`` (diffusion models:
    ``precision``, ``compile``, ``max_chunk``, ``channels_last``); None values keep the defaults.
    A model without such settings refuses non-default ones rather than silently ignoring them.
    """

    if isinstance(volumes_per_batch, bool) or not isinstance(volumes_per_batch, int) or volumes_per_batch < 1:
        raise MriadError(f"--volumes-per-batch {volumes_per_batch!r}: must be a whole number of at least 1")
    if fold is not None and (isinstance(fold, bool) or not isinstance(fold, int) or fold < 0):
        raise MriadError(f"--fold {fold!r}: must be a whole number of at least 0")
    run = Path(run)
    rows, _ = split_rows(run, split, Path(data) if data else None, fold)
    shard_spec = parse_shard(shard) if not isinstance(shard, tuple) else shard
    out = RunFolder(run).recon_dir(split)
    if shard_spec is None:
        lock = folder_lock(out, f"reconstruct {split}")
    else:  # shards of one split run side by side (a Slurm array): each locks only its own part
        rows = rows.iloc[shard_positions(len(rows), volumes_per_batch, shard_spec)]
        lock = shard_lock(out, *shard_spec, f"reconstruct {split} shard {shard_spec[0]}/{shard_spec[1]}")
    with lock:
        return _reconstruct_rows(
            run,
            rows,
            out,
            split,
            device,
            force,
            volumes_per_batch,
            which,
            seed,
            skip_empty_boxes,
            inference,
            shard=shard_spec,
        )


def shard_positions(count: int, volumes_per_batch: int, shard: tuple[int, int]) -> list[int]:
    """Rows of shard ``(i, n)``: whole groups i, i+n, ... of the split, so that each group (and its
    seed) is the one an unsharded run with the same ``volumes_per_batch`` computes: the same maps."""
    index, shards = shard
    return [row for row in range(count) if (row // volumes_per_batch) % shards == index]


def _reconstruct_rows(
    run: Path,
    rows: pd.DataFrame,
    out: Path,
    split: str,
    device: Any,
    force: bool,
    volumes_per_batch: int,
    which: str,
    seed: int,
    use_mask: bool = True,
    inference: dict[str, Any] | None = None,
    shard: tuple[int, int] | None = None,
) -> ReconstructResult:
    from mriad.models.registry import load_run_model

    result = ReconstructResult(out=out)
    requested = {key: value for key, value in (inference or {}).items() if value is not None}
    settings = {
        "which": which,
        "seed": seed,
        "skip_empty_boxes": use_mask,
        "inference": requested,
        "volumes_per_batch": volumes_per_batch,
        "device": str(device),
    }
    record = {"model": model_identity(run, which), "settings": settings}
    done, inputs = _reusable(run, split, rows, record, force)
    result.skipped = [str(s) for s in rows["subject_id"] if str(s) in done]
    if result.skipped:
        info(f"{len(result.skipped)} subject(s) already reconstructed in {out}: skipped")
    # Groups (and their seeds) are cut from the whole split, not from what is left to do: the noise of
    # a group depends on all its volumes, so a group that is partly done is computed whole again and
    # only its missing subjects are written. A resumed run then writes what an uninterrupted one would.
    everything = list(rows.itertuples(index=False))
    all_groups = [everything[i : i + volumes_per_batch] for i in range(0, len(everything), volumes_per_batch)]
    first, step = shard or (0, 1)  # a shard's k-th group is group first + k * step of the whole split
    groups = [
        (first + number * step, group)
        for number, group in enumerate(all_groups)
        if any(str(row.subject_id) not in done for row in group)
    ]
    start = time.perf_counter()
    if groups:
        device = torch.device(device)
        model = load_run_model(run, which=which, device=device)
        model.configure_inference(**(inference or {}))  # a model without such settings refuses them
        use_mask = use_mask and model.accepts_mask
        generator = torch.Generator(device=device)
        with ThreadPoolExecutor(max_workers=2) as pool:
            pending_writes: list[Future] = []
            next_group = pool.submit(_load_group, groups[0][1], use_mask, model)
            for index in track(range(len(groups)), description=f"reconstructing {split}", unit="group"):
                loaded, failed = next_group.result()
                if index + 1 < len(groups):  # read the next group while the device works on this one
                    next_group = pool.submit(_load_group, groups[index + 1][1], use_mask, model)
                result.failures.extend(failed)
                if not loaded:
                    continue
                # One seed per group of the split: results do not depend on what ran before.
                generator.manual_seed(seed + groups[index][0])
                recs, scores = _reconstruct_group(model, loaded, device, generator)
                for item, rec, score in zip(loaded, recs, scores):
                    subject = str(item.row.subject_id)
                    if subject in done:
                        continue  # computed only for its group's noise; its files are already there
                    bad = _non_finite(rec, score)
                    if bad:  # NaN weights or an overflow: a failure of the subject, never a map
                        result.failures.append((subject, f"{item.row.image}: {bad}"))
                        continue
                    maps = (run, split, subject, rec, score, item.image.affine)
                    pending_writes.append(pool.submit(_write_recorded, *maps, inputs.get(subject), item.row, record))
                    result.written.append(subject)
            for future in pending_writes:
                future.result()
    result.seconds = time.perf_counter() - start
    if result.failures:
        failures = pd.DataFrame(result.failures, columns=["subject_id", "reason"])
        path = RunFolder(run).recon_failures(split)
        if shard is not None:  # each shard its own list: shards finish in any order
            path = path.with_name(f"{path.stem}.{shard[0]}-of-{shard[1]}{path.suffix}")
        atomic_write_csv(path, failures)
        for subject, reason in result.failures:
            warn(f"{subject}: {reason}")
    return result


def _non_finite(rec: np.ndarray, score: np.ndarray) -> str:
    """Why a subject's maps cannot be written ("" when every voxel of both is finite)."""
    counts = [int(array.size - np.count_nonzero(np.isfinite(array))) for array in (rec, score)]
    if not any(counts):
        return ""
    return (
        f"reconstruction has {counts[0]} and score map {counts[1]} NaN/Inf voxels (non-finite checkpoint "
        "weights?); nothing written"
    )


def _upload(array: torch.Tensor, device: torch.device) -> torch.Tensor:
    """One host-to-device copy per group, from pinned memory on CUDA so it runs asynchronously."""
    if device.type == "cuda":
        array = array.pin_memory()
    return array.to(device, non_blocking=True)


def _reconstruct_group(
    model: Any, loaded: list[_Loaded], device: torch.device, generator: torch.Generator
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    from mriad.contracts.data import slices_to_volume, volume_to_slices

    stack = _upload(torch.stack([volume_to_slices(torch.from_numpy(item.image.data)) for item in loaded]), device)
    masks = None
    if model.accepts_mask and all(item.mask is not None for item in loaded):
        masks = _upload(torch.stack([volume_to_slices(torch.from_numpy(item.mask)) for item in loaded]), device)
    check_inference_memory(model, tuple(stack.shape), device)  # one line when even one box per call cannot fit
    with torch.inference_mode():
        x_hat, score = model.score_volumes(stack, generator, mask=masks)
        # One device-to-host copy of the group's results, not one per subject: (V, S, C + 1, H, W),
        # the C channels of the reconstruction (written 4D when C > 1), then the one score map.
        both = torch.cat([x_hat.float(), score.float()], dim=2).cpu()
    channels = x_hat.shape[2]
    recs = [slices_to_volume(r[:, :channels]).numpy() for r in both]
    scores = [slices_to_volume(s[:, channels:]).numpy() for s in both]
    return recs, scores


def _reusable(
    run: Path, split: str, rows: pd.DataFrame, record: dict[str, Any], force: bool
) -> tuple[set[str], dict[str, dict[str, str | None]]]:
    """Subjects whose maps were made from the same scan, mask, checkpoint and settings (kept), and
    the input digests of the others. Their old maps are removed first: a subject whose scan changed
    and is now refused must not leave its old maps for `evaluate` to score."""
    folder = RunFolder(run)
    done: set[str] = set()
    inputs: dict[str, dict[str, str | None]] = {}
    for row in rows.itertuples(index=False):
        subject = str(row.subject_id)
        try:
            digests = input_digests(row.image, getattr(row, "mask", None))
        except InputError:
            folder.remove_recon(split, subject)  # unreadable now: reported when its group is read
            continue
        if not force and recon_mismatch(run, split, subject, digests, **record) is None:
            done.add(subject)
            continue
        folder.remove_recon(split, subject)
        inputs[subject] = digests
    return done, inputs


def _write_recorded(
    run: Path,
    split: str,
    subject: str,
    rec: np.ndarray,
    score: np.ndarray,
    affine: np.ndarray,
    inputs: dict[str, str | None] | None,
    row: Any,
    record: dict[str, Any],
) -> None:
    """Both maps, then the record of what made them (digests taken before the scan was read)."""
    rec_path, score_path = RunFolder(run).recon_files(split, subject)
    _write_pair(rec_path, score_path, rec, score, affine)
    if inputs is None:
        inputs = input_digests(row.image, getattr(row, "mask", None))
    write_recon_record(run, split, subject, inputs=inputs, **record)


def _write_pair(rec_path: Path, score_path: Path, rec: np.ndarray, score: np.ndarray, affine: np.ndarray) -> None:
    # The score is written last: a subject counts as done only when both files exist.
    write_nifti(rec_path, rec, affine)
    write_nifti(score_path, score, affine)
