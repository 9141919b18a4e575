"""Running a network over many inputs in fixed-shape calls: precision, layout, compilation, chunks.

Any model whose reconstruction is "the same network over a long list of inputs" can hand that list
to :class:`InferenceExecutor`. It

- cuts the list into calls of one fixed size (the last call padded with zeros), so results do not
  depend on the chunking, a compiled network traces once and CUDA graphs can replay;
- runs them under bf16 autocast when asked (``precision``; "auto" = bf16 on CUDA, fp32 elsewhere);
- converts the weights and inputs to channels_last when asked (default: on CUDA only);
- compiles the network with torch.compile when asked, once per (network, mode, device);
- sizes the calls from a per-input memory estimate and the free memory (:mod:`mriad.runtime.memory`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mriad.infra.errors import MriadError
from mriad.runtime.memory import available_memory

PRECISIONS = ("auto", "fp32", "bf16")
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# Default upper bounds on network inputs per call: 64 paper-size forwards (~10 TFLOP) fill a GPU;
# on a CPU, calls of <= 8 keep their activations in cache (bench/reconstruct.py: 1.6-1.9x faster per
# slice than calls of 50 slices).
CPU_CHUNK = 8
CUDA_CHUNK = 64


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512_BF16 or AMX), where autocast can pay."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool({"avx512_bf16", "amx_bf16"} & flags)
    except OSError:
        pass
    return False


@dataclass(frozen=True)
class InferenceSettings:
    """How reconstruction runs the network; None means "the device's default"."""

    precision: str = "auto"
    channels_last: bool | None = None
    compile: str | None = None
    max_chunk: int | None = None

    def updated(
        self,
        *,
        precision: str | None = None,
        channels_last: bool | None = None,
        compile: str | None = None,
        max_chunk: int | None = None,
    ) -> InferenceSettings:
        """A copy with the given settings changed (None keeps one); invalid values are refused."""
        changes: dict[str, Any] = {}
        if precision is not None:
            if precision not in PRECISIONS:
                raise MriadError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
            changes["precision"] = precision
        if channels_last is not None:
            changes["channels_last"] = bool(channels_last)
        if compile is not None:
            if compile not in COMPILE_MODES:
                raise MriadError(f"compile must be one of {', '.join(COMPILE_MODES)}, got {compile!r}")
            changes["compile"] = None if compile == "none" else compile
        if max_chunk is not None:
            changes["max_chunk"] = max(1, int(max_chunk))
        return dataclasses.replace(self, **changes)

    def bf16(self, device: torch.device) -> bool:
        return self.precision == "bf16" or (self.precision == "auto" and device.type == "cuda")

    def nhwc(self, device: torch.device) -> bool:
        return self.channels_last if self.channels_last is not None else device.type == "cuda"


def training_autocast(precision: str, device: torch.device) -> Callable[[], Any] | None:
    """The autocast context factory a training step runs under (None: fp32), from ``train_precision``."""
    if precision not in PRECISIONS:
        raise MriadError(f"train_precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


def memory_budget(device: torch.device) -> int:
    """Bytes reconstruction may spend on activations: half the free GPU memory, a quarter of the RAM."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0] // 2)
    return available_memory() // 4


def chunk_limit(
    per_input_bytes: int, device: torch.device, memory_bytes: int | None = None, cap: int | None = None
) -> int:
    """Inputs per call that fit ``memory_bytes`` (default: :func:`memory_budget`), at most ``cap``.

    ``cap`` defaults to the device's cache-friendly size (8 on a CPU, 64 on CUDA) when the budget is
    the device's own, and to 4096 when a budget is given.
    """
    if cap is None:
        cap = (CUDA_CHUNK if device.type == "cuda" else CPU_CHUNK) if memory_bytes is None else 4096
    if memory_bytes is None:
        memory_bytes = memory_budget(device)
    return int(max(1, min(cap, memory_bytes // max(1, per_input_bytes))))


class InferenceExecutor:
    """Runs one network's inference calls under :class:`InferenceSettings` (see the module doc).

    The compiled network is kept with the network it was made from (a strong reference, compared by
    identity), so a replaced network is never served by a stale compilation. It is kept out of any
    ``state_dict``: the executor is a plain attribute, not a submodule.
    """

    def __init__(self, settings: InferenceSettings | None = None):
        self.settings = settings or InferenceSettings()
        self._compiled: tuple[nn.Module, str, str, Callable[..., torch.Tensor]] | None = None

    def configure(self, **settings: Any) -> None:
        self.settings = self.settings.updated(**settings)

    def prepare(self, net: nn.Module, device: torch.device) -> tuple[Callable[..., torch.Tensor], bool, Any]:
        """(callable, channels_last, autocast context) for running ``net`` on ``device`` now."""
        channels_last = self.settings.nhwc(device)
        layout = torch.channels_last if channels_last else torch.contiguous_format
        if any(p.dim() == 4 and not p.is_contiguous(memory_format=layout) for p in net.parameters()):
            net.to(memory_format=layout)  # type: ignore[call-overload]  # once: the weights keep this layout
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.settings.bf16(device))
        mode = self.settings.compile
        if mode is None:
            return net, channels_last, autocast
        cached = self._compiled
        if cached is None or cached[0] is not net or cached[1] != mode or cached[2] != str(device):
            cached = (net, mode, str(device), torch.compile(net, mode=mode, dynamic=False))
            self._compiled = cached
        return cached[3], channels_last, autocast

    def run(
        self,
        net: nn.Module,
        device: torch.device,
        count: int,
        chunk: int,
        make_input: Callable[[int, int], torch.Tensor],
        consume: Callable[[int, int, torch.Tensor], None],
        extra: tuple[torch.Tensor, ...] = (),
    ) -> None:
        """``consume(start, stop, net(make_input(start, stop), *extra))`` for each chunk of ``count``.

        Every call has exactly ``chunk`` inputs: ``extra`` tensors are sized for ``chunk`` and the last
        call's input is padded with zeros (its padded outputs are dropped before ``consume``, which
        receives float32). The loop never reads a value back to the host.
        """
        forward, channels_last, autocast = self.prepare(net, device)
        with autocast if autocast is not None else contextlib.nullcontext():
            for start in range(0, count, chunk):
                stop = min(start + chunk, count)
                net_in = make_input(start, stop)
                real = stop - start
                if real < chunk:
                    net_in = torch.cat([net_in, net_in.new_zeros((chunk - real, *net_in.shape[1:]))])
                if channels_last:
                    net_in = net_in.contiguous(memory_format=torch.channels_last)
                consume(start, stop, forward(net_in, *extra)[:real].float())
