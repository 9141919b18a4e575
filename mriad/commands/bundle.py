"""`mriad bundle export|import`: a trained model as one verifiable zip file (docs/bundles.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from mriad.commands.common import emit, handle_errors
from mriad.infra.console import info

app = typer.Typer(
    help="Share trained models: `export` a run as a zip (safetensors weights, thresholds, preprocessing "
    "settings, model card, SHA-256 of every member); `import` verifies one before unpacking it.",
    no_args_is_help=True,
)


@app.command("export")
@handle_errors
def export_command(
    run: Path = typer.Argument(..., help="Run folder (trained; evaluated, so that its threshold travels along)."),
    file: Path = typer.Argument(..., help="The bundle to write, e.g. pddpm-fold0.zip."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best or last."),
    force: bool = typer.Option(False, "--force", help="Replace an existing FILE."),
) -> None:
    """Write RUN's model as a bundle: no pickle inside, every member checksummed.

    Example: `mriad bundle export runs/pddpm-fold0 pddpm-fold0.zip`, then elsewhere
    `mriad detect scan.nii.gz --bundle pddpm-fold0.zip --out results/`.
    """
    from mriad.bundle import export_bundle

    result = export_bundle(run, file, which=checkpoint, force=force)
    info(f"bundle {result['file']} ({result['bytes']} bytes, model {result['model']}): {', '.join(result['members'])}")
    info(f"sha256 {result['sha256']}")
    emit(result)


@app.command("import")
@handle_errors
def import_command(
    file: Path = typer.Argument(..., help="A bundle (.zip)."),
    to: Path = typer.Option(None, "--to", help="Folder to unpack into [default: ./<FILE stem>]."),
    force: bool = typer.Option(False, "--force", help="Replace a bundle already unpacked in --to."),
) -> None:
    """Verify a bundle (every checksum; no unknown members, folder names, oversized members or pickles)
    and unpack it. Use the folder (or the zip itself) with `mriad detect --bundle`."""
    from mriad.bundle import import_bundle

    result = import_bundle(file, to, force=force)
    info(f"verified {len(result['members'])} members of {result['file']} (model {result['model']}) -> {result['to']}")
    emit(result)
