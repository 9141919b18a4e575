"""`mriad atlas show|check|install`: the SRI24 template that preprocessing registers to."""

from __future__ import annotations

from pathlib import Path

import typer

from mriad.commands.common import emit, handle_errors

app = typer.Typer(help="Show, check or install the SRI24 atlas.", no_args_is_help=True)


@app.command("show")
@handle_errors
def show() -> None:
    """Print the installed atlas files and the grids preprocessing writes."""
    from mriad import atlas
    from mriad.infra.console import info

    files = atlas.available_templates()
    info(f"atlas folder: {atlas.atlas_root() / atlas.ATLAS_NAME}")
    for kind, path in files.items():
        info(f"  {kind:12s} {path.name}")
    final = atlas.final_grid()
    info(f"preprocessed grid: {final.shape} at 2 mm (crop {atlas.CROP_SHAPE} at 1 mm)")
    emit({"atlas_dir": str(atlas.atlas_root() / atlas.ATLAS_NAME), "files": {k: str(v) for k, v in files.items()}})


@app.command("check")
@handle_errors
def check() -> None:
    """Verify shapes, spacing, checksums and world alignment of the atlas files (exit 1 on failure)."""
    from rich.text import Text

    from mriad import atlas
    from mriad.infra.console import info

    results = atlas.check_atlas()
    for name, ok, message in results:
        info(Text.assemble(("ok  ", "green") if ok else ("FAIL", "red"), f" {name}: {message}"))
    emit({"checks": [{"file": n, "ok": ok, "message": m} for n, ok, m in results]})
    if not all(ok for _, ok, _ in results):
        raise typer.Exit(1)


@app.command("install")
@handle_errors
def install(
    name: str = typer.Argument("sri24", help="Atlas to install (only sri24)."),
    from_file: Path = typer.Option(None, "--from", help="A local SRI24 archive (.zip or .tar.gz) instead of NITRC."),
) -> None:
    """Install the full SRI24 distribution (T1, T2, PD; CC BY-SA 3.0, cite Rohlfing et al. 2010)."""
    from mriad.atlas.install import install_sri24
    from mriad.infra.console import info

    installed = install_sri24(name=name, archive=from_file)
    for kind, path in installed.items():
        info(f"installed {kind}: {path}")
    emit({"installed": {k: str(v) for k, v in installed.items()}})
