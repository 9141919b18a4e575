"""`mriad detect`: apply a trained model (a run or a bundle) to new scans, results in their own space."""

from __future__ import annotations

from pathlib import Path

import typer

from mriad.commands.common import emit, handle_errors
from mriad.infra.console import info, settings


@handle_errors
def detect_command(
    scans: list[Path] = typer.Argument(
        ...,
        help="NIfTI scans, folders of them (a `<name>_seg.nii.gz` beside a scan is its ground truth), "
        "BIDS data sets, or CSVs listing image[,seg,subject_id].",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: `<scan>_{anomaly,lesion}.nii.gz`, ..."),
    run: Path = typer.Option(None, "--run", help="Run folder of the model (evaluated: its threshold is used)."),
    bundle: Path = typer.Option(None, "--bundle", help="Model bundle (.zip from `mriad bundle export`, or imported)."),
    threshold: float = typer.Option(
        None, "--threshold", help="Binarise at this score instead of the threshold calibrated by `evaluate`."
    ),
    val_split: str = typer.Option(
        None, "--val-split", help="Whose calibrated threshold to use when there are several (e.g. brats-val)."
    ),
    checkpoint: str = typer.Option("best", "--checkpoint", help="With --run: best or last."),
    modality: str = typer.Option(None, "--modality", "-m", help="t2, t1 or flair [default: the training data's]."),
    skull_strip: str = typer.Option(
        None, "--skull-strip", help="hd-bet, deepbet, atlas or none [default: the training data's]."
    ),
    registration: str = typer.Option(
        None, "--registration", help="affine-fast, affine, rigid or none [default: the training data's]."
    ),
    n4: bool = typer.Option(None, "--n4/--no-n4", help="N4 bias field correction [default: the training data's]."),
    viewer: bool = typer.Option(True, "--viewer/--no-viewer", help="Write `<scan>_viewer.html` (NiiVue, offline)."),
) -> None:
    """Find anomalies in new scans and write them on each scan's own grid (shape and affine).

    Each scan is preprocessed with the settings recorded with the model's training data (preprocess's
    options of the same names override them; data without a record gets preprocess's defaults),
    reconstructed, scored and post-processed as `evaluate` does, binarised at the threshold `evaluate`
    calibrated, and mapped back: `<scan>_anomaly.nii.gz` (float32, linear), `<scan>_lesion.nii.gz`
    (uint8, nearest), `<scan>_summary.json` (lesion volume in ml, components, scores, threshold,
    model digests), `<scan>_overview.png` and `<scan>_viewer.html`. A scan that fails is listed in
    `OUT/failures.csv` (exit code 1); the others are still done.

    Examples:

        mriad detect scan.nii.gz --run runs/pddpm-fold0 --out results/

        mriad detect my_bids/ --bundle pddpm.zip --out results/ --skull-strip none
    """
    from mriad.detect import detect
    from mriad.infra.device import resolve_device

    overrides = {"modality": modality, "skull_strip": skull_strip, "registration": registration, "n4": n4}
    result = detect(
        scans,
        out,
        run=run,
        bundle=bundle,
        which=checkpoint,
        threshold=threshold,
        val_split=val_split,
        preprocess=overrides,
        device=str(resolve_device(settings.device)),
        seed=settings.seed,
        viewer=viewer,
    )
    for summary in result.summaries:
        truth = summary.get("ground_truth") or {}
        dice = f", Dice {truth['dice']:.3f} vs {Path(truth['file']).name}" if truth.get("dice") is not None else ""
        info(
            f"{summary['subject_id']}: lesion {summary['lesion_volume_ml']:.2f} ml in "
            f"{summary['n_components']} component(s){dice} -> {summary['outputs']['lesion']}"
        )
    info(f"{len(result.summaries)} scan(s) done, {len(result.failures)} failed in {result.seconds:.1f} s -> {out}")
    emit(
        {
            "out": str(out),
            "scans": [{"subject_id": s["subject_id"], **s["outputs"]} for s in result.summaries],
            "failed": [p.subject for p in result.failures],
            "failures_csv": str(result.failures_csv),
            "seconds": result.seconds,
        }
    )
    if result.failures:
        raise typer.Exit(1)
