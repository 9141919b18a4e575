"""`mriad synth`: realistic synthetic scans from the SRI24 anatomy, raw or ready to train on."""

from __future__ import annotations

from pathlib import Path

import typer

from mriad.commands.common import emit, handle_errors
from mriad.infra.console import info, settings

DEFAULT_LESIONS = 6


@handle_errors
def synth_command(
    out: Path = typer.Argument(..., help="Output folder (created; existing files of the same names are replaced)."),
    healthy: int = typer.Option(8, "--healthy", min=0, help="Healthy IXI-like subjects (data set `ixi`)."),
    lesions: int | None = typer.Option(
        None,
        "--lesions",
        min=0,
        help=f"Lesion subjects of the layout's data set [default: {DEFAULT_LESIONS}; 0 for --layout ixi].",
    ),
    layout: str = typer.Option(
        "brats",
        "--layout",
        help="Lesion data set and raw file layout: `brats` (gliomas with oedema), `mslub` (MS lesions) "
        "or `ixi` (healthy only).",
    ),
    preprocessed: bool = typer.Option(
        False,
        "--preprocessed/--raw",
        help="Write the ready 96x96x50 volumes and a split manifest (input of `mriad train`) instead of "
        "raw scans in the data sets' own layouts (input of `mriad preprocess`).",
    ),
    modality: str = typer.Option(
        "t2",
        "--modality",
        help="Contrast: `t2` (paper), `flair` or `t1` (the atlas's own). IXI has no FLAIR: raw FLAIR needs "
        "--healthy 0. A list such as `t2,flair`: the same subjects in each contrast, one 4D image per subject "
        "(--preprocessed) or one file per modality (raw: BraTS layout, --healthy 0).",
    ),
) -> None:
    """Synthetic brain MRI built from real anatomy, with lesion masks and demographics.

    Each scan is the SRI24 head template under a random pose, a smooth elastic warp and an
    age-dependent ventricle widening, remapped to a T2-like contrast (CSF bright, white matter dark),
    with a bias field and Rician noise. Lesion scans carry hyperintense lesions and their masks.

    **Raw** (default): `OUT/IXI/IXI002-HH-1211-T2.nii.gz` (with skull, non-RAS, anisotropic voxels),
    `OUT/BraTS2021/BraTS2021_00000/BraTS2021_00000_{t2,seg}.nii.gz` (skull-stripped, SRI24 grid, LPS)
    or `OUT/MSLUB/patient01/{T2W,consensus_gt}.nii.gz`, plus `OUT/IXI.csv` (IXI_ID, SEX_ID, AGE) and
    ground truth (brain and lesion masks on the raw grid) under `OUT/_truth/`.

    **Preprocessed**: `OUT/<dataset>/<subject>/{image,mask,seg}.nii.gz` on the 96x96x50 grid and
    `OUT/manifest.csv`, already split (IXI: test + 5 age-stratified folds; lesions: val + test) and
    remembered as the workspace's manifest.

    Deterministic by the global `--seed` (same seed, byte-identical files).

    Example: `mriad --seed 1 synth demo/ --preprocessed --healthy 20 --lesions 8 --layout brats`,
    then `mriad train --fold 0`.
    """
    from rich.table import Table

    from mriad.infra.console import console
    from mriad.synth import synthesize

    if lesions is None:
        lesions = 0 if layout == "ixi" else DEFAULT_LESIONS
    result = synthesize(
        out,
        healthy=healthy,
        lesions=lesions,
        layout=layout,
        preprocessed=preprocessed,
        seed=settings.seed,
        modality=modality,
    )
    if result.manifest is not None:
        from mriad.infra.workspace import remember_manifest

        remember_manifest(result.manifest)
    kind = "preprocessed 96x96x50" if preprocessed else "raw"
    table = Table(title=f"{len(result.subjects)} synthetic {modality.upper()} scans ({kind}) in {out}")
    table.add_column("data set")
    table.add_column("subjects", justify="right")
    for dataset, count in result.datasets.items():
        table.add_row(dataset, str(count))
    if not settings.quiet and not settings.json:
        console.print(table)
    if result.manifest is not None:
        info(f"manifest: {result.manifest} (split; next: `mriad train --fold 0`)")
    if result.demographics is not None:
        info(f"IXI demographics: {result.demographics}")
    if result.truth is not None:
        info(f"ground truth: {result.truth.parent} (next: `mriad preprocess {out} OUT`)")
    info(f"{result.seconds:.1f} s, seed {settings.seed}", style="dim")
    emit(
        {
            "out": str(out),
            "subjects": result.subjects,
            "datasets": result.datasets,
            "layout": layout,
            "preprocessed": preprocessed,
            "modality": modality,
            "seed": settings.seed,
            "manifest": str(result.manifest) if result.manifest else None,
            "demographics": str(result.demographics) if result.demographics else None,
            "truth": str(result.truth) if result.truth else None,
            "seconds": round(result.seconds, 2),
        }
    )
