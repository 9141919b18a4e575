"""``evaluate --shard i/n`` and ``evaluate --merge``: one split scored by several processes at once.

A Slurm array scores the subjects of a split side by side in one run folder; the merge then writes
what one unsharded :func:`~mriad.evaluate.evaluate` writes (``per_subject.csv``, ``summary.json``,
figures). On the same kind of device with the same thread count the numbers are those of one run,
to the last bit (docs/cluster.md says where float sums can differ otherwise).

1. Calibration, once. The first shard to start searches the threshold on the validation split (and
   takes the FPR thresholds and l1 of the healthy split) under the split's calibration lock and
   writes ``eval/<split>/shards/calibration.json``; the shards that start meanwhile wait for it and
   read it. It is reused while the options, the manifest and the maps of those splits (their
   records) stay as they were; otherwise the next shard calibrates again.
2. Shard ``i`` of ``n`` scores subjects ``i, i+n, ...`` of the split
   (:func:`mriad.infra.shards.shard_items`) under its own lock and writes
   ``eval/<split>/shards/<i>-of-<n>.npz`` (:mod:`mriad.evaluate.partials`).
3. The merge, once every shard has finished and with the shards' options, refuses in one line a
   missing shard, a shard scored with other options or another calibration, or one whose maps have
   changed since, and writes the split's files as one run would.

Shards never reconstruct: a subject without maps is a failure, as in :func:`mriad.evaluate.evaluate`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from mriad.contracts.manifest import select_split
from mriad.contracts.recon_records import stale_maps
from mriad.contracts.run_folder import RunFolder, read_run_config
from mriad.evaluate import measures
from mriad.evaluate import run as R
from mriad.evaluate.partials import PARTIAL_VERSION, Partial, write_partial
from mriad.evaluate.pools import CountedPool
from mriad.evaluate.spec import EvalSpec
from mriad.evaluate.summary import HealthyReference, Stats, nan_to_none
from mriad.evaluate.threshold import ThresholdResult
from mriad.evaluate.volumes import SplitVolumes, load_split
from mriad.infra.console import info, warn
from mriad.infra.digests import file_sha256
from mriad.infra.errors import MriadError
from mriad.infra.io import atomic_write_bytes
from mriad.infra.locking import shard_lock, short_lock
from mriad.infra.shards import shard_items

CALIBRATION_VERSION = 1
CALIBRATION_WAIT = 6 * 3600.0  # seconds a shard waits while another shard calibrates


@dataclass
class Calibration:
    """What every shard of a split scores with. ``healthy_is_test``: the healthy split is the evaluated
    split itself, so its FPR thresholds and l1 come from the shards, at the merge."""

    threshold: ThresholdResult | None
    val_split: str | None
    healthy: HealthyReference
    healthy_is_test: bool
    val_failures: list[tuple[str, str]]
    healthy_failures: list[tuple[str, str]]
    digest: str = ""

    def to_json(self, key: dict[str, Any]) -> dict[str, Any]:
        chosen = self.threshold
        return {
            "version": CALIBRATION_VERSION,
            "key": key,
            "threshold": None
            if chosen is None
            else {"value": chosen.threshold, "val_dice": nan_to_none(chosen.dice), "search": chosen.method},
            "val_split": self.val_split,
            "healthy": self.healthy.to_json(),
            "healthy_is_test": self.healthy_is_test,
            "val_failures": [list(f) for f in self.val_failures],
            "healthy_failures": [list(f) for f in self.healthy_failures],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], digest: str) -> Calibration:
        found = data.get("threshold")
        chosen = None
        if found is not None:
            dice = found["val_dice"]
            chosen = ThresholdResult(float(found["value"]), float("nan") if dice is None else dice, found["search"])
        healthy = data["healthy"]
        l1 = healthy.get("l1")
        reference = HealthyReference(
            split=healthy.get("split"),
            note=healthy.get("note"),
            n_subjects=int(healthy.get("n_subjects", 0)),
            l1=None if l1 is None else Stats(float(l1["mean"]), float(l1["std"]), int(l1["n"])),
            fpr_thresholds={rate: float(t) for rate, t in (healthy.get("fpr_thresholds") or {}).items()},
        )
        return cls(
            chosen,
            data.get("val_split"),
            reference,
            bool(data.get("healthy_is_test")),
            [(str(s), str(r)) for s, r in data.get("val_failures", [])],
            [(str(s), str(r)) for s, r in data.get("healthy_failures", [])],
            digest,
        )


def _options(inputs: R._Inputs, spec: EvalSpec) -> dict[str, Any]:
    """The settings that change the numbers (figures do not: the merge draws them)."""
    rules = spec.rules
    return {
        "split": spec.split,
        "manifest": str(inputs.manifest),
        "manifest_sha256": file_sha256(inputs.manifest),
        "fold": inputs.fold,
        "protocol": rules.name,
        "clamp": rules.clamp,
        "threshold": spec.threshold,
        "threshold_search": spec.threshold_search,
        "val_split": spec.val_split,
        "healthy_split": spec.healthy_split,
    }


def _record_digest(folder: RunFolder, split: str, subject: str) -> str | None:
    record = folder.recon_record(split, subject)
    return file_sha256(record) if record.is_file() else None


def _map_state(inputs: R._Inputs, split: str) -> dict[str, str | None]:
    """Per subject of ``split``: the digest of its maps' record, None when its maps are missing or stale."""
    state: dict[str, str | None] = {}
    for _, row in select_split(inputs.frame, split, inputs.fold).iterrows():
        subject = str(row["subject_id"])
        fresh = stale_maps(inputs.run.root, split, subject, row["image"], row.get("mask")) is None
        state[subject] = _record_digest(inputs.run, split, subject) if fresh else None
    return state


def _calibration_key(inputs: R._Inputs, spec: EvalSpec) -> dict[str, Any]:
    """What a calibration was made from: the options, the splits it used and the state of their maps."""
    val_name = R._val_split_name(spec, inputs.rows)
    healthy_name, note = R._healthy_split_name(inputs, spec)
    maps = {
        name: _map_state(inputs, name)
        for name in dict.fromkeys((val_name, healthy_name))
        if name not in (None, spec.split)
    }
    return {
        "options": _options(inputs, spec),
        "val_split": val_name,
        "healthy_split": healthy_name,
        "note": note,
        "maps": maps,
    }


def _read_calibration(path: Path) -> tuple[dict[str, Any], str] | None:
    try:
        payload = path.read_bytes()
        data = json.loads(payload)
    except (OSError, ValueError):
        return None
    ok = isinstance(data, dict) and data.get("version") == CALIBRATION_VERSION
    return (data, hashlib.sha256(payload).hexdigest()) if ok else None


def calibrate(inputs: R._Inputs, spec: EvalSpec, device: torch.device) -> Calibration:
    """The split's calibration: made by the first shard under the calibration lock, read by the others."""
    folder, split = inputs.run, spec.split
    path = folder.eval_calibration(split)
    with short_lock(folder.eval_dir(split), "calibration", f"evaluate {split}: calibrating", wait=CALIBRATION_WAIT):
        key = _calibration_key(inputs, spec)
        found = _read_calibration(path)
        if found is not None and found[0].get("key") == key:
            info(f"{path}: threshold calibrated already, reused")
            return Calibration.from_json(*found)
        calibration = _calibrate(inputs, spec, key, device)
        payload = (json.dumps(calibration.to_json(key), indent=2) + "\n").encode("utf-8")
        atomic_write_bytes(path, payload)
        calibration.digest = hashlib.sha256(payload).hexdigest()
        return calibration


def _calibrate(inputs: R._Inputs, spec: EvalSpec, key: dict[str, Any], device: torch.device) -> Calibration:
    """The threshold step and the healthy split's numbers of :func:`mriad.evaluate.evaluate`, without the test split."""
    protocol = spec.rules
    val_failures: list[tuple[str, str]] = []
    healthy_failures: list[tuple[str, str]] = []
    chosen, val_name = None, None
    if spec.threshold is not None:
        chosen = ThresholdResult(float(spec.threshold), float("nan"), "fixed")
    elif key["val_split"] is not None:
        val_name = key["val_split"]
        rows = select_split(inputs.frame, val_name, inputs.fold)
        # The evaluated split as its own validation split: its failures are the shards' to list.
        val = R._load_maps(inputs, val_name, rows, protocol, device, val_failures if val_name != spec.split else [])
        chosen = measures.choose_threshold(val.volumes, val.maps, spec.threshold_search, protocol=protocol)
        info(f"threshold {chosen.threshold:.6g} ({chosen.method}) calibrated on {val_name}")
    name = key["healthy_split"]
    if name is None:
        healthy = HealthyReference(split=None, note=key["note"])
    elif name == spec.split:
        healthy = HealthyReference(split=name)
    else:
        rows = select_split(inputs.frame, name, inputs.fold)
        healthy = R._healthy_reference(name, R._load_maps(inputs, name, rows, protocol, device, healthy_failures))
    return Calibration(chosen, val_name, healthy, name == spec.split, val_failures, healthy_failures)


@dataclass
class ShardResult:
    """What one shard did: its result file, how many of its subjects were scored, which failed."""

    partial: Path
    shard: tuple[int, int]
    subjects: int
    scored: int
    failures: list[tuple[str, str]]

    def summary(self) -> dict[str, Any]:
        return {
            "partial": str(self.partial),
            "shard": f"{self.shard[0]}/{self.shard[1]}",
            "subjects": self.subjects,
            "scored": self.scored,
            "failed": len(self.failures),
        }


def score_shard(
    run: Path, spec: EvalSpec | str, shard: tuple[int, int], /, *, device: str | torch.device = "cpu", **settings: Any
) -> ShardResult:
    """Score shard ``(i, n)`` of the split's subjects; write its partial result for :func:`merge_shards`.

    Shards of one split run side by side (each holds its own lock); the first calibrates the
    threshold and the others reuse it. The maps must exist (`mriad reconstruct`, or its shards): a
    subject without them is a failure of its shard. Another cut's partial results are removed.
    """
    spec = EvalSpec.of(spec, **settings)
    run = Path(run).resolve()
    folder = RunFolder(run)
    read_run_config(run)
    index, count = shard
    split = spec.split
    with shard_lock(folder.eval_dir(split), index, count, f"evaluate {split} shard {index}/{count}"):
        inputs = R._inputs(run, spec)
        calibration = calibrate(inputs, spec, torch.device(device))
        positions = shard_items(list(range(len(inputs.rows))), shard)
        partial = _score(inputs, spec, positions, calibration, torch.device(device))
        partial.meta.update(shard=[index, count], key=_shard_key(inputs, spec, calibration, count))
        path = write_partial(folder.eval_partial(split, index, count), partial)
        for (_, other), stale in folder.eval_partials(split).items():
            if other != count:  # another cut of the split: never merged with this one
                stale.unlink(missing_ok=True)
    failures = [(str(s), str(r)) for s, r, _ in partial.meta["failures"]]
    for subject, reason in failures:
        warn(f"{subject}: {reason}")
    info(f"shard {index}/{count} of {split}: {len(partial.positions)} of {len(positions)} subject(s) scored -> {path}")
    return ShardResult(path, shard, len(positions), len(partial.positions), failures)


def _shard_key(inputs: R._Inputs, spec: EvalSpec, calibration: Calibration, count: int) -> dict[str, Any]:
    return {"options": _options(inputs, spec), "calibration_sha256": calibration.digest, "shards": count}


def _load(run: Path, split: str, rows: pd.DataFrame, failures: list[tuple[str, str]]) -> SplitVolumes | None:
    """The shard's readable volumes; None when none is (one run fails only when the whole split is)."""
    try:
        return load_split(run, split, rows, failures=failures)
    except MriadError:
        if len(failures) == len(rows):
            return None
        raise


def _score(
    inputs: R._Inputs, spec: EvalSpec, positions: list[int], calibration: Calibration, device: torch.device
) -> Partial:
    """Per-subject rows and what the pooled numbers need, for the subjects at ``positions`` of the split."""
    protocol = spec.rules
    rows = inputs.rows.iloc[positions]
    subjects = [str(s) for s in rows["subject_id"]]
    at = dict(zip(subjects, positions, strict=True))
    failures: list[tuple[str, str]] = []
    volumes = _load(inputs.run.root, spec.split, rows, failures)
    meta: dict[str, Any] = {
        "version": PARTIAL_VERSION,
        "split": spec.split,
        "subjects": subjects,
        "device": str(device),
        "failures": [[subject, reason, at[subject]] for subject, reason in failures],
        "records": {subject: _record_digest(inputs.run, spec.split, subject) for subject in subjects},
        "positions": [],
        "clamp": asdict(measures.ClampReport(protocol.clamp, 0, 0, 0)),
        "ignore": {},
    }
    if volumes is None:
        return Partial(meta)
    scores, clamp = measures.residual_scores(volumes, protocol.clamp)
    test = R._SplitMaps(volumes, measures.postprocess_split(volumes, device, protocol=protocol, scores=scores), clamp)
    threshold = None if calibration.threshold is None else calibration.threshold.threshold
    table = measures.subject_metrics(volumes, test.maps, threshold, protocol=protocol)
    lesion = volumes.labels == 1
    partial = Partial(meta, table)
    if lesion.any():
        partial.lesion = CountedPool.of(*measures.pooled(volumes, test.maps, lesion, protocol))
        if calibration.healthy.fpr_thresholds:
            partial.dice_at_fpr = R._dice_at_fpr(test, calibration.healthy.fpr_thresholds, protocol)
    if (~lesion).any():
        partial.healthy = CountedPool.of(measures.healthy_brain_voxels(volumes, test.maps))
    slices = measures.slice_scores(volumes, test.maps, protocol)
    partial.slices = {name: array.cpu().numpy() for name, array in zip(("scores", "positive", "brain"), slices)}
    meta.update(
        positions=[at[str(s)] for s in volumes.rows["subject_id"]],
        clamp=asdict(clamp),
        ignore=measures.ignore_settings(volumes),
    )
    return partial
