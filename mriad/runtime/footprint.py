"""Peak memory of any model, counted on the "meta" device (no arithmetic, no memory, any size).

Training: the model is built on the meta device from its config and each of its training probes
(:meth:`~mriad.models.base.AnomalyModel.training_probes`, by default the training loss) runs on a
meta batch under autograd's saved-tensor hooks. A step's peak, besides weights, gradients and
Adam's moments, is what autograd keeps for the backward pass plus the backward's own gradients,
about two of the size of the largest saved tensor (``BACKWARD_TRANSIENTS``: that term is what
separates the conv autoencoders' measured peak from their saved bytes). Counted at two batch
sizes, so a part that does not grow with the batch is not multiplied by it.

Inference: the model's :meth:`score_volumes` runs on a meta group under a dispatch mode that adds
up every freshly allocated tensor while it lives (views and in-place results share storage and are
not counted); its high-water mark is the peak. This is for models that send a whole group through
the network at once; the diffusion models, which chunk their network calls, declare bytes per
network input instead (:meth:`~mriad.models.base.AnomalyModel.inference_bytes`).

Both counts are scaled to the measured peak RSS growth (bench/memory.py --baselines, CPU, fp32;
bench/RESULTS.md): the allocator and oneDNN's own buffers are not in the count.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from mriad.runtime.memory import TrainingMemory

if TYPE_CHECKING:
    from mriad.models.base import AnomalyModel

# Measured peak RSS growth against the count (bench/memory.py --baselines, CPU, fp32, AE, VAE, DAE,
# f-AnoGAN, SVAE at 96x96; bench/RESULTS.md): training 0.8-1.4x (the conv autoencoders highest),
# inference 1.2-1.7x plus a few tens of MB. The largest ratios, rounded up: the guards err towards
# refusing (by up to ~1.7x for the models measured lowest).
BACKWARD_TRANSIENTS = 2
COUNTED_TRAINING_CALIBRATION = 1.4
COUNTED_INFERENCE_CALIBRATION = 1.7
INFERENCE_OVERHEAD = 64 << 20  # the intercept of peak RSS growth against the count (oneDNN, allocator)
# Batch sizes the training count is taken at (two, so the part that grows with the batch is known;
# at least 2, as batch norm refuses a single sample whose feature map is 1 x 1).
_COUNT_ITEMS = (2, 4)


def item_shape(batch_kind: str, slice_shape: tuple[int, ...], depth: int) -> tuple[int, ...]:
    """One batch item: a slice ``(C, H, W)``, or for volume models a stack ``(depth, C, H, W)``.

    ``slice_shape`` is the training slices' ``(N, C, H, W)`` (only the last three are read).
    """
    one = tuple(int(v) for v in slice_shape[-3:])
    return (int(depth), *one) if batch_kind == "volumes" else one


def meta_model(cls: type[AnomalyModel], config: dict[str, Any]) -> AnomalyModel:
    """The model built from ``config`` on the meta device: shapes only, nothing allocated."""
    with torch.device("meta"):
        return cls(**config)


def state_bytes(model: torch.nn.Module) -> int:
    """Weights, their gradients and Adam's two moments."""
    return 4 * sum(p.numel() * p.element_size() for p in model.parameters())


class _SavedBytes:
    """Saved-tensor pack hook: adds up what autograd keeps (parameters, their views and repeats left out)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.params = {id(p) for p in model.parameters()}
        self.reset()

    def reset(self) -> None:
        self.seen: dict[int, torch.Tensor] = {}  # keeps the tensors alive, so ids are not reused
        self.total = 0
        self.largest = 0

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        owner = tensor if tensor._base is None else tensor._base  # a linear layer saves its weight's transpose
        if id(owner) not in self.params and id(tensor) not in self.seen:
            self.seen[id(tensor)] = tensor
            nbytes = tensor.numel() * tensor.element_size()
            self.total += nbytes
            self.largest = max(self.largest, nbytes)
        return tensor

    def step_peak(self) -> int:
        return self.total + BACKWARD_TRANSIENTS * self.largest


def probe_saved_bytes(model: AnomalyModel, batch: torch.Tensor) -> int:
    """The largest step peak (saved bytes plus the backward's gradients) of the model's training probes.

    Each probe is counted alone (a step runs one of them: a GAN's critic or encoder phase), and its
    graph is dropped before the next one runs.
    """
    counter = _SavedBytes(model)
    worst = 0
    probes: Iterator[torch.Tensor] = iter(model.training_probes(batch, None))
    with torch.enable_grad():
        while True:
            counter.reset()
            with torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda t: t):
                loss = next(probes, None)
            if loss is None:
                return worst
            worst = max(worst, counter.step_peak())
            del loss


def counted_training_memory(
    cls: type[AnomalyModel], config: dict[str, Any], batch: int, item: tuple[int, ...]
) -> TrainingMemory:
    """Peak memory of one training step of ``batch`` items of shape ``item`` (fp32, Adam), counted.

    The model has no checkpointing option: the checkpointed figure equals the plain one, so the
    guard never suggests it.
    """
    model = meta_model(cls, config).train()
    low, high = (probe_saved_bytes(model, torch.zeros((n, *item), device="meta")) for n in _COUNT_ITEMS)
    per_item = max(0.0, (high - low) / (_COUNT_ITEMS[1] - _COUNT_ITEMS[0]))
    fixed = max(0.0, low - per_item * _COUNT_ITEMS[0])
    activations = int(COUNTED_TRAINING_CALIBRATION * (fixed + per_item * batch))
    return TrainingMemory(state_bytes(model), activations, activations)


class _LivePeak(TorchDispatchMode):
    """Adds up every tensor an op allocates while it lives; ``peak`` is the high-water mark."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0

    def _free(self, nbytes: int) -> None:
        self.live -= nbytes

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        # A result whose schema aliases an argument (views, in-place and out= ops) is no new memory.
        if not any(r.alias_info is not None for r in func._schema.returns):
            for tensor in tree_leaves(out):
                if isinstance(tensor, torch.Tensor):
                    nbytes = int(tensor.untyped_storage().nbytes())
                    self.live += nbytes
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(tensor, self._free, nbytes)
        return out


def counted_peak_bytes(run: Any) -> int:
    """High-water mark of the bytes ``run()`` allocates (meta tensors: counted, not allocated)."""
    tracker = _LivePeak()
    with torch.no_grad(), tracker:
        run()
    return tracker.peak


def counted_inference_bytes(model: AnomalyModel, stack_shape: tuple[int, ...]) -> int:
    """Peak bytes (besides the weights and the input) of ``model.score_volumes`` on a ``(V, S, C, H, W)`` group."""
    meta = meta_model(type(model), dict(model.config)).eval()
    stack = torch.zeros(stack_shape, device="meta")
    counted = counted_peak_bytes(lambda: meta.score_volumes(stack))
    return int(COUNTED_INFERENCE_CALIBRATION * counted) + INFERENCE_OVERHEAD
