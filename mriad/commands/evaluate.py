"""`mriad evaluate`: metrics of a run's anomaly maps on a split (Dice, AUPRC, AUROC, l1)."""

from __future__ import annotations

from pathlib import Path

import typer

from mriad.commands.common import emit, handle_errors
from mriad.infra.console import info, settings, using_default


@handle_errors
def evaluate_command(
    split: str = typer.Option(..., "--split", help="Split to evaluate, e.g. brats-test, mslub-test, ixi-test."),
    run: Path = typer.Option(None, "--run", help="Run folder (default: the most recent run)."),
    val_split: str = typer.Option(
        None,
        "--val-split",
        help="Split whose pooled voxels choose the threshold (default: the same data set's val split).",
    ),
    data: Path = typer.Option(None, "--data", help="Manifest CSV (default: the one the run was trained with)."),
    fold: int = typer.Option(None, "--fold", help="Cross-validation fold (default: the run's fold)."),
    threshold: float = typer.Option(None, "--threshold", help="Use this threshold instead of searching one."),
    threshold_search: str = typer.Option(
        "exact", "--threshold-search", help="exact (all thresholds) or bisection (the reference's 10 steps)."
    ),
    figures: bool = typer.Option(True, "--figures/--no-figures", help="Write example and PR-curve figures."),
    protocol: str = typer.Option(
        "reference",
        "--protocol",
        help="reference: what the pDDPM reference code computes (whole-volume AUROC/AUPRC, `>`, components "
        "<= 7 voxels dropped under 26-connectivity, no clamp); brain: every number inside the brain mask "
        "(`>=`, < 7 voxels, 6-connectivity, clamp). See docs/evaluation.md.",
    ),
    clamp: bool = typer.Option(
        None,
        "--clamp/--no-clamp",
        help="Clip the reconstruction to [0, 1] before the residual (default: the protocol's; reference: no).",
    ),
    healthy_split: str = typer.Option(
        None,
        "--healthy-split",
        help="Healthy split (e.g. ixi-val) giving the 1/5/10 % FPR thresholds, their Dice and the healthy l1; "
        "reconstructed if needed (default: the training data set's val split, if reconstructed).",
    ),
    checkpoint: str = typer.Option(
        "best",
        "--checkpoint",
        help="best, or step-K (kept by train --checkpoint-every): its maps and numbers go to "
        "RUN/checkpoint-views/step-K/, never over the best checkpoint's.",
    ),
) -> None:
    """Post-process the anomaly maps (eroded brain mask, 3D median filter), choose the Dice-maximising
    threshold on the validation split, and write per-subject metrics, a summary and figures to
    the run's evaluation folder of SPLIT. Missing maps, and maps made from other scans or another
    checkpoint, are reconstructed first. `--protocol` decides over which voxels
    the numbers are counted (docs/evaluation.md defines every number).

    Example: `mriad evaluate --split brats-test` (the last run), `mriad evaluate --run runs/a --split ixi-test`.
    """
    from rich.table import Table

    from mriad.evaluate.run import evaluate, splits_to_reconstruct, summary_rows
    from mriad.evaluate.spec import EvalSpec
    from mriad.infra.console import console
    from mriad.infra.device import resolve_device
    from mriad.infra.workspace import latest_run

    if run is None:
        run = latest_run()
        using_default("--run", run)
    if checkpoint != "best":
        from mriad.contracts.run_folder import make_checkpoint_view

        run = make_checkpoint_view(run, checkpoint).root
        info(f"--checkpoint {checkpoint}: evaluating in {run}")
    device = resolve_device(settings.device)
    spec = EvalSpec(
        split=split,
        data=data,
        val_split=val_split,
        fold=fold,
        threshold=threshold,
        threshold_search=threshold_search,
        figures=figures,
        protocol=protocol,
        clamp=clamp,
        healthy_split=healthy_split,
    )
    manifest, missing = splits_to_reconstruct(run, spec)
    if missing:
        from mriad.contracts.run_folder import RunFolder
        from mriad.reconstruct import reconstruct

        for name in missing:  # evaluation only reads maps: the reconstruct stage makes them
            info(f"{RunFolder(run).recon_dir(name)}: maps missing, reconstructing them first")
            reconstruct(run, name, data=manifest, device=str(device))
    summary = evaluate(run, spec, device=device)
    table = Table(
        title=f"{summary.get('model') or 'run'} on {split} ({summary['n_subjects']} subjects, {protocol} protocol)"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in summary_rows(summary):
        table.add_row(name, value)
    if not settings.quiet and not settings.json:
        console.print(table)
    info(f"results: {Path(summary['outputs']['summary']).parent}")
    emit(summary)
    if summary.get("failures"):
        raise typer.Exit(1)  # some subjects were refused: listed in failures.csv and the summary
