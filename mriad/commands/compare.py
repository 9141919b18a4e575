"""`mriad compare` (models against a baseline, paper-style table and tests) and `mriad report`."""

from __future__ import annotations

from pathlib import Path

import typer

from mriad.commands.common import emit, handle_errors
from mriad.infra.console import console, err_console, settings


def _say(text: str) -> None:
    """Print a line unwrapped and without markup: paths must stay copy-pasteable in logs."""
    if not settings.quiet:
        (err_console if settings.json else console).print(text, soft_wrap=True, markup=False, highlight=False)


@handle_errors
def compare_command(
    runs: list[str] = typer.Argument(
        ..., help="Run folders, glob patterns (quoted) or a folder of runs, e.g. `runs/*` or 'runs/pddpm*'."
    ),
    split: str = typer.Option(..., "--split", help="Evaluated split to compare on, e.g. brats-test."),
    baseline: Path = typer.Option(
        None, "--baseline", help="Run whose model the others are tested against (default: the first run given)."
    ),
    metric: str = typer.Option(
        None, "--metric", help="Comma-separated metrics (default: those of dice,auprc,auroc,l1 with values)."
    ),
    out: Path = typer.Option(None, "--out", help="Output folder (default: ./compare-SPLIT in the workspace)."),
    resamples: int = typer.Option(10_000, "--resamples", help="Permutation and bootstrap resamples (paper: 10,000)."),
    figures: bool = typer.Option(True, "--figures/--no-figures", help="Box plots and a reconstruction grid (PNG)."),
) -> None:
    """Compare evaluated runs: Table-1 style mean ± std over folds, paired permutation tests, CIs.

    Runs of one model on different folds form one row. Each model is tested against the baseline
    with a two-sided paired permutation test on per-subject values (averaged over folds), Holm-corrected
    over the models; 95% CIs by bootstrap. Seeded by the global `--seed`.
    Example: `mriad compare runs/* --split brats-test --baseline runs/ddpm-fold0`.
    """
    from mriad.compare import tables
    from mriad.compare.run import compare, method_note

    metrics = [m.strip() for m in metric.split(",")] if metric else None
    summary = compare(
        runs,
        split,
        baseline=baseline,
        metrics=metrics,
        out=out,
        resamples=resamples,
        seed=settings.seed,
        figures=figures,
    )
    if not settings.quiet and not settings.json:
        rows, names = summary["rows"], [group["name"] for group in summary["groups"]]
        header, body = tables.table_one(rows, names, summary["metrics"])
        title = f"{split}, {summary['protocol']} protocol: mean ± std over folds (best in bold)"
        console.print(tables.rich_table(title, header, body))
        stats_header, stats_body = tables.stats_table(rows, summary["metrics"])
        console.print(tables.rich_table(f"against {summary['baseline']}", stats_header, stats_body))
        console.print(
            method_note(split, summary["baseline"], resamples, summary["n_subjects"], summary["protocol"]),
            style="dim",
            markup=False,
        )
    _say(f"comparison written to {summary['out']}")
    for name, path in summary["files"].items():
        _say(f"  {name}: {path}")
    emit(summary)


@handle_errors
def report_command(
    run: Path = typer.Argument(None, help="Run folder (default: the most recent run)."),
    out: Path = typer.Option(None, "--out", help="HTML file to write (default: RUN/report.html)."),
) -> None:
    """Write one self-contained HTML page about a run (config, training curve, metrics, figures).

    Viewable offline: figures are embedded, nothing is loaded from elsewhere.
    Example: `mriad report runs/pddpm-fold0`.
    """
    from mriad.compare.run import report
    from mriad.infra.console import using_default
    from mriad.infra.workspace import latest_run

    if run is None:
        run = latest_run()
        using_default("RUN", run)
    path = report(run, out)
    _say(str(path))
    emit({"run": str(run), "report": str(path)})
