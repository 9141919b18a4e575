"""pDDPM (Behrendt et al., MIDL 2023): a DDPM whose forward process noises only a box of the slice.

Training: per slice, pick a box (a random box of the fixed grid, or a uniformly random position),
noise the box with q(x_t | x0) at a random t, keep the rest of the slice clean as context, predict
the clean slice x0, L1 loss on the box (``loss=patch``, L_p, the paper's best) or the whole slice
(``loss=full``, L_rec).

Reconstruction: ONE network call per box at t_test (no iterative sampling). Every box of the grid,
of every slice, goes through the network in batched calls (chunked to fit memory); each call's
prediction is kept inside its box and the boxes are averaged where they overlap. The noise field is
drawn once per slice and shared by that slice's boxes (as the reference does).

:class:`DiffusionModel` holds everything; :class:`PatchedDDPM` adds the box options; plain DDPM
(:mod:`mriad.models.ddpm`) is the same model with one box covering the slice.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from mriad.errors import MriadError
from mriad.models.base import AnomalyModel
from mriad.models.diffusion import (
    NOISES,
    SCHEDULES,
    alphas_cumprod,
    draw_device,
    from_model_space,
    make_betas,
    make_noise,
    q_sample,
    sample_timesteps,
    to_model_space,
)
from mriad.models.patches import box_masks, coverage, full_box, grid_boxes, random_boxes
from mriad.models.unet import UNet

_DIFFUSION_DEFAULTS: dict[str, Any] = {
    "schedule": "linear",
    "noise": "simplex",
    "timesteps": 1000,
    "t_test": 500,
    "octaves": 6,
    "persistence": 0.8,
    "frequency": 64.0,
    "normalise_noise": False,
    "base_channels": 128,
    "channel_mult": (1, 2, 2),
    "num_res_blocks": 3,
    "groups": 32,
    "head_channels": 64,
    "dropout": 0.0,
    "resblock_updown": True,
    "lr": 1e-5,
    "batch_size": 32,
    "epochs": 1600,
    "val_every": 10,
}

# Rough activation bytes per image per pixel per base channel at inference, fp32: the encoder's skips
# (~6 x base full-resolution maps) plus the decoder's widest transients (concat, fp32 GroupNorm copy,
# activation, output: ~12 x base), times 4 bytes. An analytic estimate, not measured on a GPU.
_BYTES_PER_PIXEL_CHANNEL = 80


class DiffusionModel(AnomalyModel):
    """Shared implementation of pDDPM and DDPM; subclasses decide which boxes are noised."""

    defaults: ClassVar[dict[str, Any]] = dict(_DIFFUSION_DEFAULTS)

    def __init__(self, **config: Any):
        super().__init__(**config)
        c = self.config
        self._check_choice("schedule", SCHEDULES)
        self._check_choice("noise", NOISES)
        if not 1 <= int(c["t_test"]) <= int(c["timesteps"]):
            raise MriadError(f"model {self.name}: t_test must lie in 1..{c['timesteps']}, got {c['t_test']}")
        self.net = UNet(
            in_channels=1,
            out_channels=1,
            base_channels=int(c["base_channels"]),
            channel_mult=tuple(int(m) for m in c["channel_mult"]),
            num_res_blocks=int(c["num_res_blocks"]),
            groups=int(c["groups"]),
            head_channels=int(c["head_channels"]),
            dropout=float(c["dropout"]),
            resblock_updown=bool(c["resblock_updown"]),
        )
        # Derived from the config, so not saved in checkpoints; float64 (cast when applied).
        betas = make_betas(str(c["schedule"]), int(c["timesteps"]))
        self.register_buffer("alpha_bar", alphas_cumprod(betas), persistent=False)

    def _check_choice(self, key: str, allowed: tuple[str, ...]) -> None:
        if self.config[key] not in allowed:
            raise MriadError(f"model {self.name}: {key} must be one of {', '.join(allowed)}, got {self.config[key]!r}")

    # ---- boxes (overridden by PatchedDDPM) -----------------------------------------------------
    def grid(self, height: int, width: int) -> torch.Tensor:
        """Boxes reconstructed at test time, ``(K, 4)``."""
        return full_box(height, width)

    def training_boxes(
        self, n: int, height: int, width: int, generator: torch.Generator | None, device: Any
    ) -> torch.Tensor:
        return full_box(height, width).to(device).expand(n, 4)

    def patch_loss(self) -> bool:
        return False

    # ---- noise ---------------------------------------------------------------------------------
    def noise(self, shape: tuple[int, ...], generator: torch.Generator | None, device: Any) -> torch.Tensor:
        c = self.config
        return make_noise(
            str(c["noise"]),
            shape,
            generator=generator,
            device=device,
            octaves=int(c["octaves"]),
            persistence=float(c["persistence"]),
            frequency=float(c["frequency"]),
            normalise=bool(c["normalise_noise"]),
        )

    # ---- training ------------------------------------------------------------------------------
    def training_loss(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """L1 between the predicted and the clean slice, on the noised box (L_p) or everywhere (L_rec).

        Draw order (t, boxes, noise) is fixed: resumed runs replay the same random stream.
        """
        x0 = to_model_space(batch.float())
        n, _, height, width = x0.shape
        device = x0.device
        t = sample_timesteps(n, int(self.config["timesteps"]), generator, device)
        boxes = self.training_boxes(n, height, width, generator, device)
        inside = box_masks(boxes, height, width)
        eps = self.noise(tuple(x0.shape), generator, device)
        # Context stays clean: only the box carries the noised image.
        x_t = torch.where(inside, q_sample(x0, t, eps, self.alpha_bar), x0)
        if x_t.device.type == "cuda":
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        error = (self.net(x_t, t).float() - x0).abs()
        if self.patch_loss():
            weight = inside.to(error.dtype)
            return (error * weight).sum() / (weight.sum() * error.shape[1])
        return error.mean()

    # ---- scoring -------------------------------------------------------------------------------
    @torch.no_grad()
    def reconstruct(
        self, x: torch.Tensor, generator: torch.Generator | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Reconstruct slices ``(N, 1, H, W)`` in [0, 1]: all boxes x all slices, batched, stitched.

        ``generator`` fixes the noise (default: a generator seeded with 0, so results repeat).
        ``mask`` (N, 1, H, W), optional: boxes without any brain voxel skip the network and keep the
        input, which saves work on the empty border of a scan without changing scores inside it.
        """
        device = next(self.parameters()).device
        x0 = to_model_space(x.to(device).float())
        n, _, height, width = x0.shape
        if generator is None:
            generator = torch.Generator(device=device).manual_seed(0)
        boxes = self.grid(height, width).to(device)
        inside = box_masks(boxes, height, width)  # (K, 1, H, W)
        k = boxes.shape[0]
        eps = self.noise(tuple(x0.shape), generator, device)
        t_index = int(self.config["t_test"]) - 1
        x_t = q_sample(x0, torch.full((n,), t_index, device=device, dtype=torch.long), eps, self.alpha_bar)

        pair_slice = torch.arange(n, device=device).repeat_interleave(k)
        pair_box = torch.arange(k, device=device).repeat(n)
        total = torch.zeros_like(x0)
        if mask is not None:
            brain = mask.to(device).bool().expand(n, 1, height, width)
            has_brain = (brain[pair_slice] & inside[pair_box]).flatten(1).any(dim=1)
            skipped_slice, skipped_box = pair_slice[~has_brain], pair_box[~has_brain]
            total.index_add_(0, skipped_slice, x0[skipped_slice] * inside[skipped_box])
            pair_slice, pair_box = pair_slice[has_brain], pair_box[has_brain]

        chunk = max(1, self.max_batch(height, width))
        channels_last = device.type == "cuda"
        for start in range(0, pair_slice.numel(), chunk):
            s = pair_slice[start : start + chunk]
            b = pair_box[start : start + chunk]
            box = inside[b]
            net_in = torch.where(box, x_t[s], x0[s])
            if channels_last:
                net_in = net_in.contiguous(memory_format=torch.channels_last)
            t = torch.full((s.numel(),), t_index, device=device, dtype=torch.long)
            out = self.net(net_in, t).float()
            total.index_add_(0, s, out * box)  # scatter-add each box's prediction into its slice
        return from_model_space(total / coverage(inside))

    def max_batch(self, height: int, width: int, memory_bytes: int | None = None) -> int:
        """Network inputs per call that fit ``memory_bytes`` (default: half the free GPU memory; 32 on CPU)."""
        device = next(self.parameters()).device
        if memory_bytes is None:
            if device.type != "cuda":
                return 32  # CPU convolutions gain nothing from bigger batches, only memory
            free, _ = torch.cuda.mem_get_info(device)
            memory_bytes = free // 2
        per_image = _BYTES_PER_PIXEL_CHANNEL * height * width * int(self.config["base_channels"])
        return int(max(1, min(4096, memory_bytes // per_image)))


class PatchedDDPM(DiffusionModel):
    name: ClassVar[str] = "pddpm"
    paper: ClassVar[str] = (
        "Behrendt, Bhattacharya, Krüger, Opfer, Schlaefer: Patched Diffusion Models for Unsupervised "
        "Anomaly Detection in Brain MRI. MIDL 2023 (PMLR 227)."
    )
    summary: ClassVar[str] = (
        "Patched DDPM: the forward process noises one box of the slice, the clean rest is context; "
        "the network predicts the clean slice (L1). Reconstruction noises and denoises a grid of boxes "
        "at t_test in ONE network call each and averages overlaps. Defaults follow the paper (lr 1e-5; "
        "the reference code trains with lr 1e-4 and a cosine schedule: --lr 1e-4 --schedule cosine)."
    )
    defaults: ClassVar[dict[str, Any]] = {
        "patch_size": 48,
        "patch_sampling": "fixed",
        "loss": "patch",
        **_DIFFUSION_DEFAULTS,
    }

    def __init__(self, **config: Any):
        super().__init__(**config)
        self._check_choice("patch_sampling", ("fixed", "random"))
        self._check_choice("loss", ("patch", "full"))
        if int(self.config["patch_size"]) < 1:
            raise MriadError(f"model {self.name}: patch_size must be positive, got {self.config['patch_size']}")

    def grid(self, height: int, width: int) -> torch.Tensor:
        return grid_boxes(height, width, int(self.config["patch_size"]))

    def training_boxes(
        self, n: int, height: int, width: int, generator: torch.Generator | None, device: Any
    ) -> torch.Tensor:
        patch = int(self.config["patch_size"])
        if self.config["patch_sampling"] == "random":
            return random_boxes(n, height, width, patch, generator, device)
        grid = self.grid(height, width).to(device)
        pick = torch.randint(0, grid.shape[0], (n,), generator=generator, device=draw_device(generator, device))
        return grid[pick.to(device)]

    def patch_loss(self) -> bool:
        return self.config["loss"] == "patch"
