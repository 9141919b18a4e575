"""The diffusion models as mriad runs them: a UNet, a :class:`DiffusionProcess`, a set of boxes.

Training: per slice, pick a box, noise the box with q(x_t | x0) at a random t, keep the rest of the
slice clean as context, predict the clean slice x0, L1 loss (on the box or the whole slice).

Reconstruction: ONE network call per box at t_test (no iterative sampling). Every box of the grid,
of every slice, goes through the network in batched fixed-size calls (the
:class:`~mriad.runtime.inference.InferenceExecutor`); each call's prediction is kept inside its box
and the boxes are averaged where they overlap. The noise field is drawn once per slice and shared by
that slice's boxes (as the reference does). Given the brain mask, boxes without brain skip the
network (their pixels are never scored).

:class:`DiffusionModel` is the shared part; pDDPM (:mod:`mriad.models.pddpm`) adds the box options,
DDPM (:mod:`mriad.models.ddpm`) is the same model with one box covering the slice.

Multi-channel input (``in_channels`` C > 1, e.g. T2 + FLAIR; ``train`` sets it from the data):
the network sees and predicts all C channels, every channel of a box is noised (its own noise
field per channel), and the anomaly map is the channel mean of the per-channel score (residual
or Mahalanobis: :func:`channel_mean`), one map per slice as for single-channel data.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from mriad.infra.errors import MriadError
from mriad.models.base import AnomalyModel
from mriad.models.diffusion import (
    DIFFUSION_DEFAULTS,
    NOISES,
    SCHEDULES,
    DiffusionProcess,
    from_model_space,
    to_model_space,
)
from mriad.models.ensemble import SCORING_DEFAULTS, EnsemblePlan, Member
from mriad.models.patches import box_masks, boxes_with_brain, chunk_size, coverage, full_box
from mriad.models.unet import UNet
from mriad.runtime.inference import InferenceExecutor, chunk_limit
from mriad.runtime.memory import TrainingMemory, unet_inference_bytes, unet_training_memory

# Input channels of the network; `train` sets it from the data (1 for a 3D image.nii.gz).
CHANNEL_DEFAULTS: dict[str, Any] = {"in_channels": 1}


def channel_mean(score: torch.Tensor, dim: int = -3) -> torch.Tensor:
    """One anomaly map from per-channel maps: the mean over the channel axis (``(..., C, H, W)`` ->
    ``(..., 1, H, W)``); a one-channel map is returned as it is (bit-identical)."""
    return score if score.shape[dim] == 1 else score.mean(dim=dim, keepdim=True)


class DiffusionModel(AnomalyModel):
    """Shared implementation of pDDPM and DDPM; subclasses decide which boxes are noised."""

    defaults: ClassVar[dict[str, Any]] = {**DIFFUSION_DEFAULTS, **SCORING_DEFAULTS, **CHANNEL_DEFAULTS}
    accepts_mask: ClassVar[bool] = True
    inference_options: ClassVar[tuple[str, ...]] = ("precision", "channels_last", "compile", "max_chunk")
    test_time_options: ClassVar[tuple[str, ...]] = ("t_test", *SCORING_DEFAULTS)

    def __init__(self, **config: Any):
        super().__init__(**config)
        c = self.config
        self._check_choice("schedule", SCHEDULES)
        self._check_choice("noise", NOISES)
        if not 1 <= int(c["t_test"]) <= int(c["timesteps"]):
            raise MriadError(f"model {self.name}: t_test must lie in 1..{c['timesteps']}, got {c['t_test']}")
        if int(c["in_channels"]) < 1:
            raise MriadError(f"model {self.name}: in_channels must be at least 1, got {c['in_channels']}")
        self.net = UNet(
            in_channels=int(c["in_channels"]),
            out_channels=int(c["in_channels"]),
            base_channels=int(c["base_channels"]),
            channel_mult=tuple(int(m) for m in c["channel_mult"]),
            num_res_blocks=int(c["num_res_blocks"]),
            groups=int(c["groups"]),
            head_channels=int(c["head_channels"]),
            dropout=float(c["dropout"]),
            resblock_updown=bool(c["resblock_updown"]),
            checkpointing=bool(c["checkpointing"]),
        )
        # Derived from the config, so never saved in checkpoints.
        self.process = DiffusionProcess.from_config(c)
        # How reconstruct() runs the network; a plain attribute, so nothing of it enters the state_dict.
        self.executor = InferenceExecutor()
        # Several reconstructions per slice (noise draws, t, patch sizes) and how they are scored.
        self.plan = EnsemblePlan.from_config(c, self.name, self.ensemble_patch_size())

    @classmethod
    def estimate_training_memory(
        cls, config: dict[str, Any], batch: int, height: int, width: int, *, channels: int = 1, depth: int = 1
    ) -> TrainingMemory:
        """Counted on a copy built on the "meta" device: nothing is allocated, whatever the size
        (the UNet's stem gives the channels; slices only, so ``depth`` is unused)."""
        with torch.device("meta"):
            model = cls(**config)
        return unet_training_memory(model.net, batch, height, width)

    def _check_choice(self, key: str, allowed: tuple[str, ...]) -> None:
        if self.config[key] not in allowed:
            raise MriadError(f"model {self.name}: {key} must be one of {', '.join(allowed)}, got {self.config[key]!r}")

    # ---- boxes (overridden by PatchedDDPM) -----------------------------------------------------
    def grid(self, height: int, width: int) -> torch.Tensor:
        """Boxes reconstructed at test time, ``(K, 4)``."""
        return full_box(height, width)

    def member_grid(self, height: int, width: int, member: Member | None) -> torch.Tensor:
        """The boxes of an ensemble member (its patch size), else :meth:`grid`."""
        return self.grid(height, width)

    def ensemble_patch_size(self) -> int | None:
        """The patch size a patch ensemble varies (None: the model has no patches)."""
        return None

    def training_boxes(
        self, n: int, height: int, width: int, generator: torch.Generator | None, device: Any
    ) -> torch.Tensor:
        return full_box(height, width).to(device).expand(n, 4)

    def patch_loss(self) -> bool:
        return False

    def loss_normalisation(self) -> str:
        return "box"

    def noise(self, shape: tuple[int, ...], generator: torch.Generator | None, device: Any) -> torch.Tensor:
        return self.process.noise(shape, generator, device)

    # ---- training ------------------------------------------------------------------------------
    def training_loss(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """L1 between the predicted and the clean slice, on the noised box (L_p) or everywhere (L_rec).

        Draw order (t, boxes, noise) is fixed: resumed runs replay the same random stream.
        """
        x0 = to_model_space(batch.float())
        n, _, height, width = x0.shape
        device = x0.device
        t = self.process.sample_timesteps(n, generator, device)
        inside = box_masks(self.training_boxes(n, height, width, generator, device), height, width)
        eps = self.noise(tuple(x0.shape), generator, device)
        return self.process.training_loss(
            self._train_forward, x0, t, eps, inside,
            region_only=self.patch_loss(), normalisation=self.loss_normalisation(),
        )  # fmt: skip

    def _train_forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x_t.device.type == "cuda":  # cuDNN's tensor-core kernels want NHWC
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        return self.net(x_t, t)

    # ---- scoring -------------------------------------------------------------------------------
    def configure_inference(self, **settings: Any) -> DiffusionModel:
        """Set how :meth:`reconstruct` runs the network (None keeps a setting); returns the model.

        ``precision``: "auto" (bf16 autocast on CUDA, fp32 elsewhere), "fp32" or "bf16".
        ``channels_last``: NHWC activations and weights (default: on CUDA, where cuDNN's tensor-core
        kernels want it; off on a CPU: oneDNN's NHWC kernels are 10-20% faster there but round
        differently, up to 3e-4 on near-empty slices, whose GroupNorm statistics amplify rounding;
        NCHW keeps CPU results bit-identical to a plain per-box loop).
        ``compile``: a torch.compile mode ("default", "reduce-overhead" = CUDA graphs,
        "max-autotune") or "none"; every call of one reconstruction has the same shape, so a compiled
        network is traced once per chunk size.
        ``max_chunk``: an upper bound on network inputs per call (default: from free memory).
        """
        super().configure_inference(**settings)  # refuses keys outside inference_options
        self.executor.configure(**settings)
        return self

    @torch.no_grad()
    def reconstruct(
        self,
        x: torch.Tensor,
        generator: torch.Generator | None = None,
        mask: torch.Tensor | None = None,
        member: Member | None = None,
    ) -> torch.Tensor:
        """Reconstruct slices ``(N, C, H, W)`` (not clipped to [0, 1]): all boxes x all slices, batched, stitched.

        ``generator`` fixes the noise (default: a generator seeded with 0, so results repeat).
        ``mask`` (N, 1, H, W), optional: boxes without any brain voxel skip the network and keep the
        input. A pixel inside the mask is only covered by boxes that hold brain, so the map inside the
        mask is bit-identical with and without the mask: every network call has the same batch size
        (chosen from N x K, the last call padded) and a sample's output does not depend on its
        neighbours in a fixed-shape call.
        ``member``: an ensemble member's noise level and patch size instead of t_test and the grid.
        """
        device = next(self.parameters()).device
        x0 = to_model_space(x.to(device, non_blocking=True).float())
        n, _, height, width = x0.shape
        if generator is None:
            generator = torch.Generator(device=device).manual_seed(0)
        boxes = self.member_grid(height, width, member).to(device)
        inside = box_masks(boxes, height, width)  # (K, 1, H, W)
        k = boxes.shape[0]
        eps = self.noise(tuple(x0.shape), generator, device)
        index = self.process.test_index if member is None else member.t_test - 1
        x_t = self.process.q_sample(x0, torch.full((n,), index, device=device, dtype=torch.long), eps)

        total = torch.zeros_like(x0)
        if mask is None:
            pair_slice = torch.arange(n, device=device).repeat_interleave(k)
            pair_box = torch.arange(k, device=device).repeat(n)
        else:
            needed = boxes_with_brain(boxes, mask.to(device, non_blocking=True).expand(n, 1, height, width))
            pair_slice, pair_box = needed.nonzero(as_tuple=True)  # row-major: the unmasked order
            skipped_slice, skipped_box = (~needed).nonzero(as_tuple=True)
            total.index_add_(0, skipped_slice, x0[skipped_slice] * inside[skipped_box])

        chunk = self.inference_chunk(n * k, height, width)  # from N x K alone: the same with or without a mask
        t = torch.full((chunk,), index, device=device, dtype=torch.long)

        def make_input(start: int, stop: int) -> torch.Tensor:
            s = pair_slice[start:stop]
            return torch.where(inside[pair_box[start:stop]], x_t[s], x0[s])

        def consume(start: int, stop: int, out: torch.Tensor) -> None:
            # Each prediction counts inside its box only (scatter-add over the pairs' slices).
            total.index_add_(0, pair_slice[start:stop], out * inside[pair_box[start:stop]])

        self.executor.run(self.net, device, pair_slice.numel(), chunk, make_input, consume, extra=(t,))
        return from_model_space(total / coverage(inside))

    @torch.no_grad()
    def reconstruct_volumes(
        self, volumes: torch.Tensor, generator: torch.Generator | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """All the stacks' slices in one :meth:`reconstruct` (with the masks, flattened alike, if given)."""
        flat_mask = None if mask is None else mask.flatten(0, 1)
        return self.reconstruct(volumes.flatten(0, 1), generator, mask=flat_mask).unflatten(0, volumes.shape[:2])

    @torch.no_grad()
    def score_volumes(
        self, volumes: torch.Tensor, generator: torch.Generator | None = None, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_hat, score)``: one reconstruction and its residual, or the ensemble of :attr:`plan`.

        ``x_hat`` has the input's C channels, ``score`` one (the channel mean, :func:`channel_mean`).
        """
        if self.plan.is_single():
            x_hat, score = super().score_volumes(volumes, generator, mask)
            return x_hat, channel_mean(score)
        x = volumes.flatten(0, 1).to(next(self.parameters()).device).float()
        flat_mask = None if mask is None else mask.flatten(0, 1).to(x.device)
        if generator is None:
            generator = torch.Generator(device=x.device).manual_seed(0)
        x_hat, score = self.plan.run(x, lambda m: self.reconstruct(x, generator, flat_mask, member=m), flat_mask)
        return x_hat.unflatten(0, volumes.shape[:2]), channel_mean(score).unflatten(0, volumes.shape[:2])

    def inference_chunk(self, pairs: int, height: int, width: int) -> int:
        """Network inputs per call when reconstructing ``pairs`` (slice, box) pairs (see chunk_size)."""
        user = self.executor.settings.max_chunk
        if user:  # the user's size replaces the device default, memory permitting
            limit = min(user, self.max_batch(height, width, cap=4096))
        else:
            limit = self.max_batch(height, width)
        return chunk_size(pairs, limit)

    def inference_bytes(self, height: int, width: int) -> int:
        return unet_inference_bytes(height, width, int(self.config["base_channels"]))

    def max_batch(self, height: int, width: int, memory_bytes: int | None = None, cap: int | None = None) -> int:
        """Network inputs per call that fit ``memory_bytes`` (at most ``cap``; see runtime.chunk_limit)."""
        device = next(self.parameters()).device
        return chunk_limit(self.inference_bytes(height, width), device, memory_bytes, cap)
