"""``evaluate --merge``: the split's files from its shards' partial results, as one run writes them.

The merge checks before it writes anything: every shard of the cut is there, each was scored with
the merge's options and the current calibration, on maps whose records have not changed since, and
the calibration still matches the validation and healthy splits' maps. Then it orders the shards'
rows as the split's subjects are ordered, adds their pooled counts, and writes per_subject.csv,
failures.csv, figures and summary.json through the same functions as :func:`mriad.evaluate.evaluate`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mriad.contracts.run_folder import RunFolder, read_run_config
from mriad.evaluate import measures
from mriad.evaluate import run as R
from mriad.evaluate.partials import SLICE_ARRAYS as SLICES
from mriad.evaluate.partials import Partial, read_partial
from mriad.evaluate.pools import CountedPool
from mriad.evaluate.sharded import Calibration, _calibration_key, _options, _read_calibration, _record_digest
from mriad.evaluate.spec import EvalSpec
from mriad.evaluate.summary import EvalSummary, HealthyReference, Stats
from mriad.evaluate.threshold import ThresholdResult
from mriad.evaluate.volumes import load_split, require_recon
from mriad.infra.errors import MriadError
from mriad.infra.io import remove_temporaries
from mriad.infra.locking import merge_lock
from mriad.infra.shards import shard_items


def merge_shards(
    run: Path, spec: EvalSpec | str, /, *, device: str | torch.device = "cpu", **settings: Any
) -> dict[str, Any]:
    """Write the split's per_subject.csv, summary.json and figures from its shards; return the summary.

    Run it once every shard has finished, with the shards' options (``figures`` may differ: the merge
    draws them). Refused, in one line and before anything is written: a missing shard, a shard scored
    with other options or another calibration, maps changed since a shard scored them.
    """
    spec = EvalSpec.of(spec, **settings)
    run = Path(run).resolve()
    folder = RunFolder(run)
    read_run_config(run)
    split = spec.split
    with merge_lock(folder.eval_dir(split), f"evaluate {split} merge"):
        remove_temporaries(folder.figures(split))  # a killed merge's half-drawn figures
        remove_temporaries(folder.eval_shards(split))  # a killed shard's half-written result
        inputs = R._inputs(run, spec)
        found = _found_parts(folder, split)
        calibration = _current_calibration(inputs, spec)
        parts = _checked_parts(inputs, spec, calibration, found)
        return _merge(inputs, spec, calibration, parts, torch.device(device)).to_json()


def _current_calibration(inputs: R._Inputs, spec: EvalSpec) -> Calibration:
    path = inputs.run.eval_calibration(spec.split)
    found = _read_calibration(path)
    if found is None:
        raise MriadError(f"{path}: missing; score the shards first (`mriad evaluate --split {spec.split} --shard i/n`)")
    if found[0].get("key") != _calibration_key(inputs, spec):
        raise MriadError(
            f"{path}: made with other options, or the maps of {found[0].get('val_split') or 'its splits'} changed "
            "since; score the shards again with the merge's options (the first one calibrates again)"
        )
    return Calibration.from_json(*found)


def _found_parts(folder: RunFolder, split: str) -> dict[int, Path]:
    """The result of every shard of the cut on disk, by shard (refused when one is missing)."""
    found = folder.eval_partials(split)
    if not found:
        raise MriadError(
            f"{folder.eval_shards(split)}: no shard results; run `mriad evaluate --split {split} --shard i/n` "
            "for i = 0..n-1 first"
        )
    counts = sorted({count for _, count in found})
    if len(counts) > 1:
        raise MriadError(
            f"{folder.eval_shards(split)}: results of {' and '.join(map(str, counts))} shards; score one cut again"
        )
    count = counts[0]
    missing = [f"{i}/{count}" for i in range(count) if (i, count) not in found]
    if missing:
        raise MriadError(
            f"{folder.eval_shards(split)}: shard(s) {', '.join(missing)} missing; run `mriad evaluate --split {split} "
            f"--shard i/{count}` for each, then --merge again"
        )
    return {index: found[(index, count)] for index in range(count)}


def _checked_parts(
    inputs: R._Inputs, spec: EvalSpec, calibration: Calibration, found: dict[int, Path]
) -> list[Partial]:
    """Every shard's result, each checked against the merge's options, calibration and the maps on disk."""
    count, split = len(found), spec.split
    expected = {"options": _options(inputs, spec), "calibration_sha256": calibration.digest, "shards": count}
    subjects = [str(s) for s in inputs.rows["subject_id"]]
    parts = []
    for index, path in found.items():
        part = read_partial(path)
        _check_part(path, part, expected, shard_items(subjects, (index, count)), inputs, split)
        parts.append(part)
    return parts


def _check_part(
    path: Path, part: Partial, expected: dict[str, Any], subjects: list[str], inputs: R._Inputs, split: str
) -> None:
    index, count = part.meta.get("shard", ["?", "?"])
    again = f"score shard {index}/{count} again (`mriad evaluate --split {split} --shard {index}/{count}`)"
    key = part.meta.get("key") or {}
    theirs, ours = key.get("options") or {}, expected["options"]
    for name in ours:
        if theirs.get(name) != ours[name]:
            raise MriadError(
                f"{path}: scored with {name} {theirs.get(name)!r}, the merge has {ours[name]!r}; merge with the "
                f"shards' options or {again}"
            )
    if key.get("calibration_sha256") != expected["calibration_sha256"]:
        raise MriadError(f"{path}: scored with another calibration than {inputs.run.eval_calibration(split)}; {again}")
    if part.meta.get("subjects") != subjects:
        raise MriadError(
            f"{path}: scored other subjects than shard {index}/{count} of {inputs.manifest} has now; {again}"
        )
    for subject, digest in (part.meta.get("records") or {}).items():
        if _record_digest(inputs.run, split, subject) != digest:
            raise MriadError(f"{path}: the maps of {subject} changed after they were scored; {again}")


def _merge(
    inputs: R._Inputs, spec: EvalSpec, calibration: Calibration, parts: list[Partial], device: torch.device
) -> EvalSummary:
    """The shards' rows in the split's order, their pooled numbers, the summary and files of one run."""
    protocol = spec.rules
    tagged = sorted((int(at), str(s), str(r)) for part in parts for s, r, at in part.meta["failures"])
    failures = [(subject, reason) for _, subject, reason in tagged]
    scored = [part for part in parts if part.table is not None]
    if not scored:
        require_recon(inputs.run.root, spec.split, inputs.rows)  # no maps at all: the same refusal as one run
        raise MriadError(f"{spec.split}: no subject could be read ({failures[0][1] if failures else 'empty split'})")
    order = np.argsort(np.concatenate([part.positions for part in scored]), kind="stable")
    table = pd.concat([part.table for part in scored], ignore_index=True).iloc[order].reset_index(drop=True)
    any_lesion = bool((table["label"].to_numpy(dtype=int) == 1).any())
    chosen, val_name, val_failures = calibration.threshold, calibration.val_split, calibration.val_failures
    if chosen is not None and chosen.method != "fixed" and spec.val_split is None and not any_lesion:
        # One run searches no threshold when none of the split's lesion subjects could be read.
        chosen, val_name, val_failures = None, None, []
        table["predicted_voxels"] = pd.array([pd.NA] * len(table), dtype="Int64")
    failures += val_failures
    split_level = _split_level(scored, order, any_lesion, device)
    healthy = _healthy(calibration, scored, order, table, any_lesion)
    failures += calibration.healthy_failures
    summary = R._summarise(
        inputs, spec, _devices(scored), _scored(scored, table, protocol.clamp), chosen, val_name, table,
        split_level, healthy, failures,
    )  # fmt: skip

    def examples(path: Path) -> None:
        _examples(inputs, spec, table, chosen, device, path)

    R._write(inputs.run, spec, summary, table, split_level, failures, examples)
    return summary


def _split_level(parts: list[Partial], order: np.ndarray, any_lesion: bool, device: torch.device) -> R._SplitLevel:
    """Pooled AUPRC and oracle Dice, the split's own FPR thresholds and slice AUROC, from the shards' counts."""
    curve = oracle = slice_auroc = None
    if any_lesion:
        pool = CountedPool.merge([p.lesion for p in parts if p.lesion is not None], device)
        curve = pool.curve(R.PR_CURVE_POINTS)
        oracle = pool.oracle_dice()
        # (B, Z) in the split's order: the slices pooled in the order one run pools them.
        slices = [torch.from_numpy(np.concatenate([p.slices[n] for p in parts])[order]).to(device) for n in SLICES]
        slice_auroc = measures.slice_auroc_of(*slices)
    healthy = [p.healthy for p in parts if p.healthy is not None]
    fpr = CountedPool.merge(healthy, device).fpr_thresholds(R.FPR_RATES) if healthy else None
    return R._SplitLevel(curve, fpr, oracle, slice_auroc)


def _healthy(
    calibration: Calibration, parts: list[Partial], order: np.ndarray, table: pd.DataFrame, any_lesion: bool
) -> HealthyReference:
    """The calibration's healthy reference with the split's Dice at its FPR thresholds (or, when the
    healthy split is the evaluated one, its thresholds and l1 from the shards)."""
    known = calibration.healthy
    if known.split is None:
        return HealthyReference(split=None, note=known.note)
    if calibration.healthy_is_test:
        if any_lesion:
            raise MriadError(
                f"--healthy-split {known.split}: holds lesion subjects; choose a healthy split (e.g. ixi-val)"
            )
        pool = CountedPool.merge([p.healthy for p in parts if p.healthy is not None])
        return HealthyReference(
            split=known.split,
            n_subjects=len(table),
            l1=Stats.of(pd.Series(table["l1"].to_numpy())),
            fpr_thresholds=pool.fpr_thresholds(R.FPR_RATES),
        )
    reference = HealthyReference(
        split=known.split, n_subjects=known.n_subjects, l1=known.l1, fpr_thresholds=dict(known.fpr_thresholds)
    )
    if any_lesion:
        values = {}
        for rate in reference.fpr_thresholds:
            arrays = [p.dice_at_fpr.get(rate, np.full(len(p.positions), np.nan)) for p in parts]
            values[rate] = np.concatenate(arrays)[order]
        reference.dice_at_fpr = R._dice_stats(values)
    return reference


def _devices(parts: list[Partial]) -> str:
    """The device the shards scored on (all of them, when they differ)."""
    return ", ".join(sorted({str(p.meta["device"]) for p in parts}))


def _scored(parts: list[Partial], table: pd.DataFrame, clamp: bool) -> R._Scored:
    """The scored subjects, the shards' --clamp counts added up and their ignore-mask counts added up."""
    counts = {key: sum(int(p.meta["clamp"][key]) for p in parts) for key in ("voxels_outside", "volumes_recomputed")}
    not_residual = sum(int(p.meta["clamp"]["volumes_not_residual"]) for p in parts)
    report = measures.ClampReport(clamp, counts["voxels_outside"], counts["volumes_recomputed"], not_residual)
    recorded = [p.meta["ignore"] for p in parts if p.meta.get("ignore")]
    ignore: dict[str, Any] = dict(recorded[0]) if recorded else {}
    for name, value in ignore.items():
        if isinstance(value, int) and not isinstance(value, bool):  # counts add up; the sentence is one
            ignore[name] = sum(int(found.get(name, 0)) for found in recorded)
    return R._Scored([str(s) for s in table["subject_id"]], report, ignore)


def _examples(
    inputs: R._Inputs,
    spec: EvalSpec,
    table: pd.DataFrame,
    chosen: ThresholdResult | None,
    device: torch.device,
    path: Path,
) -> None:
    """The example figure of one run: its best, median and worst subjects, read and post-processed again."""
    _, picks = R._example_picks(table)
    if not picks:
        return
    wanted = {str(table.loc[row, "subject_id"]): row for row in picks.values()}
    rows = inputs.rows[inputs.rows["subject_id"].astype(str).isin(wanted)]
    volumes = load_split(inputs.run.root, spec.split, rows)
    scores, _ = measures.residual_scores(volumes, spec.rules.clamp)
    maps = measures.postprocess_split(volumes, device, protocol=spec.rules, scores=scores)
    at = {wanted[str(subject)]: b for b, subject in enumerate(volumes.rows["subject_id"])}
    R._examples(path, volumes, maps, table, chosen, spec.rules, at=at)
