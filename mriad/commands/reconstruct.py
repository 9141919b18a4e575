"""`mriad reconstruct`: reconstructions and anomaly maps as NIfTI."""

from __future__ import annotations

from pathlib import Path

import typer

from mriad.commands.common import emit, handle_errors
from mriad.infra.console import info, settings, using_default


@handle_errors
def reconstruct_command(
    split: str = typer.Option(..., "--split", help="Split to reconstruct, e.g. brats-test, ixi-test, mslub-val."),
    run: Path = typer.Option(None, "--run", help="Run folder (default: the most recent run)."),
    data: Path = typer.Option(None, "--data", help="Manifest (default: the one the run was trained with)."),
    fold: int = typer.Option(None, "--fold", help="Fold for ixi-train/ixi-val (default: the run's fold)."),
    shard: str = typer.Option(
        None,
        "--shard",
        help="i/n: only groups i, i+n, ... of --volumes-per-batch subjects. Shards of a split run "
        "side by side (a Slurm array) and write the maps one run would (same --volumes-per-batch).",
    ),
    force: bool = typer.Option(False, "--force", help="Redo subjects that are already reconstructed."),
    volumes_per_batch: int = typer.Option(4, "--volumes-per-batch", help="Volumes sent to the model together."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best or last."),
    precision: str = typer.Option(
        None, "--precision", help="Diffusion models: auto (bf16 autocast on CUDA, fp32 elsewhere), fp32 or bf16."
    ),
    compile_mode: str = typer.Option(
        None,
        "--compile",
        help="Diffusion models: torch.compile mode (none, default, reduce-overhead = CUDA graphs, max-autotune). "
        "The first calls are slow while it compiles; `bench/reconstruct.py --compile` measures whether it pays.",
    ),
    channels_last: bool = typer.Option(
        None,
        "--channels-last/--no-channels-last",
        help="Diffusion models: NHWC activations (default: on CUDA only). On a CPU with native bf16, "
        "--precision bf16 --channels-last is the fastest mode (3.2-3.5x the reference path on 2 "
        "cores, bench/RESULTS.md); its maps differ from fp32's by up to ~0.1 with random weights.",
    ),
    max_chunk: int = typer.Option(
        None,
        "--max-chunk",
        min=1,
        help="Diffusion models: at most this many boxes per network call "
        "(default: from free memory; 8 on a CPU, 64 on CUDA).",
    ),
) -> None:
    """Write each subject's reconstruction `<subject>_rec.nii.gz` and score map `_score.nii.gz`
    (|x - x_hat|) into the run's reconstruction folder of the split, with a record of what made them.

    Maps lie on the preprocessed grid with its affine, so they open aligned with the input in ITK-SNAP.
    Subjects whose maps were made from the same scan, mask, checkpoint and settings are skipped: rerun
    after an interruption to continue. Any other map (new scans under the same IDs, a retrained model)
    is made again.

    Example: `mriad reconstruct --run runs/pddpm-fold0 --split brats-test`

    On a GPU: `mriad --device cuda reconstruct --run runs/pddpm-fold0 --split brats-test --compile default`
    (bf16 autocast and channels_last are already the CUDA defaults; compilation is not, since it has
    not yet been measured to pay). Settings that change the numbers (--precision) apply to the
    subjects written in that call; use --force to redo finished ones.
    """
    from mriad.infra.device import resolve_device
    from mriad.infra.workspace import latest_run
    from mriad.reconstruct import reconstruct

    if run is None:
        run = latest_run()
        using_default("--run", run)
    result = reconstruct(
        run,
        split,
        data=data,
        fold=fold,
        device=resolve_device(settings.device),
        shard=shard,
        force=force,
        volumes_per_batch=volumes_per_batch,
        which=checkpoint,
        seed=settings.seed,
        inference={
            "precision": precision,
            "compile": compile_mode,
            "max_chunk": max_chunk,
            "channels_last": channels_last,
        },
    )
    info(
        f"{len(result.written)} reconstructed, {len(result.skipped)} skipped, {len(result.failures)} failed "
        f"in {result.seconds:.1f} s -> {result.out}"
    )
    emit(result.summary())
    if result.failures:
        raise typer.Exit(1)
