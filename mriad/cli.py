"""The `mriad` command line: global options, then one thin command per stage.

Commands only parse options and call library functions (in ``mriad.commands.*``); heavy imports
happen inside the commands so that ``mriad --help`` is instant.
"""

from __future__ import annotations

import typer

from mriad import __version__
from mriad.commands import atlas as atlas_commands
from mriad.commands import bundle as bundle_commands
from mriad.commands import compare, evaluate, preprocess, reconstruct, split, synth, train, variant
from mriad.commands import detect as detect_commands
from mriad.commands.common import OneLineErrors
from mriad.infra.console import settings

app = typer.Typer(
    name="mriad",
    help=(
        "Unsupervised anomaly detection in brain MRI with patched diffusion models (pDDPM) and the "
        "baselines they are compared with.\n\n"
        "A typical chain: `mriad synth demo/ --preprocessed` (or `mriad preprocess raw/ out/`), "
        "`mriad train --model pddpm`, `mriad evaluate --split brats-test`, `mriad compare runs/*`."
    ),
    no_args_is_help=True,
    cls=OneLineErrors,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mriad {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    seed: int = typer.Option(0, "--seed", help="Seed for every random choice (splits, synth, training)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="More detail."),
    json_output: bool = typer.Option(
        False, "--json", help="Print a JSON summary of what was written on stdout (messages go to stderr)."
    ),
    show_progress: bool = typer.Option(
        True, "--show-progress/--hide-progress", help="Progress bars (plain log lines when not a terminal)."
    ),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    settings.device = device
    settings.seed = seed
    settings.quiet = quiet
    settings.verbose = verbose
    settings.json = json_output
    settings.show_progress = show_progress


app.command("synth")(synth.synth_command)
app.command("split")(split.split_command)
app.add_typer(atlas_commands.app, name="atlas")
app.command("preprocess")(preprocess.preprocess_command)
app.command("train", **train.COMMAND_SETTINGS)(train.train_command)
app.command("variant")(variant.variant_command)
app.command("reconstruct")(reconstruct.reconstruct_command)
app.command("evaluate")(evaluate.evaluate_command)
app.command("compare")(compare.compare_command)
app.command("report")(compare.report_command)
app.command("detect")(detect_commands.detect_command)
app.add_typer(bundle_commands.app, name="bundle")


if __name__ == "__main__":  # pragma: no cover
    app()
