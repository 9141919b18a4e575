"""`mriad split`: the paper's splits written into a manifest."""

from __future__ import annotations

from pathlib import Path

import typer

from mriad.commands.common import emit, handle_errors
from mriad.infra.console import info, settings


@handle_errors
def split_command(
    manifest: Path = typer.Argument(..., help="Manifest CSV to split (written back atomically)."),
    out: Path = typer.Option(None, "--out", help="Write here instead of overwriting MANIFEST."),
    test_fraction: float = typer.Option(
        158 / 560, "--test-fraction", help="Healthy subjects held out for testing (paper: 158 of 560)."
    ),
    folds: int = typer.Option(5, "--folds", help="Cross-validation folds over the remaining healthy subjects."),
    brats_val: float = typer.Option(100 / 1251, "--brats-val", help="Fraction of BraTS in val (paper: 100)."),
    mslub_val: float = typer.Option(10 / 30, "--mslub-val", help="Fraction of MSLUB in val (paper: 10 of 30)."),
    brats_train: float = typer.Option(
        0.0,
        "--brats-train",
        help="Fraction of BraTS patients in brats-train, whose lesion-free slices `train --healthy-slices-from "
        "brats` uses (default 0: val/test only).",
    ),
) -> None:
    """Assign test / trainval folds (IXI, stratified by age) and val / test (lesion data sets).

    Deterministic by the global `--seed`. Example: `mriad --seed 1 split out/manifest.csv`.
    """
    from rich.table import Table

    from mriad.infra.console import console
    from mriad.split import SplitSettings, describe, split_manifest

    split_settings = SplitSettings(
        healthy_test_fraction=test_fraction,
        folds=folds,
        lesion_val_fraction={"brats": brats_val, "mslub": mslub_val},
        lesion_train_fraction={"brats": brats_train},
    )
    target, frame = split_manifest(manifest, seed=settings.seed, settings=split_settings, out=out)
    table = Table(title=f"splits written to {target}")
    for column in ("data set", "split", "fold", "subjects", "mean age"):
        table.add_column(column)
    for row in describe(frame).itertuples(index=False):
        fold = "" if int(row.fold) < 0 else str(int(row.fold))
        age = "" if row.mean_age != row.mean_age else f"{row.mean_age:.1f}"
        table.add_row(str(row.dataset), str(row.split), fold, str(row.subjects), age)
    if not settings.quiet and not settings.json:
        console.print(table)
    info(f"manifest: {target}")
    emit({"manifest": str(target), "subjects": len(frame)})
