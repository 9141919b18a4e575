"""`mriad reconstruct`: reconstructions and anomaly maps as NIfTI."""

from __future__ import annotations

from pathlib import Path

import typer

from mriad.commands.common import emit, handle_errors
from mriad.console import info, settings, using_default


@handle_errors
def reconstruct_command(
    split: str = typer.Option(..., "--split", help="Split to reconstruct, e.g. brats-test, ixi-test, mslub-val."),
    run: Path = typer.Option(None, "--run", help="Run folder (default: the most recent run)."),
    data: Path = typer.Option(None, "--data", help="Manifest (default: the one the run was trained with)."),
    fold: int = typer.Option(None, "--fold", help="Fold for ixi-train/ixi-val (default: the run's fold)."),
    shard: str = typer.Option(None, "--shard", help="i/n: only every n-th subject starting at i (for clusters)."),
    force: bool = typer.Option(False, "--force", help="Redo subjects that are already reconstructed."),
    volumes_per_batch: int = typer.Option(4, "--volumes-per-batch", help="Volumes sent to the model together."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best or last."),
) -> None:
    """Write `<run>/recon/<split>/<subject>_rec.nii.gz` and `_score.nii.gz` (|x - x_hat|).

    Maps lie on the preprocessed grid with its affine, so they open aligned with the input in ITK-SNAP.
    Finished subjects are skipped: rerun after an interruption to continue.

    Example: `mriad reconstruct --run runs/pddpm-fold0 --split brats-test`
    """
    from mriad.device import resolve_device
    from mriad.reconstruct import reconstruct
    from mriad.workspace import latest_run

    if run is None:
        run = latest_run()
        using_default("--run", run)
    result = reconstruct(
        run, split, data=data, fold=fold, device=resolve_device(settings.device), shard=shard, force=force,
        volumes_per_batch=volumes_per_batch, which=checkpoint, seed=settings.seed,
    )
    info(
        f"{len(result.written)} reconstructed, {len(result.skipped)} skipped, {len(result.failures)} failed "
        f"in {result.seconds:.1f} s -> {result.out}"
    )
    emit(result.summary())
    if result.failures:
        raise typer.Exit(1)
