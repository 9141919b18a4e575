"""What a training run will cost in time on a CPU, said before it starts.

A paper-size network (pDDPM: 26 M parameters, ~14 GFLOP per 96x96 forward) trains for days on a
CPU; nothing should let a user find that out hours in. The estimate is measured, not modelled: one
forward pass of the training loss on two slices, timed on this machine, times three (the backward
pass costs about twice the forward), scaled to the batch.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from mriad.infra.console import info

if TYPE_CHECKING:
    from mriad.models.base import AnomalyModel

# Networks at least this large get the estimate (the test and demo networks are far smaller).
LARGE_NETWORK_PARAMETERS = 5_000_000


def expected_step_seconds(
    model: AnomalyModel, batch_size: int, slice_shape: tuple[int, ...], autocast: Callable[[], Any] | None = None
) -> float:
    """Seconds per training step on the model's device, from one timed forward of two slices.

    Random state is left exactly as found (own generator, global RNG restored), so a run that
    prints the estimate trains as one that does not.
    """
    device = next(model.parameters()).device
    height, width = (int(v) for v in slice_shape[-2:])
    probe = torch.full((2, 1, height, width), 0.5, device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    state, was_training = torch.get_rng_state(), model.training
    model.eval()
    try:
        with torch.no_grad(), autocast() if autocast is not None else contextlib.nullcontext():
            model.training_loss(probe, generator)  # warm-up: first calls allocate and pick kernels
            start = time.perf_counter()
            model.training_loss(probe, generator)
            seconds = time.perf_counter() - start
    finally:
        model.train(was_training)
        torch.set_rng_state(state)
    return 3 * seconds * batch_size / 2


def announce_cpu_cost(
    model: AnomalyModel,
    batch_size: int,
    slice_shape: tuple[int, ...],
    steps: int,
    batch_kind: str,
    autocast: Callable[[], Any] | None = None,
) -> float | None:
    """On a CPU, for a large network of slices: print the expected time per step and for ``steps``."""
    device = next(model.parameters()).device
    parameters = sum(p.numel() for p in model.parameters())
    if device.type != "cpu" or parameters < LARGE_NETWORK_PARAMETERS or batch_kind != "slices" or steps <= 0:
        return None
    per_step = expected_step_seconds(model, batch_size, slice_shape, autocast)
    info(
        f"expected on this CPU: ~{per_step:.1f} s per step of {batch_size} slices, ~{_duration(per_step * steps)} "
        f"for the {steps} steps left ({parameters / 1e6:.0f} M parameters; a GPU, --batch-size or "
        "--channels shorten it)"
    )
    return per_step


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
