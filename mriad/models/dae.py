"""Denoising autoencoder with coarse noise (Kascenas, Pugeault, O'Neil 2022).

A UNet learns to remove *coarse* Gaussian noise: noise drawn on a low-resolution grid (16x16) and
upsampled bilinearly, so it looks like smooth blobs of wrong intensity, i.e. like lesions. Trained
on healthy slices only, the network learns to replace anything that does not look healthy with
healthy tissue; at test time the clean input goes through the network unchanged and the residual
marks what the network "repaired". The UNet here is a small plain one (no time embedding), written
for this purpose so that the DAE does not depend on the diffusion UNet's internals.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mriad.infra.errors import MriadError
from mriad.models.base import AnomalyModel
from mriad.models.layers import norm_layer


class _DoubleConv(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, norm: str):
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1),
            norm_layer(norm, c_out),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1),
            norm_layer(norm, c_out),
            nn.LeakyReLU(0.2, inplace=True),
        )


class PlainUNet(nn.Module):
    """Encoder (double conv, then 2x max-pool) / decoder (upsample, concat skip, double conv)."""

    def __init__(self, base_channels: int = 64, channel_mult: Sequence[int] = (1, 2, 4, 8), norm: str = "group"):
        super().__init__()
        channels = [int(base_channels) * int(m) for m in channel_mult]
        self.down = nn.ModuleList()
        previous = 1
        for ch in channels:
            self.down.append(_DoubleConv(previous, ch, norm))
            previous = ch
        self.up = nn.ModuleList()
        for ch in reversed(channels[:-1]):
            self.up.append(_DoubleConv(previous + ch, ch, norm))
            previous = ch
        self.out = nn.Conv2d(previous, 1, 1)
        self.levels = len(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factor = 2 ** (self.levels - 1)
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"dae: slice size {tuple(x.shape[-2:])} must be divisible by {factor}")
        skips = []
        h = x
        for i, block in enumerate(self.down):
            h = block(h if i == 0 else F.max_pool2d(h, 2))
            skips.append(h)
        skips.pop()
        for block in self.up:
            h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
            h = block(torch.cat([h, skips.pop()], dim=1))
        return self.out(h)


def coarse_noise(
    shape: torch.Size, resolution: int, std: float, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Gaussian noise of ``std`` drawn on a ``resolution`` x ``resolution`` grid, upsampled bilinearly."""
    n, c, h, w = shape
    low = torch.randn((n, c, resolution, resolution), generator=generator, device=device) * std
    return F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)


class DenoisingAE(AnomalyModel):
    """UNet trained to map coarse-noised healthy slices back to the clean slice."""

    name: ClassVar[str] = "dae"
    paper: ClassVar[str] = (
        "Kascenas, Pugeault, O'Neil. Denoising autoencoders for unsupervised anomaly detection in brain "
        "MRI. MIDL 2022, PMLR 172:653-664."
    )
    summary: ClassVar[str] = (
        "Denoising UNet: trained to remove coarse noise (N(0, noise_std^2) drawn on a "
        "noise_res x noise_res grid, bilinearly upsampled; paper: 16, 0.2), predicts the clean slice "
        "(L2 loss); test time reconstructs the un-noised input. UNet widths are our choice."
    )
    defaults: ClassVar[dict[str, Any]] = {
        "base_channels": 64,
        "channel_mult": (1, 2, 4, 8),
        "norm": "group",
        "noise_res": 16,
        "noise_std": 0.2,
        "noise_in_brain": True,
        "loss": "l2",
    }

    def __init__(self, **config: Any):
        super().__init__(**config)
        c = self.config
        if c["loss"] not in ("l1", "l2"):
            raise MriadError(f"model {self.name}: loss must be l1 or l2, not {c['loss']!r}")
        self.unet = PlainUNet(int(c["base_channels"]), tuple(c["channel_mult"]), str(c["norm"]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet(x)

    def add_noise(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Noised input. With ``noise_in_brain`` the noise stays inside the brain (x > 0): the
        background is always exactly 0 in preprocessed scans, so noise there teaches nothing useful
        (our choice; ``--set noise_in_brain=false`` noises the whole slice)."""
        noise = coarse_noise(
            x.shape, int(self.config["noise_res"]), float(self.config["noise_std"]), generator, x.device
        )
        if self.config["noise_in_brain"]:
            noise = noise * (x > 0)
        return x + noise.to(x.dtype)

    def training_loss(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        prediction = self(self.add_noise(batch, generator)).float()  # fp32 loss under bf16 autocast
        batch = batch.float()
        if self.config["loss"] == "l1":
            return (prediction - batch).abs().mean()
        return (prediction - batch).pow(2).mean()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self(x).clamp(0, 1)

    def max_batch(self, height: int, width: int, memory_bytes: int | None = None) -> int:
        return 128
