"""The `compare` and `report` stages: the functions the CLI calls, usable from Python as well.

How several folds are tested: for each model, a subject's metric is first averaged over that model's
folds (all folds are evaluated on the same test subjects; only the healthy training data differs), and
the paired permutation test then runs on these per-subject means against the baseline's. This keeps
one pair per volume, as the paper's pooled per-volume comparison does, without counting a subject five
times (which would make the test anti-conservative). The table itself reports, like Table 1, the mean
± sample std (ddof=1) of the per-fold means. Holm's correction runs over the models within each metric
(each metric column of the table is one family of "model vs baseline" questions).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mriad.compare import statistics
from mriad.compare.collect import (
    RunEval,
    check_same_subjects,
    expand_runs,
    find_manifest,
    load_runs,
    val_splits,
)
from mriad.compare.tables import DEFAULT_METRICS, NOT_METRICS, Group, group_runs
from mriad.infra.console import using_default, warn
from mriad.infra.errors import MriadError
from mriad.infra.io import atomic_write_csv, atomic_write_text


def compare(
    runs: Sequence[str | Path],
    split: str,
    *,
    baseline: Path | None = None,
    metrics: list[str] | None = None,
    out: Path | None = None,
    resamples: int = 10_000,
    seed: int = 0,
    figures: bool = True,
) -> dict[str, Any]:
    """Compare evaluated runs on ``split``; writes compare.csv, compare.md, per_subject.csv, figures/.

    Returns a JSON-ready summary (also what ``--json`` prints): output files, groups, baseline, rows.
    """
    if resamples < 1:
        raise MriadError(f"--resamples must be at least 1, got {resamples}")
    paths = expand_runs(list(runs))
    if baseline is not None:
        base_paths = expand_runs([baseline])
        if len(base_paths) != 1:
            raise MriadError(f"--baseline must name one run, {baseline} holds {len(base_paths)}")
        base_path = base_paths[0]
        paths = [base_path] + [path for path in paths if path != base_path]
    elif paths:
        base_path = paths[0]
    if not paths:
        raise MriadError("no runs given: `mriad compare runs/*  --split SPLIT`")
    loaded = load_runs(paths, split)
    protocol = common_protocol(loaded, split)
    subjects = check_same_subjects(loaded, split)
    if len(val_splits(loaded)) > 1:
        warn(f"thresholds come from different validation splits ({', '.join(sorted(val_splits(loaded)))})")
    groups = group_runs(loaded)
    base_group = next(group for group in groups if any(run.path == base_path for run in group.runs))
    if len(groups) < 2:
        only = groups[0]
        raise MriadError(
            f"only one model ({only.name}, {len(only.runs)} run(s)) among the runs: compare needs at least two; "
            "add the runs to compare with, or --baseline RUN"
        )
    if baseline is None:
        using_default("--baseline", f"{base_group.name} (the first run given: {base_path})")
    _warn_fold_mismatch(groups)
    chosen = _choose_metrics(loaded, metrics, split)
    target = _output_dir(out, split, paths)  # refused before the (slower) resampling, not after
    rows = _rows(groups, base_group, subjects, chosen, resamples=resamples, seed=seed)
    files = _write_outputs(target, groups, base_group, subjects, chosen, rows, split, resamples, protocol)
    if figures:
        files.update(_write_figures(target, groups, base_group, subjects, chosen, split, loaded))
    return {
        "out": str(target),
        "split": split,
        "protocol": protocol,
        "baseline": base_group.name,
        "metrics": chosen,
        "resamples": resamples,
        "seed": seed,
        "n_subjects": len(subjects),
        "groups": [
            {"name": g.name, "model": g.model, "folds": g.folds, "runs": [str(r.path) for r in g.runs]} for g in groups
        ],
        "files": files,
        "rows": [{key: _json_number(value) for key, value in row.items()} for row in rows],
    }


def run_protocol(run: RunEval) -> str:
    """The evaluation protocol of a run's evaluation; evaluations older than protocols were ``brain``."""
    recorded = run.summary.get("protocol")
    if not recorded and "protocol" in run.per_subject.columns:
        values = run.per_subject["protocol"].dropna().astype(str).unique()
        recorded = values[0] if len(values) == 1 else None
    return str(recorded or "brain")


def common_protocol(runs: Sequence[RunEval], split: str) -> str:
    """Refuse runs evaluated under different protocols: their AUROC, AUPRC and Dice count other voxels."""
    protocols = {run.path: run_protocol(run) for run in runs}
    if len(set(protocols.values())) > 1:
        first = runs[0]
        other = next(run for run in runs if protocols[run.path] != protocols[first.path])
        raise MriadError(
            f"runs {first.path} ({protocols[first.path]} protocol) and {other.path} ({protocols[other.path]} "
            f"protocol) were evaluated under different protocols on {split}: evaluate them alike with "
            f"`mriad evaluate --protocol {protocols[first.path]} --run {other.path} --split {split}`"
        )
    return protocols[runs[0].path]


def _json_number(value: Any) -> Any:
    """NaN is not JSON (jq and most parsers reject it): missing numbers become null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _warn_fold_mismatch(groups: Sequence[Group]) -> None:
    reference = sorted(map(str, groups[0].folds))
    for group in groups[1:]:
        if sorted(map(str, group.folds)) != reference:
            warn(f"{group.name} has folds {group.folds_text()}, {groups[0].name} has {groups[0].folds_text()}")


def _available(run: RunEval, metric: str) -> bool:
    return metric in run.per_subject.columns and bool(np.isfinite(run.per_subject[metric].to_numpy(float)).any())


def _choose_metrics(runs: Sequence[RunEval], metrics: list[str] | None, split: str) -> list[str]:
    """Explicit metrics must exist in every run; the default keeps those that have values on this split."""
    if metrics:
        chosen = [m.strip() for m in metrics if m.strip()]
        for metric in chosen:
            if metric in NOT_METRICS:
                raise MriadError(f"{metric} is not a metric; choose from {', '.join(DEFAULT_METRICS)}")
            for run in runs:
                if metric not in run.per_subject.columns:
                    columns = [c for c in run.per_subject.columns if c not in NOT_METRICS and c != "dataset"]
                    raise MriadError(
                        f"{run.path}: the per_subject.csv of {split} has no metric {metric!r} "
                        f"(it has {', '.join(columns)})"
                    )
                if not _available(run, metric):
                    raise MriadError(
                        f"{run.path}: metric {metric} has no values on {split} "
                        "(Dice/AUPRC/AUROC apply to lesion data sets, l1 to healthy ones)"
                    )
        return list(dict.fromkeys(chosen))
    chosen = [m for m in DEFAULT_METRICS if all(_available(run, m) for run in runs)]
    if not chosen:
        raise MriadError(f"none of the metrics {', '.join(DEFAULT_METRICS)} has values in every run on {split}")
    using_default("--metric", ",".join(chosen))
    return chosen


def _rows(
    groups: Sequence[Group],
    base: Group,
    subjects: Sequence[str],
    metrics: Sequence[str],
    *,
    resamples: int,
    seed: int,
) -> list[dict[str, Any]]:
    """One row per (model, metric): fold statistics, subject-level CI and the test against the baseline."""
    rows: list[dict[str, Any]] = []
    for metric in metrics:
        base_values = base.subject_values(metric, subjects)
        metric_rows = []
        for group in groups:
            folds = group.fold_means(metric)
            values = group.subject_values(metric, subjects)
            low, high = statistics.bootstrap_ci(values, resamples=resamples, seed=seed)
            finite = folds[np.isfinite(folds)]
            row: dict[str, Any] = {
                "group": group.name,
                "model": group.model,
                "metric": metric,
                "folds": group.folds_text(),
                "budget": group.budget_text(),
                "n_runs": len(group.runs),
                "n_subjects": int(np.isfinite(values).sum()),
                "mean": float(finite.mean()) if finite.size else math.nan,
                "std": float(finite.std(ddof=1)) if finite.size > 1 else math.nan,
                "subject_mean": float(np.nanmean(values)) if np.isfinite(values).any() else math.nan,
                "ci_low": low,
                "ci_high": high,
                "baseline": base.name,
                "is_baseline": group is base,
            }
            if group is base:
                row.update(
                    n_pairs=row["n_subjects"],
                    diff_mean=0.0,
                    diff_ci_low=math.nan,
                    diff_ci_high=math.nan,
                    p_value=math.nan,
                )
            else:
                row.update(statistics.paired_difference(values, base_values, resamples=resamples, seed=seed))
            metric_rows.append(row)
        adjusted = statistics.holm([row["p_value"] for row in metric_rows])
        for row, p_holm in zip(metric_rows, adjusted, strict=True):
            row["p_holm"] = float(p_holm)
        rows.extend(metric_rows)
    return rows


def _output_dir(out: Path | None, split: str, runs: Sequence[Path]) -> Path:
    from mriad.infra.workspace import workspace_dir

    if out is None:
        out = workspace_dir() / f"compare-{split}"
        using_default("--out", out)
    target = Path(out).resolve()
    for run in runs:
        if target == run or run in target.parents:
            raise MriadError(f"--out {target} lies inside the run folder {run}: inputs are never written to")
    if target.exists() and not target.is_dir():
        raise MriadError(f"--out {target} exists and is not a folder")
    return target


def method_note(split: str, baseline: str, resamples: int, n_subjects: int, protocol: str | None = None) -> str:
    evaluated = f", evaluated under the {protocol} protocol (docs/evaluation.md)" if protocol else ""
    return (
        f"Split {split}, {n_subjects} subjects{evaluated}. Mean ± sample std over folds of each run's mean; best value "
        f"in bold. † marks p < 0.05 (Holm) against the baseline {baseline}: two-sided paired permutation "
        f"test on per-subject values averaged over folds ({resamples:,} resamples; exact when 2^n is "
        "smaller), Holm correction over the models within each metric. 95% CIs: percentile bootstrap of "
        f"the mean over subjects ({resamples:,} resamples)."
    )


def _write_outputs(
    target: Path,
    groups: Sequence[Group],
    base: Group,
    subjects: Sequence[str],
    metrics: Sequence[str],
    rows: list[dict[str, Any]],
    split: str,
    resamples: int,
    protocol: str,
) -> dict[str, str]:
    from mriad.compare import tables

    names = [group.name for group in groups]
    header, body = tables.table_one(rows, names, metrics)
    stats_header, stats_body = tables.stats_table(rows, metrics)
    text = "\n\n".join(
        [
            f"## {split} ({protocol} protocol): {len(groups)} models against {base.name}",
            tables.markdown(header, body),
            method_note(split, base.name, resamples, len(subjects), protocol),
            tables.markdown(stats_header, stats_body),
        ]
    )
    files = {
        "csv": str(atomic_write_csv(target / "compare.csv", pd.DataFrame(rows))),
        "markdown": str(atomic_write_text(target / "compare.md", text + "\n")),
    }
    wide = pd.DataFrame({"subject_id": list(subjects)})
    for group in groups:
        for metric in metrics:
            wide[f"{group.name}:{metric}"] = group.subject_values(metric, subjects)
    files["per_subject"] = str(atomic_write_csv(target / "per_subject.csv", wide))
    return files


def _write_figures(
    target: Path,
    groups: Sequence[Group],
    base: Group,
    subjects: Sequence[str],
    metrics: Sequence[str],
    split: str,
    runs: Sequence[RunEval],
) -> dict[str, str]:
    """Box plots always; the reconstruction grid when a manifest and every model's x̂ are found."""
    from mriad.compare import figures as fig

    files: dict[str, str] = {}
    for metric in metrics:
        path = target / "figures" / f"box_{metric}.png"
        files[f"box_{metric}"] = str(fig.save_png(fig.metric_boxplot(groups, subjects, metric, base.name), path))
    case = fig.pick_recon_case(groups, split, find_manifest(runs), subjects)
    if isinstance(case, str):
        warn(f"no reconstruction figure: {case}")
        return files
    try:
        figure = fig.load_recon_grid(case)
    except MriadError as exc:
        warn(f"no reconstruction figure: {exc}")
        return files
    path = target / "figures" / f"recon_{case.subject}.png"
    files["recon"] = str(fig.save_png(figure, path))
    return files


def report(run: Path, out: Path | None = None) -> Path:
    """Write one self-contained HTML page about ``run`` (default RUN/report.html) and return its path."""
    from mriad.compare.report import build_report

    run = Path(run)
    target = Path(out) if out is not None else run / "report.html"
    if target.exists() and target.is_dir():
        target = target / f"{run.resolve().name}-report.html"
    if target.exists() and not is_report(target):
        # --out names any file: a manifest or a scan must never be replaced by a web page.
        raise MriadError(f"{target}: exists and is not a report mriad wrote; choose another --out")
    if target.suffix.lower() not in (".html", ".htm"):
        raise MriadError(f"--out {target}: a report is an .html file")
    html = build_report(run)
    return atomic_write_text(target, html)


def is_report(path: Path) -> bool:
    """Whether ``path`` is an HTML report written by :func:`report` (so replacing it loses nothing)."""
    from mriad.compare.report import MARKER

    try:
        with open(path, "rb") as handle:
            head = handle.read(1 << 16)
    except OSError:
        return False
    return path.suffix.lower() in (".html", ".htm") and (MARKER.encode() in head or b'class="sub">mriad report' in head)
