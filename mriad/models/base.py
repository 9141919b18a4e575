"""The interface every registered model implements, so one engine trains and scores them all.

A model sees 2D axial slices ``(N, 1, H, W)`` with intensities in [0, 1] (it rescales internally if
it wants, e.g. diffusion models use 2x-1). Training: :meth:`AnomalyModel.training_step` (default:
one optimiser on :meth:`training_loss`); GANs override it. Scoring: :meth:`reconstruct` then
:meth:`anomaly_score`.

What the reconstruct stage may use is declared here, with defaults, so the stage never probes a
model: ``batch_kind`` (slices or whole volumes; the stage always calls :meth:`reconstruct_volumes`),
``accepts_mask`` (the stage reads each subject's brain mask and passes it to
:meth:`reconstruct_volumes` only then), ``inference_options`` and :meth:`configure_inference`
(settings such as precision or compilation; a model without them refuses any value, so a flag is
never silently ignored) and :meth:`max_batch` (slices per network call).

Memory is estimated before anything is allocated, for every model through the same calls:
:meth:`estimate_training_memory` (by default counted on the "meta" device from
:meth:`training_probes`) and, at reconstruction, :meth:`inference_bytes` (see
:mod:`mriad.runtime.footprint`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import nn


class AnomalyModel(nn.Module):
    """Base class. Subclasses set ``name``, ``paper``, ``summary`` and ``defaults``.

    ``defaults`` holds every hyperparameter (network sizes and training settings); it is the single
    source of the ``mriad train`` flags and is stored in checkpoints, so a model can be rebuilt from
    its checkpoint alone.
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    # Training settings shared by all models unless a model overrides them in ``defaults``.
    common_defaults: ClassVar[dict[str, Any]] = {
        "lr": 1e-4,
        "batch_size": 32,
        "epochs": 1600,
        "val_every": 10,
        # auto: bf16 autocast on CUDA, fp32 on a CPU; bf16 forces autocast (CPUs with native bf16).
        "train_precision": "auto",
    }
    trainable: ClassVar[bool] = True
    # "slices": batches of random slices (N,1,H,W); "volumes": batches of whole slice stacks (N,S,1,H,W).
    batch_kind: ClassVar[str] = "slices"
    # Whether reconstruct_volumes uses a brain mask (boxes/slices without brain may skip the network).
    accepts_mask: ClassVar[bool] = False
    # The keyword arguments configure_inference accepts (none by default).
    inference_options: ClassVar[tuple[str, ...]] = ()
    # Options that only change how a trained network scores (never the weights): a run's config.json
    # value wins over its checkpoint's, so `mriad variant` can give one network other test-time settings.
    test_time_options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **config: Any):
        super().__init__()
        self.config = self.resolve_config(config)

    @classmethod
    def resolve_config(cls, overrides: dict[str, Any]) -> dict[str, Any]:
        merged = {**cls.common_defaults, **cls.defaults}
        unknown = sorted(set(overrides) - set(merged))
        if unknown:
            from mriad.infra.errors import MriadError

            raise MriadError(f"model {cls.name}: unknown option(s) {', '.join(unknown)}; known: {', '.join(merged)}")
        for key, value in overrides.items():
            if value is not None:
                default = merged[key]
                merged[key] = _coerce(value, default)
        return merged

    # ---- training -------------------------------------------------------------------------------
    @classmethod
    def estimate_training_memory(
        cls, config: dict[str, Any], batch: int, height: int, width: int, *, channels: int = 1, depth: int = 1
    ) -> Any:
        """Peak memory of one training step (a ``mriad.runtime.memory.TrainingMemory``) of ``batch``
        items: slices ``(channels, height, width)``, or stacks of ``depth`` of them for volume models.

        By default counted on the "meta" device from :meth:`training_probes`
        (:func:`mriad.runtime.footprint.counted_training_memory`); nothing is allocated.
        """
        from mriad.runtime.footprint import counted_training_memory, item_shape

        item = item_shape(cls.batch_kind, (channels, height, width), depth)
        return counted_training_memory(cls, config, batch, item)

    def training_probes(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
        """The forward passes of a training step, one loss each, without side effects (no counters
        advanced, no host reads: they also run on the "meta" device). Memory is counted and a step
        timed on the largest; by default the training loss. A model whose steps differ (a GAN's
        phases) yields one loss per kind of step."""
        yield self.training_loss(batch, generator)

    def loss_normalisation(self) -> str:
        """What the logged loss is averaged over, written beside it in metrics.csv: "image" (every
        pixel of the slice) unless a model says otherwise (pDDPM's box loss: "box" or "image")."""
        return "image"

    def training_loss(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        fused = any(p.is_cuda for p in self.parameters())
        return [torch.optim.Adam(self.parameters(), lr=float(self.config["lr"]), fused=fused or None)]

    def training_step(
        self,
        batch: torch.Tensor,
        optimizers: list[torch.optim.Optimizer],
        generator: torch.Generator | None = None,
        autocast: Any = None,
    ) -> dict[str, float | torch.Tensor]:
        """One optimisation step; returns losses (tensors are fine: the engine syncs them rarely)."""
        (optimizer,) = optimizers
        optimizer.zero_grad(set_to_none=True)
        with autocast() if autocast is not None else contextlib.nullcontext():
            loss = self.training_loss(batch, generator)
        loss.backward()
        optimizer.step()
        return {"loss": loss.detach()}

    @torch.no_grad()
    def validation_loss(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Loss on healthy validation slices; by default the training loss without gradients."""
        return self.training_loss(batch, generator)

    # ---- scoring ------------------------------------------------------------------------------
    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reconstruct slices ``(N, 1, H, W)``; the caller chunks ``N`` to fit memory."""
        raise NotImplementedError

    @torch.no_grad()
    def reconstruct_volumes(
        self, volumes: torch.Tensor, generator: torch.Generator | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Reconstruct slice stacks ``(V, S, 1, H, W)``; slice models flatten them.

        ``mask`` (the stacks' brain masks, same shape) is only used by models with ``accepts_mask``.
        """
        v, s = volumes.shape[:2]
        return self.reconstruct(volumes.flatten(0, 1), generator).unflatten(0, (v, s))

    def configure_inference(self, **settings: Any) -> AnomalyModel:
        """Set how reconstruction runs (keys: ``inference_options``; None keeps a setting); returns self.

        The default model has no settings: any value given is refused with one line naming the flags.
        """
        requested = {key: value for key, value in settings.items() if value is not None}
        unknown = {key: value for key, value in requested.items() if key not in self.inference_options}
        if unknown:
            from mriad.infra.errors import MriadError

            flags = " ".join(f"--{key.replace('_', '-')} {value}" for key, value in unknown.items())
            raise MriadError(f"model {self.name} has no inference settings (precision, compile, chunk); drop {flags}")
        return self

    def anomaly_score(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        return (x - x_hat).abs()

    @torch.no_grad()
    def score_volumes(
        self, volumes: torch.Tensor, generator: torch.Generator | None = None, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_hat, score)`` of slice stacks ``(V, S, 1, H, W)``: what the reconstruct stage writes.

        By default :meth:`reconstruct_volumes` then :meth:`anomaly_score`; models whose score needs
        more than one reconstruction (ensembles, Mahalanobis scoring) override it.
        """
        x_hat = self.reconstruct_volumes(volumes, generator, mask=mask)
        return x_hat, self.anomaly_score(volumes, x_hat)

    def max_batch(self, height: int, width: int, memory_bytes: int | None = None) -> int:
        """Slices per network call that fit ``memory_bytes`` (a rough, model-specific estimate)."""
        return 64

    def inference_bytes(self, height: int, width: int) -> int | None:
        """Activation bytes of one network input at inference, for models that chunk their network
        calls (the reconstruct stage's memory check then counts one input per call). None (the
        default): the whole group goes through at once, and the check counts :meth:`score_volumes`
        on the "meta" device instead (:func:`mriad.runtime.footprint.counted_inference_bytes`)."""
        return None


def _coerce(value: Any, default: Any) -> Any:
    """Convert CLI strings to the default's type (``"48"`` -> 48, ``"1,2,2"`` -> (1, 2, 2))."""
    if isinstance(value, str) and not isinstance(default, str):
        if isinstance(default, bool):
            return value.lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, tuple | list):
            return tuple(type(default[0])(v) if default else v for v in value.split(","))
    if isinstance(default, tuple) and isinstance(value, list):
        return tuple(value)
    return value
