"""Group runs into models (and variants) over folds, and lay the results out like the paper's Table 1.

A *group* is what one row of the table shows: the runs of one model trained on the different
cross-validation folds. Two runs of the same model on the same fold must differ in something, so they
are told apart by, in this order: the ``label`` in their run config, the options that differ between
them, their folder name without the fold part, their folder name.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np
import pandas as pd

from mriad.compare.collect import RunEval
from mriad.contracts.run_folder import CONFIG
from mriad.infra.errors import MriadError


@dataclass(frozen=True)
class MetricInfo:
    title: str
    scale: float  # displayed value = stored value * scale
    unit: str
    higher_is_better: bool


# The paper shows Dice and AUPRC in %, and l1 in units of 1e-3.
METRICS: dict[str, MetricInfo] = {
    "dice": MetricInfo("Dice", 100.0, "%", True),
    "auprc": MetricInfo("AUPRC", 100.0, "%", True),
    "auroc": MetricInfo("AUROC", 100.0, "%", True),
    "oracle_dice": MetricInfo("oracle Dice", 100.0, "%", True),
    "l1": MetricInfo("l1", 1000.0, "1e-3", False),
}
NOT_METRICS = {"label", "lesion_voxels", "predicted_voxels", "fold", "protocol"}
DEFAULT_METRICS = ["dice", "auprc", "auroc", "l1"]
# Options that say where or how a run was made, not what was trained: never a variant's name.
_IGNORED_OPTIONS = {"fold", "seed", "out", "run", "name", "label", "device", "resume", "data", "manifest", "workers"}
_FOLD_TOKEN = re.compile(r"(?i)[-_.]?(?:fold|f)[-_]?\d+(?=$|[-_.])")


def metric_info(name: str) -> MetricInfo:
    lower_better = name in ("l1", "l2", "mse", "mae") or name.endswith("_loss")
    return METRICS.get(name, MetricInfo(name, 1.0, "", not lower_better))


def metric_header(name: str) -> str:
    info = metric_info(name)
    return f"{info.title} [{info.unit}]" if info.unit else info.title


@dataclass
class Group:
    """The runs shown in one table row: one model (variant), one run per fold."""

    name: str
    model: str
    runs: list[RunEval]

    @property
    def folds(self) -> list[int | None]:
        return [run.fold for run in self.runs]

    def folds_text(self) -> str:
        return ",".join("-" if fold is None else str(fold) for fold in self.folds)

    def budget_text(self) -> str:
        """Each run's optimisation budget, "steps x batch", and the step of the weights evaluated."""
        texts = list(dict.fromkeys(run_budget(run) for run in self.runs))
        return "; ".join(texts)

    def fold_means(self, metric: str) -> np.ndarray:
        """One value per run: its mean over subjects, as `mriad evaluate` reports it."""
        return np.array([_nanmean(run.per_subject[metric]) for run in self.runs], dtype=np.float64)

    def subject_values(self, metric: str, subjects: Sequence[str]) -> np.ndarray:
        """Per subject, the mean over this group's folds: the unit the paired tests work on."""
        table = pd.concat([run.per_subject[metric] for run in self.runs], axis=1).reindex(list(subjects))
        values = table.to_numpy(dtype=np.float64)
        counts = np.isfinite(values).sum(axis=1)
        sums = np.nansum(values, axis=1)
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def run_budget(run: RunEval) -> str:
    """``"300 x 32 (best: step 275)"``: the steps trained (at the last validation row of metrics.csv),
    the slices per step, and which step's weights were evaluated (best.pt, or a step-K checkpoint view).
    ``"-"`` for a run that was never trained (no metrics.csv)."""
    import csv

    from mriad.contracts.run_folder import RunFolder, step_of

    batch = run.options.get("batch_size", "?")
    view = step_of(str(run.config.get("checkpoint") or ""))
    if view is not None:
        return f"{view} x {batch} (step-{view} checkpoint)"
    path = RunFolder(run.path).metrics
    if not path.is_file():
        return "-"
    with open(path, newline="") as handle:
        logged = [row for row in csv.DictReader(handle) if row.get("step")]
    if not logged:
        return "-"
    steps = max(int(row["step"]) for row in logged)
    scored = [row for row in logged if row.get("val_loss")]
    if not scored:
        return f"{steps} x {batch} (last)"
    best = min(scored, key=lambda row: float(row["val_loss"]))  # first of equal losses, as train keeps it
    return f"{steps} x {batch} (best: step {best['step']})"


def _nanmean(values: pd.Series) -> float:
    array = values.to_numpy(dtype=np.float64)
    return float(np.nanmean(array)) if np.isfinite(array).any() else float("nan")


def _flatten(options: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in options.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, prefix=f"{name}."))
        elif key not in _IGNORED_OPTIONS:
            flat[name] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return flat


def _options_namer(model: str, runs: Sequence[RunEval]) -> Callable[[RunEval], str]:
    flats = [_flatten(run.options) for run in runs]
    keys = sorted({key for flat in flats for key in flat})
    differing = [key for key in keys if len({flat.get(key) for flat in flats}) > 1]

    def name(run: RunEval) -> str:
        flat = _flatten(run.options)
        parts = [f"{key}={flat.get(key, '-')}" for key in differing]
        return f"{model} ({', '.join(parts)})" if parts else model

    return name


def strip_fold(name: str) -> str:
    """``pddpm_p60-fold3`` -> ``pddpm_p60``: the folder name without its fold part."""
    stripped = _FOLD_TOKEN.sub("", name).strip("-_.")
    return stripped or name


def _first_unique(runs: Sequence[RunEval], namers: Sequence[Callable[[RunEval], str]]) -> list[str] | None:
    for namer in namers:
        names = [namer(run) for run in runs]
        keys = list(zip(names, (run.fold for run in runs), strict=True))
        if len(set(keys)) == len(keys):
            return names
    return None


def group_runs(runs: Sequence[RunEval]) -> list[Group]:
    """Group runs into table rows in order of first appearance (see the module docstring)."""
    by_model: dict[str, list[RunEval]] = {}
    for run in runs:
        by_model.setdefault(run.model, []).append(run)
    named: list[tuple[str, RunEval]] = []
    for model, model_runs in by_model.items():
        plain = [run for run in model_runs if not run.label]
        labelled = [run for run in model_runs if run.label]
        plain_namers: list[Callable[[RunEval], str]] = [
            lambda r, m=model: m,  # type: ignore[misc]  # default argument binds this loop's model
            _options_namer(model, plain),
            lambda r: strip_fold(r.name),
        ]
        label_namers: list[Callable[[RunEval], str]] = [
            lambda r: str(r.label),
            lambda r: f"{r.label} ({strip_fold(r.name)})",
        ]
        for subset, namers in (
            (plain, [*plain_namers, lambda r: r.name]),
            (labelled, [*label_namers, lambda r: f"{r.label} ({r.name})"]),
        ):
            if not subset:
                continue
            names = _first_unique(subset, namers)
            if names is None:
                _refuse_duplicates(subset)
            named.extend(zip(names, subset, strict=True))
    groups: dict[tuple[str, str], Group] = {}
    for name, run in sorted(named, key=lambda item: runs.index(item[1])):
        groups.setdefault((run.model, name), Group(name=name, model=run.model, runs=[])).runs.append(run)
    models_per_name: dict[str, set[str]] = {}
    for model, name in groups:
        models_per_name.setdefault(name, set()).add(model)
    for (model, name), group in groups.items():
        if len(models_per_name[name]) > 1:
            group.name = f"{name} ({model})"
        group.runs.sort(key=lambda run: (run.fold is None, run.fold if run.fold is not None else 0))
    return list(groups.values())


def _refuse_duplicates(runs: Sequence[RunEval]) -> NoReturn:
    seen: dict[tuple[str, int | None], RunEval] = {}
    for run in runs:
        key = (run.name, run.fold)
        if key in seen:
            raise MriadError(
                f"runs {seen[key].path} and {run.path} (model {run.model}, fold {run.fold}) cannot be told "
                f'apart: give them different folder names or a "label" in {CONFIG}'
            )
        seen[key] = run
    raise MriadError("runs of model " + runs[0].model + " cannot be told apart")  # pragma: no cover


# ---------------------------------------------------------------------------------------------------
# formatting


def fmt_value(metric: str, value: float) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value * metric_info(metric).scale:.2f}"


def fmt_mean_std(metric: str, mean: float, std: float) -> str:
    if std is None or not math.isfinite(std):
        return fmt_value(metric, mean)
    return f"{fmt_value(metric, mean)} ± {fmt_value(metric, std)}"


def fmt_p(p: float) -> str:
    if p is None or not math.isfinite(p):
        return "-"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def best_groups(rows: Sequence[dict[str, Any]], metric: str) -> set[str]:
    """Groups whose fold-mean is the best at display precision (ties are all best)."""
    candidates = [(row["group"], fmt_value(metric, row["mean"])) for row in rows if row["metric"] == metric]
    values = [(group, float(text)) for group, text in candidates if text != "-"]
    if not values:
        return set()
    pick = max if metric_info(metric).higher_is_better else min
    best = pick(value for _, value in values)
    return {group for group, value in values if value == best}


def _cells(
    rows: Sequence[dict[str, Any]], groups: Sequence[str], metrics: Sequence[str]
) -> dict[tuple[str, str], dict]:
    return {(row["group"], row["metric"]): row for row in rows if row["group"] in groups and row["metric"] in metrics}


Cell = str | tuple[str, bool]  # text, or (text, bold)
SIGNIFICANT = " †"  # appended when p (Holm) < 0.05 against the baseline


def table_one(
    rows: Sequence[dict[str, Any]], groups: Sequence[str], metrics: Sequence[str]
) -> tuple[list[str], list[list[Cell]]]:
    """Header and body of the Table-1 layout: model, folds, then "mean ± std" over folds per metric.

    The best value of each column is marked bold; a dagger marks a significant difference from the
    baseline after Holm correction.
    """
    cells = _cells(rows, groups, metrics)
    best = {metric: best_groups(rows, metric) for metric in metrics}
    header = ["Model", "Folds", "Budget (steps x batch)"] + [metric_header(metric) for metric in metrics]
    body: list[list[Cell]] = []
    for group in groups:
        first = next(row for row in rows if row["group"] == group)
        line: list[Cell] = [group + (" (baseline)" if first["is_baseline"] else ""), first["folds"]]
        line.append(str(first.get("budget") or "-"))
        for metric in metrics:
            row = cells.get((group, metric))
            if row is None:
                line.append("-")
                continue
            text = fmt_mean_std(metric, row["mean"], row["std"])
            p_holm = row.get("p_holm", float("nan"))
            if p_holm is not None and math.isfinite(p_holm) and p_holm < 0.05:
                text += SIGNIFICANT
            line.append((text, group in best[metric]))
        body.append(line)
    return header, body


def stats_table(rows: Sequence[dict[str, Any]], metrics: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Header and body of the statistics table: each model against the baseline, per metric."""
    header = ["Model", "Metric", "Mean (95% CI)", "Δ vs baseline (95% CI)", "p", "p (Holm)", "Subjects"]
    body = []
    for metric in metrics:
        for row in rows:
            if row["metric"] != metric:
                continue
            unit = metric_info(metric).unit
            mean = (
                f"{fmt_value(metric, row['subject_mean'])} ({fmt_value(metric, row['ci_low'])}, "
                f"{fmt_value(metric, row['ci_high'])})"
            )
            if row["is_baseline"]:
                diff, p, p_holm = "baseline", "", ""
            else:
                diff = (
                    f"{_signed(metric, row['diff_mean'])} ({_signed(metric, row['diff_ci_low'])}, "
                    f"{_signed(metric, row['diff_ci_high'])})"
                )
                p, p_holm = fmt_p(row["p_value"]), fmt_p(row["p_holm"])
            body.append(
                [
                    row["group"],
                    f"{metric_info(metric).title}" + (f" [{unit}]" if unit else ""),
                    mean,
                    diff,
                    p,
                    p_holm,
                    str(row["n_subjects"]),
                ]
            )
    return header, body


def _signed(metric: str, value: float) -> str:
    text = fmt_value(metric, value)
    return text if text == "-" or text.startswith("-") else "+" + text


def _split_cell(cell: Cell) -> tuple[str, bool]:
    return (cell, False) if isinstance(cell, str) else (str(cell[0]), bool(cell[1]))


def markdown(header: Sequence[str], body: Sequence[Sequence[Cell]]) -> str:
    """A GitHub/pandoc pipe table; bold as ``**...**``."""

    def render(cell: Cell) -> str:
        text, bold = _split_cell(cell)
        text = text.replace("|", "\\|")
        return f"**{text}**" if bold and text else text

    lines = ["| " + " | ".join(render(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(render(c) for c in line) + " |" for line in body]
    return "\n".join(lines)


def rich_table(title: str, header: Sequence[str], body: Sequence[Sequence[Cell]]) -> Any:
    """A rich table; cells are Text objects so names with brackets are never read as markup."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title)
    for index, column in enumerate(header):
        table.add_column(column, justify="left" if index == 0 else "right")
    for line in body:
        cells = [_split_cell(cell) for cell in line]
        table.add_row(*(Text(text, style="bold" if bold else "") for text, bold in cells))
    return table
