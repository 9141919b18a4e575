"""What a training run will cost in time on a CPU, said before it starts.

A paper-size network (pDDPM: 37.5 M parameters, bench/RESULTS.md) trains for days on a
CPU; nothing should let a user find that out hours in. The estimate is measured, not modelled: one
forward pass of the model's training probe (:meth:`~mriad.models.base.AnomalyModel.training_probes`:
the training loss, or each kind of step of a model whose steps differ, the slowest counting) on two
slices (one volume for a volume model), timed on this machine, times three (the backward pass costs
about twice the forward), scaled to the batch. Every model gets it, whatever it trains on.
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
    model: AnomalyModel,
    batch_size: int,
    slice_shape: tuple[int, ...],
    autocast: Callable[[], Any] | None = None,
    depth: int = 1,
) -> float:
    """Seconds per training step on the model's device, from one timed forward of two slices (one
    volume of ``depth`` slices for a volume model) per training probe; the slowest probe counts.

    Random state is left exactly as found (own generator, global RNG restored), so a run that
    prints the estimate trains as one that does not. Gradients are enabled (a GAN's gradient penalty
    needs them), but no backward runs: no parameter's ``.grad`` changes.
    """
    from mriad.runtime.footprint import item_shape

    device = next(model.parameters()).device
    items = 1 if model.batch_kind == "volumes" else 2
    probe = torch.full((items, *item_shape(model.batch_kind, slice_shape, depth)), 0.5, device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    state, was_training = torch.get_rng_state(), model.training
    model.eval()
    try:
        with torch.enable_grad(), autocast() if autocast is not None else contextlib.nullcontext():
            for _ in model.training_probes(probe, generator):  # warm-up: first calls allocate, pick kernels
                pass
            slowest = 0.0
            probes = iter(model.training_probes(probe, generator))
            while True:
                start = time.perf_counter()
                if next(probes, None) is None:
                    break
                slowest = max(slowest, time.perf_counter() - start)
    finally:
        model.train(was_training)
        torch.set_rng_state(state)
    return 3 * slowest * batch_size / items


def announce_cpu_cost(
    model: AnomalyModel,
    batch_size: int,
    slice_shape: tuple[int, ...],
    steps: int,
    batch_kind: str,
    autocast: Callable[[], Any] | None = None,
    depth: int = 1,
) -> float | None:
    """On a CPU, for a large network: print the expected time per step and for ``steps``.

    ``slice_shape`` is the training slices' ``(N, C, H, W)``; ``depth`` the slices per volume (used
    when ``batch_kind`` is "volumes": a step then sees ``batch_size`` whole volumes).
    """
    device = next(model.parameters()).device
    parameters = sum(p.numel() for p in model.parameters())
    if device.type != "cpu" or parameters < LARGE_NETWORK_PARAMETERS or steps <= 0:
        return None
    per_step = expected_step_seconds(model, batch_size, slice_shape, autocast, depth)
    unit = "volumes" if batch_kind == "volumes" else "slices"
    info(
        f"expected on this CPU: ~{per_step:.1f} s per step of {batch_size} {unit}, ~{_duration(per_step * steps)} "
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
