"""Memory: what the machine has free, and what a network needs for inference.

Inference (UNet of the diffusion models): activation bytes per network input per pixel per base
channel. The encoder's skips (~6 x base full-resolution maps) plus the decoder's widest transients
(concat, fp32 GroupNorm copy, activation, output: ~12 x base), times 4 bytes, are ~80 by count;
bench/memory.py measured 93-114 in fp32 on a CPU (peak RSS growth per input, widths 16 and 128,
several runs), so 120. bf16 on a GPU needs less; not measured on a GPU yet.

Training: :func:`unet_training_memory` counts what autograd keeps for the backward pass (on the
"meta" device, so even an impossible network costs nothing to ask about), and
:func:`check_training_memory` turns a configuration that cannot fit into one line saying what to
change, before anything is allocated. Every other model is counted the same way by
:mod:`mriad.runtime.footprint`, through the same two guards.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

INFERENCE_BYTES_PER_PIXEL_CHANNEL = 120
# Measured peak RSS growth per training slice / counted saved bytes (bench/memory.py --train, CPU,
# fp32): 1.31 without and 2.21 with checkpointing for the "small" network (see bench/RESULTS.md);
# rounded up, so the guard errs towards refusing a step that would be close to the limit.
TRAINING_CALIBRATION = 1.35
CHECKPOINTED_CALIBRATION = 2.3
GIB = 1 << 30


def available_memory() -> int:
    """Bytes of RAM the system can hand out now (MemAvailable; 4 GiB when it cannot be read)."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def unet_inference_bytes(height: int, width: int, base_channels: int) -> int:
    """Peak activation bytes of one UNet input at inference (see the module doc)."""
    return INFERENCE_BYTES_PER_PIXEL_CHANNEL * height * width * base_channels


@dataclass(frozen=True)
class TrainingMemory:
    """Estimated peak bytes of one training step, by part (see :func:`unet_training_memory`)."""

    states: int  # weights, gradients and two Adam moments
    activations: int  # kept for the backward pass, the whole batch
    checkpointed_activations: int  # the same with gradient checkpointing

    def total(self, checkpointing: bool) -> int:
        return self.states + (self.checkpointed_activations if checkpointing else self.activations)


def saved_tensor_bytes(
    net: nn.Module, inputs: tuple[torch.Tensor, ...], blocks: tuple[type[nn.Module], ...] = ()
) -> tuple[int, list[int], int]:
    """Bytes autograd keeps for the backward pass of ``net(*inputs)``; cheap on the "meta" device.

    Returns (all saved bytes, saved bytes inside each module of a type in ``blocks``, bytes of those
    modules' distinct inputs). Parameters are left out (they are counted as states); a tensor saved
    twice counts once.
    """
    params = {id(p) for p in net.parameters()}
    seen: dict[int, torch.Tensor] = {}  # keeps the tensors alive, so ids are not reused
    total = [0]

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if id(tensor) not in params and id(tensor) not in seen:
            seen[id(tensor)] = tensor
            total[0] += tensor.numel() * tensor.element_size()
        return tensor

    inside: list[int] = []
    block_inputs: dict[int, torch.Tensor] = {}
    start: dict[int, int] = {}

    def before(module: nn.Module, args: tuple[Any, ...]) -> None:
        start[id(module)] = total[0]
        x = args[0]
        block_inputs.setdefault(id(x), x)

    def after(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        inside.append(total[0] - start.pop(id(module)))

    handles = []
    for module in net.modules():
        if blocks and isinstance(module, blocks):
            handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    try:
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            net(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    input_bytes = sum(x.numel() * x.element_size() for x in block_inputs.values())
    return total[0], inside, input_bytes


def unet_training_memory(net: nn.Module, batch: int, height: int, width: int) -> TrainingMemory:
    """Peak training memory of a diffusion UNet (fp32, Adam) for ``batch`` slices of ``height x width``.

        Counted, not guessed: one forward of a single slice on the "meta" device (no arithmetic, no
        memory) with autograd's saved-tensor hooks; with checkpointing only the residual blocks' inputs
        stay, plus one block's activations while it is recomputed. ``TRAINING_CALIBRATION`` scales the
        count to the measured peak RSS (bench/memory.py --train), ``CHECKPOINTED_CALIBRATION`` the
    checkpointed count.
    """
    from mriad.models.unet import ResBlock

    meta = copy.deepcopy(net).to("meta").train()
    meta.checkpointing = False  # type: ignore[assignment]  # count every block's activations, then the checkpointed peak
    channels = next(m for m in net.modules() if isinstance(m, nn.Conv2d)).in_channels  # the stem's input
    x = torch.zeros(1, channels, height, width, device="meta")
    t = torch.zeros(1, dtype=torch.long, device="meta")
    saved, inside, block_inputs = saved_tensor_bytes(meta, (x, t), (ResBlock,))
    checkpointed = saved - sum(inside) + block_inputs + (max(inside) if inside else 0)
    states = 4 * sum(p.numel() * p.element_size() for p in net.parameters())
    return TrainingMemory(
        states, int(TRAINING_CALIBRATION * batch * saved), int(CHECKPOINTED_CALIBRATION * batch * checkpointed)
    )


def free_memory(device: torch.device) -> int:
    """Bytes a new allocation can take now: free GPU memory, or the RAM the system can hand out."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return available_memory()


def check_training_memory(
    estimate: TrainingMemory, *, batch: int, checkpointing: bool, device: torch.device, free: int | None = None
) -> None:
    """Refuse, in one line saying what to change, a training step that cannot fit (10% headroom)."""
    from mriad.infra.errors import MriadError

    free = free_memory(device) if free is None else free
    budget = int(0.9 * free)
    need = estimate.total(checkpointing)
    if need <= budget:
        return
    per_slice = (estimate.checkpointed_activations if checkpointing else estimate.activations) / max(1, batch)
    fits = int((budget - estimate.states) // per_slice) if per_slice and budget > estimate.states else 0
    advice = [f"--batch-size {fits} or less"] if fits >= 1 else []
    if not checkpointing and estimate.total(True) <= budget:
        advice.append(f"--set checkpointing=true (about {estimate.total(True) / GIB:.1f} GiB)")
    advice.append("fewer --channels")
    raise MriadError(
        f"--batch-size {batch}: one training step needs about {need / GIB:.1f} GiB on {device} "
        f"({estimate.states / GIB:.1f} GiB weights and optimiser, the rest activations), "
        f"{free / GIB:.1f} GiB is free; use {' or '.join(advice)}"
    )


def guard_training(
    cls: Any, options: dict[str, Any], slice_shape: tuple[int, ...], device: torch.device, depth: int = 1
) -> None:
    """The memory check `mriad train` runs, for every model, before building it.

    ``slice_shape`` is the training slices' ``(N, C, H, W)``, ``depth`` the slices per volume (what a
    batch item of a volume model holds). A model whose estimate cannot be counted (an operation the
    meta device lacks) trains unchecked, with a warning: the estimate must never stop a run that
    would have worked.
    """
    from mriad.infra.console import warn
    from mriad.infra.errors import MriadError

    batch = int(options["batch_size"])
    channels, height, width = (int(v) for v in slice_shape[-3:])
    try:
        estimate = cls.estimate_training_memory(options, batch, height, width, channels=channels, depth=depth)
    except MriadError:
        raise
    except Exception as exc:  # noqa: BLE001  # any failure of the count itself
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        warn(f"model {cls.name}: training memory not estimated ({type(exc).__name__}: {first}); not checked")
        return
    if estimate is not None:
        checkpointing = bool(options.get("checkpointing", False))
        check_training_memory(estimate, batch=batch, checkpointing=checkpointing, device=device)


def check_inference_memory(model: Any, stack_shape: tuple[int, ...], device: torch.device) -> None:
    """Refuse, in one line, a reconstruction group that cannot fit even with one input per call.

    ``stack_shape`` is the group's ``(V, S, C, H, W)``. Models that chunk their network calls
    declare :meth:`AnomalyModel.inference_bytes`: then the weights, about eight float32 copies of the
    group (input, noise, noised input, sum, reconstruction, score and their host copies) and one
    network input's activations. Every other model sends the group through at once: its
    ``score_volumes`` is counted on the "meta" device (:func:`mriad.runtime.footprint.counted_inference_bytes`).
    """
    from mriad.infra.errors import MriadError

    volumes, height, width = int(stack_shape[0]), int(stack_shape[-2]), int(stack_shape[-1])
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    per_input = model.inference_bytes(height, width)
    if per_input is not None:
        group = 8 * 4 * int(torch.Size(stack_shape).numel())
        need = weights + group + int(per_input)
        detail = f"{group / GIB:.1f} GiB for the group's volumes"
    else:
        from mriad.infra.console import warn
        from mriad.runtime.footprint import counted_inference_bytes

        try:
            group = counted_inference_bytes(model, tuple(int(v) for v in stack_shape))
        except Exception as exc:  # noqa: BLE001  # a failed count must not stop a reconstruction that fits
            warn(f"model {model.name}: reconstruction memory not estimated ({type(exc).__name__}); not checked")
            return
        need = weights + group
        detail = f"{group / GIB:.1f} GiB for the group's {volumes * int(stack_shape[1])} slices at once"
    free = free_memory(device)
    if need > 0.9 * free:
        raise MriadError(
            f"--volumes-per-batch {volumes}: reconstructing needs about {need / GIB:.1f} GiB on {device} "
            f"({detail}), {free / GIB:.1f} GiB is free; use a smaller --volumes-per-batch or another device"
        )
