"""The bundle's model card (``MODEL_CARD.md``) and evaluation record, built from what a run folder holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def evaluation_records(run: Path) -> list[dict[str, Any]]:
    """Every evaluated split's ``summary.json`` of the run: metrics with the protocol they were measured by."""
    from mriad.contracts.run_folder import RunFolder

    folder = RunFolder(run)
    records = []
    for split in folder.evaluated_splits():
        try:
            summary = json.loads(folder.summary(split).read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(summary, dict):
            continue
        keep = (
            "split",
            "protocol",
            "val_split",
            "n_subjects",
            "threshold",
            "threshold_search",
            "threshold_val_dice",
            "metrics",
            "pooled_auprc",
            "fpr_thresholds",
            "settings",
            "versions",
        )
        records.append({key: summary.get(key) for key in keep})
    return records


def training_data(run: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The manifest the run trained on and its subject counts per split of the run's fold."""
    from mriad.contracts.manifest import available_splits, read_manifest, select_split
    from mriad.contracts.run_folder import resolve_manifest
    from mriad.infra.errors import MriadError

    manifest = resolve_manifest(run, config, None)
    record: dict[str, Any] = {"manifest": str(manifest), "dataset": config.get("dataset"), "fold": config.get("fold")}
    try:
        frame = read_manifest(manifest)
    except (MriadError, OSError):
        record["counts"] = None
        record["note"] = "the manifest was not readable at export time"
        return record
    fold = int(config.get("fold") or 0)
    record["counts"] = {name: len(select_split(frame, name, fold)) for name in available_splits(frame)}
    return record


def model_card(
    *,
    model: str,
    paper: str,
    summary: str,
    config: dict[str, Any],
    run_config: dict[str, Any],
    data: dict[str, Any],
    evaluations: list[dict[str, Any]],
    thresholds: dict[str, Any],
    preprocessing: dict[str, Any] | None,
    checksums: dict[str, dict[str, Any]],
    versions: dict[str, str],
) -> str:
    """Markdown: what the model is, what it was trained and evaluated on, how, and every member's SHA-256."""
    lines = [f"# Model card: {model}", "", summary or "", "", f"Paper: {paper or 'n/a'}", ""]
    lines += [
        "## Training",
        "",
        f"- data: `{data.get('manifest')}` (data set {data.get('dataset')}, fold {data.get('fold')})",
    ]
    for name, count in (data.get("counts") or {}).items():
        lines.append(f"  - {name}: {count} subjects")
    lines += [
        f"- created {run_config.get('created')}, seed {run_config.get('seed')}, "
        f"git commit {run_config.get('git_commit')}",
        "",
    ]
    lines += [
        "### Hyperparameters",
        "",
        "```json",
        json.dumps(config, indent=1, sort_keys=True, default=list),
        "```",
        "",
    ]
    lines += ["## Preprocessing", ""]
    if preprocessing:
        lines += [f"- {key}: {value}" for key, value in preprocessing.items()]
    else:
        lines.append("- not recorded with the training data (`mriad detect` uses preprocess's defaults)")
    lines += ["", "## Evaluation", ""]
    if not evaluations:
        lines.append("Not evaluated before export.")
    for record in evaluations:
        protocol_name = record.get("protocol") or (record.get("settings") or {}).get("protocol") or "brain"
        lines.append(f"### {record.get('split')} ({record.get('n_subjects')} subjects, {protocol_name} protocol)")
        for name, stats in (record.get("metrics") or {}).items():
            lines.append(f"- {name}: {stats.get('mean'):.4f} ± {stats.get('std'):.4f} (n={stats.get('n')})")
        if record.get("threshold") is not None:
            lines.append(
                f"- threshold {record['threshold']:.6g} ({record.get('threshold_search')} search on "
                f"{record.get('val_split')})"
            )
        protocol = record.get("settings") or {}
        if protocol:
            lines.append("- protocol: " + "; ".join(f"{k} {v}" for k, v in protocol.items() if k != "data"))
        lines.append("")
    lines += ["## Calibrated thresholds", ""]
    lines += [
        f"- {split}: {entry.get('threshold'):.6g} ({entry.get('search')} search, {entry.get('protocol')} protocol)"
        for split, entry in thresholds.items()
    ]
    if not thresholds:
        lines.append("- none: `mriad detect` needs --threshold")
    lines += ["", "## Versions", ""] + [f"- {k} {v}" for k, v in versions.items()]
    lines += ["", "## Members (SHA-256)", "", "| member | bytes | sha256 |", "|---|---:|---|"]
    lines += [f"| {name} | {entry['size']} | `{entry['sha256']}` |" for name, entry in checksums.items()]
    lines += ["", "The card itself is listed in bundle.json.", ""]
    return "\n".join(lines)
