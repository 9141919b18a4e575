"""`mriad preprocess`: raw scans of a data set -> the paper's 96x96x50 volumes and a manifest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from mriad.commands.common import emit, handle_errors
from mriad.infra.console import info, settings

if TYPE_CHECKING:
    from mriad.preprocess.pipeline import Outcome, PreprocessResult


@handle_errors
def preprocess_command(
    raw: Path = typer.Argument(..., help="Raw data folder (or, for --dataset generic, a CSV listing image[,seg])."),
    out: Path = typer.Argument(..., help="Output folder: `OUT/<dataset>/<subject>/`, `OUT/manifest.csv`."),
    dataset: str = typer.Option(
        ...,
        "--dataset",
        "-d",
        help="ixi, brats21 (also BraTS 2018 naming), mslub, atlas2 (T1), wmh (flair/t1), bids or generic.",
    ),
    modality: str = typer.Option(
        "t2",
        "--modality",
        "-m",
        help="t2, t1 or flair (IXI: t1, t2, pd). A list such as t2,flair (BraTS) writes one multi-channel "
        "image.nii.gz (X, Y, Z, C) per subject: skull strip, registration and crop from the first modality, "
        "N4 and normalisation per channel; the manifest's channels column records the order.",
    ),
    skull_strip: str = typer.Option(
        None,
        "--skull-strip",
        help="hd-bet, deepbet (extra: mriad[deepbet]), atlas or none. Default: hd-bet; none for BraTS.",
    ),
    registration: str = typer.Option(
        None,
        "--registration",
        help="affine-fast, affine, rigid, syn or none (to SRI24). Default: affine-fast; none for BraTS.",
    ),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Subjects in parallel (cores are shared between them)."),
    force: bool = typer.Option(False, "--force", help="Redo subjects that are already complete."),
    fail_fast: bool = typer.Option(False, "--fail-fast", help="Stop at the first failed subject."),
    demographics: Path = typer.Option(
        None, "--demographics", help="IXI spreadsheet (IXI.xls or a CSV export): age and sex. BIDS: participants.tsv."
    ),
    n4: bool = typer.Option(
        True,
        "--n4/--no-n4",
        help="N4 bias field correction inside the brain mask (three fitting levels: finer ones absorb large lesions).",
    ),
    qc: bool = typer.Option(True, "--qc/--no-qc", help="Write a qc.png per subject (mid-slices, mask outline)."),
    shard: str = typer.Option(
        None,
        "--shard",
        help="i/n: only every n-th subject starting at i; shards run side by side into one OUT "
        "(a Slurm array) and write OUT/shards/<dataset>/i-of-n/; then run --merge.",
    ),
    merge: bool = typer.Option(
        False,
        "--merge",
        help="After the shards (same RAW, OUT and options): write OUT/manifest.csv and "
        "failures.csv from the finished subjects, as one unsharded run would.",
    ),
) -> None:
    """Preprocess raw brain MRI as in the pDDPM paper: reorient, 1 mm, skull strip, affine to SRI24,
    crop 192x192x160, N4, downsample to 96x96x80, keep 50 axial slices, 1-99 percentile to [0, 1].

    Reruns skip finished subjects (verified by checksum); a bad subject goes to OUT/failures.csv and
    the exit code is 1, the others are still processed.

    Examples:

        mriad preprocess data/IXI out/ --dataset ixi --demographics data/IXI.xls --jobs 2

        mriad preprocess data/BraTS2021 out/ --dataset brats21

        mriad preprocess data/MSLUB out/ --dataset mslub --skull-strip none

    On a cluster (docs/cluster.md): one array task per shard, then one merge with the same options:

        mriad preprocess data/IXI out/ -d ixi --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT

        mriad preprocess data/IXI out/ -d ixi --merge
    """
    from mriad.infra.device import resolve_device
    from mriad.infra.errors import MriadError
    from mriad.infra.shards import parse_shard
    from mriad.infra.workspace import remember_manifest
    from mriad.preprocess.pipeline import preprocess
    from mriad.preprocess.shards import merge as merge_shards

    if shard and merge:
        raise MriadError("--merge: runs after the shards, without --shard")
    spec = parse_shard(shard) if shard else None
    device = str(resolve_device(settings.device))
    what = "merge" if merge else f"shard {shard}" if shard else f"jobs {jobs}"
    info(f"preprocess {raw} -> {out} (dataset {dataset}, modality {modality}, device {device}, {what})")
    common: dict[str, Any] = {
        "dataset": dataset,
        "modality": modality,
        "skull_strip": skull_strip,
        "registration": registration,
        "demographics": demographics,
        "device": device,
        "n4": n4,
        "qc": qc,
    }
    if merge:
        result = merge_shards(raw, out, **common)
    else:
        result = preprocess(
            raw, out, jobs=jobs, force=force, fail_fast=fail_fast, progress=_progress, shard=spec, **common
        )
    if spec is None:  # a shard's manifest is partial: the merge's is the one to remember
        remember_manifest(result.manifest)
    _summary(result, sharded=spec is not None)
    emit(
        {
            "manifest": str(result.manifest),
            "failures_csv": str(result.failures_csv),
            "done": result.done,
            "skipped": result.skipped,
            "failed": [p.subject for p in result.failures],
            "seconds": result.seconds,
            "options": {
                "skull_strip": result.options.skull_strip,
                "registration": result.options.registration,
                "modality": result.options.modality,
                "n4": result.options.n4,
            },
        }
    )
    if result.failures:
        raise typer.Exit(1)


def _progress(items: Iterator[Outcome], total: int) -> Iterator[Outcome]:
    from mriad.infra.console import track

    return track(items, total=total, description="preprocess", unit="subject")


def _summary(result: PreprocessResult, sharded: bool = False) -> None:
    """A table of what happened and the mean seconds per step, then the failures (one line each)."""
    from rich.table import Table

    from mriad.infra.console import console

    opts = result.options
    info(f"steps: skull strip {opts.skull_strip}, registration {opts.registration}, N4 {'on' if opts.n4 else 'off'}")
    if not settings.quiet and not settings.json:
        table = Table(
            title=f"preprocess: {len(result.done)} done, {len(result.skipped)} skipped "
            f"(already complete), {len(result.failures)} failed in {result.seconds:.0f} s"
        )
        steps: dict[str, list[float]] = {}
        for timings in result.timings.values():
            for step, seconds in timings.items():
                steps.setdefault(step, []).append(float(seconds))
        if steps:
            table.add_column("step")
            table.add_column("mean s / subject", justify="right")
            table.add_column("max s", justify="right")
            for step, values in steps.items():
                table.add_row(step, f"{sum(values) / len(values):.1f}", f"{max(values):.1f}")
            console.print(table)
        else:
            info(table.title or "")
    for subject, notes in result.warnings.items():
        for note in notes:
            _warn_line(f"{subject}: {note}")
    for problem in result.failures[:20]:
        _warn_line(f"failed: {problem.reason}")
    if len(result.failures) > 20:
        _warn_line(f"... and {len(result.failures) - 20} more in {result.failures_csv}")
    info(f"manifest: {result.manifest}" + (f"; failures: {result.failures_csv}" if result.failures else ""))
    if sharded:
        info("next, once every shard has finished: the same command with --merge instead of --shard")
    elif result.done or result.skipped:
        info("next: `mriad split " + str(result.manifest) + "`")


def _warn_line(message: str) -> None:
    """One unwrapped line on stderr (grep-able; paths and reasons are never split), no markup parsing."""
    from rich.text import Text

    from mriad.infra.console import err_console

    err_console.print(Text("warning: ", style="yellow") + Text(message), soft_wrap=True, highlight=False)
