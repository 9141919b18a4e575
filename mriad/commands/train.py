"""`mriad train`: train a registered model on the healthy training split of a fold."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand

from mriad.commands.common import emit, handle_errors, parse_sets
from mriad.contracts.run_folder import CHECKPOINTS, RunFolder
from mriad.infra.console import info, settings, using_default
from mriad.infra.errors import MriadError

_MODEL_KEY = "mriad.train.model"


class ModelHelpCommand(TyperCommand):
    """`mriad train --model NAME --help` also prints that model's summary, paper and defaults.

    ``--model`` is an eager option whose callback stores the name in ``ctx.meta``; click handles
    eager options in command-line order, so the name is known by the time ``--help`` prints.
    """

    def format_help(self, ctx: Any, formatter: Any) -> None:
        super().format_help(ctx, formatter)
        name = ctx.meta.get(_MODEL_KEY)
        if not name:
            formatter.write_paragraph()
            formatter.write_text("Add --model NAME before --help to see that model's defaults.")
            return
        try:
            from mriad.models.registry import get_model_class

            cls = get_model_class(name)
        except MriadError as exc:
            formatter.write_paragraph()
            formatter.write_text(str(exc))
            return
        options = {**cls.common_defaults, **cls.defaults}
        with formatter.section(f"Model {name}"):
            if cls.summary:
                formatter.write_text(cls.summary)
            if cls.paper:
                formatter.write_paragraph()
                formatter.write_text(f"Paper: {cls.paper}")
            formatter.write_paragraph()
            formatter.write_text("Defaults (change with the flags above or --set key=value):")
            formatter.write_dl([(key, _show(value)) for key, value in options.items()])


def _show(value: Any) -> str:
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    return str(value)


def _remember_model(ctx: typer.Context, value: str | None) -> str | None:
    if value:
        ctx.meta[_MODEL_KEY] = value
    return value


COMMAND_SETTINGS: dict[str, Any] = {"cls": ModelHelpCommand}


@handle_errors
def train_command(
    model: str = typer.Option(
        ...,
        "--model",
        is_eager=True,
        callback=_remember_model,
        help="Model: pddpm, ddpm, cddpm, ae, vae, svae, dae, fanogan, thresh; `--model NAME --help`: its defaults.",
    ),
    data: Path = typer.Option(None, "--data", help="Manifest CSV (default: the workspace's last manifest)."),
    fold: int = typer.Option(None, "--fold", help="IXI cross-validation fold 0-4 (default 0)."),
    out: Path = typer.Option(None, "--out", help="Run folder (default: runs/<model>-fold<k>)."),
    dataset: str = typer.Option(None, "--dataset", help="Dataset whose train/val splits are used (default ixi)."),
    epochs: int = typer.Option(None, "--epochs", help="Epochs; one epoch = one slice per training volume."),
    batch_size: int = typer.Option(None, "--batch-size", help="Slices per step (per process)."),
    lr: float = typer.Option(None, "--lr", help="Adam learning rate (pddpm: paper 1e-5, reference code 1e-4)."),
    val_every: int = typer.Option(None, "--val-every", help="Validate and checkpoint every N epochs."),
    patch_size: int = typer.Option(
        None, "--patch-size", help="pddpm: box size in pixels (paper 48; 60 best in Fig. 3)."
    ),
    patch_sampling: str = typer.Option(None, "--patch-sampling", help="pddpm: fixed (a box of the grid) or random."),
    loss: str = typer.Option(None, "--loss", help="pddpm: patch (L1 on the box, L_p) or full (whole slice, L_rec)."),
    schedule: str = typer.Option(None, "--schedule", help="Diffusion: linear (paper) or cosine (reference code)."),
    noise: str = typer.Option(None, "--noise", help="Diffusion: simplex (paper) or gaussian."),
    t_test: int = typer.Option(None, "--t-test", help="Diffusion: noise level used for reconstruction (1..T)."),
    channels: int = typer.Option(None, "--channels", help="Base channels of the network (paper 128)."),
    set_options: list[str] = typer.Option(None, "--set", help="Any model option as key=value (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help=f"Continue the run in --out from {CHECKPOINTS}/last.pt."),
    force: bool = typer.Option(
        False, "--force", help="Start over: delete the run's checkpoints, metrics, recon, eval."
    ),
    compile_model: bool = typer.Option(False, "--compile/--no-compile", help="torch.compile the network."),
    max_steps: int = typer.Option(None, "--max-steps", help="Stop after N optimisation steps in total (resumable)."),
    deterministic: bool = typer.Option(False, "--deterministic", help="Deterministic CUDA kernels (slower)."),
    checkpoint_every: int = typer.Option(
        None,
        "--checkpoint-every",
        help=f"Also keep {CHECKPOINTS}/step-K.pt every N steps (learning curves: evaluate --checkpoint step-K).",
    ),
    patience: int = typer.Option(
        None,
        "--patience",
        help="Early stopping: stop once N validations in a row did not lower the best validation loss.",
    ),
    healthy_slices_from: str = typer.Option(
        None,
        "--healthy-slices-from",
        help="Lesion data set (e.g. brats, split with `mriad split --brats-train F`): train on the lesion-free "
        "slices of its train patients, validate on those of its val patients. They come from patients.",
    ),
    slice_margin: int = typer.Option(
        2, "--slice-margin", help="--healthy-slices-from: slices kept at least this far from any lesion voxel."
    ),
    min_brain_fraction: float = typer.Option(
        0.3,
        "--min-brain-fraction",
        help="--healthy-slices-from: brain area at least this fraction of the volume's largest slice area.",
    ),
) -> None:
    """Train a model on healthy slices into a run folder: its config, metrics log and last/best checkpoints.

    The training split is loaded once onto the device; `best.pt` has the lowest loss on the healthy
    validation split of the fold. Interrupted runs continue with `--resume`.

    Example: `mriad train --model pddpm --data demo/manifest.csv --fold 0 --out runs/pddpm-fold0`

    Several GPUs: `torchrun --nproc_per_node 4 -m mriad train --model pddpm ...` (see docs/training.md).

    Healthy slices from patients (no healthy scans of the modality at hand): `mriad split M --brats-train
    0.4`, then `mriad train --model pddpm --healthy-slices-from brats --slice-margin 2 --min-brain-fraction
    0.3`; brats-val / brats-test patients stay disjoint for thresholds and testing (docs/training.md).
    """
    from mriad.infra.device import resolve_device
    from mriad.infra.workspace import default_manifest, remember_run, runs_dir
    from mriad.train import TrainSpec, train

    main_rank = int(os.environ.get("RANK", "0")) == 0
    if not main_rank:
        settings.quiet = True  # one voice per job: rank 0 reports
    if data is None:
        data = default_manifest()
        using_default("--data", data)
    if fold is None:
        fold = 0
        using_default("--fold", fold)
    if healthy_slices_from is not None:
        if dataset is not None and dataset != healthy_slices_from:
            raise MriadError(f"--healthy-slices-from {healthy_slices_from}: contradicts --dataset {dataset}")
        dataset = healthy_slices_from
    if dataset is None:
        dataset = "ixi"
        using_default("--dataset", dataset)
    if out is None:
        out = runs_dir() / f"{model}-fold{fold}"
        using_default("--out", out)

    flags = {
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "val_every": val_every,
        "patch_size": patch_size,
        "patch_sampling": patch_sampling,
        "loss": loss,
        "schedule": schedule,
        "noise": noise,
        "t_test": t_test,
        "base_channels": channels,
    }
    options: dict[str, Any] = {k: v for k, v in flags.items() if v is not None}
    for key, value in parse_sets(set_options).items():
        if key in options:
            raise MriadError(f"--set {key}=...: {key} is already given by its own flag")
        options[key] = value

    if options:
        chosen = ", ".join(f"{k}={v}" for k, v in options.items())
        info(f"{model} options: {chosen}; the rest at the model's defaults (`mriad train --model {model} --help`)")
    else:
        using_default(f"{model} options", "the model's published defaults")
    spec = TrainSpec(
        model=model,
        data=data,
        out=out,
        fold=fold,
        dataset=dataset,
        options=options,
        seed=settings.seed,
        resume=resume,
        force=force,
        compile=compile_model,
        max_steps=max_steps,
        deterministic=deterministic,
        checkpoint_every=checkpoint_every,
        patience=patience,
        healthy_slices=healthy_slices_from is not None,
        slice_margin=slice_margin,
        min_brain_fraction=min_brain_fraction,
    )
    run = train(spec, device=resolve_device(settings.device))
    if main_rank:
        remember_run(run)
        info(f"run folder: {run}")
        emit(
            {
                "run": str(run),
                "model": model,
                "fold": fold,
                "checkpoints": [str(p) for p in RunFolder(run).checkpoint_files()],
            }
        )
