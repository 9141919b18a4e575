"""`mriad variant`: a run with another run's trained network and other test-time settings."""

from __future__ import annotations

from pathlib import Path

import typer

from mriad.commands.common import emit, handle_errors, parse_sets
from mriad.infra.console import info


@handle_errors
def variant_command(
    source: Path = typer.Argument(..., help="Trained run folder whose network is reused (only read)."),
    out: Path = typer.Option(..., "--out", help="New run folder (must not exist, or be empty)."),
    set_options: list[str] = typer.Option(
        None, "--set", help="A test-time option as key=value (repeatable), e.g. --set scoring=mahalanobis."
    ),
) -> None:
    """Make a run that scores with SOURCE's trained network under other test-time settings.

    The network is not trained again: OUT's best.pt and last.pt are SOURCE's (hard links), its config.json
    is SOURCE's with the --set options changed. Only options that do not change the weights are
    accepted: for diffusion models t_test, scoring, n_reconstructions, mahalanobis_regularisation,
    t_ensemble, ensemble_average; pddpm also patch_ensemble; ddpm also sampling, t_start,
    sampling_steps, sampling_eta. Then reconstruct, evaluate and compare OUT as any run.

    MHD's Mahalanobis scoring on a trained pDDPM:
    `mriad variant runs/pddpm --out runs/pddpm-mhd --set scoring=mahalanobis --set n_reconstructions=10`

    AnoDDPM's iterative sampling on a trained DDPM:
    `mriad variant runs/ddpm --out runs/anoddpm --set sampling=iterative --set t_start=250`
    """
    from mriad.train.variant import make_variant

    changes = parse_sets(set_options)
    run = make_variant(source, out, changes)
    changed = ", ".join(f"{key}={value}" for key, value in sorted(changes.items()))
    info(f"wrote {run.root}: the network of {source}, with {changed}")
    emit({"run": str(run.root), "source": str(source), "changed": changes})
