"""`mriad evaluate`: metrics of a run's anomaly maps on a split (Dice, AUPRC, AUROC, l1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    shard: str = typer.Option(
        None,
        "--shard",
        help="i/n: score only subjects i, i+n, ... of SPLIT into eval/SPLIT/shards/i-of-n.npz (no summary "
        "yet). Shards run side by side (a Slurm array); the first calibrates the threshold once for all. "
        "Never reconstructs: run reconstruct (its shards) first; a subject without maps is a failure.",
    ),
    merge: bool = typer.Option(
        False,
        "--merge",
        help="After every shard has finished, with the shards' options: write per_subject.csv, summary.json "
        "and figures from their results, the files one unsharded evaluate writes. A missing shard, or one "
        "scored with other options, another threshold or on maps changed since, is refused.",
    ),
) -> None:
    """Post-process the anomaly maps (eroded brain mask, 3D median filter), choose the Dice-maximising
    threshold on the validation split, and write per-subject metrics, a summary and figures to
    the run's evaluation folder of SPLIT. Missing maps, and maps made from other scans or another
    checkpoint, are reconstructed first. `--protocol` decides over which voxels
    the numbers are counted (docs/evaluation.md defines every number).

    Example: `mriad evaluate --split brats-test` (the last run), `mriad evaluate --run runs/a --split ixi-test`.

    On a cluster (docs/cluster.md), once the maps exist: one array task per shard, then one merge with
    the same options:

        mriad evaluate --run runs/a --split brats-test --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT
        mriad evaluate --run runs/a --split brats-test --merge
    """
    from rich.table import Table

    from mriad.evaluate.run import evaluate, splits_to_reconstruct, summary_rows
    from mriad.evaluate.spec import EvalSpec
    from mriad.infra.console import console
    from mriad.infra.device import resolve_device
    from mriad.infra.workspace import latest_run

    if shard is not None and merge:
        raise typer.BadParameter("runs once the shards have finished, without --shard", param_hint="--merge")
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
    if shard is not None:
        _score_shard(run, spec, shard, device)
        return
    if merge:
        from mriad.evaluate.merge import merge_shards

        summary = merge_shards(run, spec, device=device)
    else:
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


def _score_shard(run: Path, spec: Any, shard: str, device: Any) -> None:
    """One shard's scoring: its partial result, and exit 1 when some of its subjects failed."""
    from mriad.evaluate.sharded import score_shard
    from mriad.infra.shards import parse_shard

    result = score_shard(run, spec, parse_shard(shard), device=device)
    info(f"next, once all {result.shard[1]} shards have finished: the same command with --merge instead of --shard")
    emit(result.summary())
    if result.failures:
        raise typer.Exit(1)  # listed in the shard's result; the merge lists them in failures.csv
