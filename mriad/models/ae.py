"""Convolutional autoencoder with a dense bottleneck (the "dense AE" family of Baur et al. 2021).

Healthy anatomy squeezed through a small dense latent code is reconstructed well; lesions are not
representable and so stand out in |x - x_hat|. Architecture: :mod:`mriad.models.layers` (strided
conv encoder 96 -> 6, dense latent, mirrored upsampling decoder, sigmoid output); L1 loss.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from mriad.infra.errors import MriadError
from mriad.models.base import AnomalyModel
from mriad.models.layers import ConvDecoder, ConvEncoder, check_input

BAUR_2021 = (
    "Baur, Denner, Wiestler, Navab, Albarqouni. Autoencoders for unsupervised anomaly segmentation in "
    "brain MR images: a comparative study. Medical Image Analysis 69:101952, 2021."
)

# Network settings shared by the conv-encoder baselines (AE, VAE, SVAE).
CONV_DEFAULTS: dict[str, Any] = {
    "image_size": 96,
    "base_channels": 32,
    "channel_mult": (1, 2, 4, 8),
    "latent_dim": 128,
    "norm": "batch",
}


class AutoEncoder(AnomalyModel):
    """Deterministic dense-bottleneck autoencoder trained with an L1 reconstruction loss."""

    name: ClassVar[str] = "ae"
    paper: ClassVar[str] = BAUR_2021
    summary: ClassVar[str] = (
        "Dense-bottleneck convolutional autoencoder: 4 stride-2 conv stages (96 -> 6), dense latent "
        "(latent_dim), mirrored decoder; L1 reconstruction loss; score |x - x_hat|. Widths are our "
        "choice within the comparative study's dense-AE family (the pDDPM paper does not list them)."
    )
    defaults: ClassVar[dict[str, Any]] = {**CONV_DEFAULTS, "loss": "l1"}
    encoder_outputs: ClassVar[int] = 1  # the VAE's encoder emits (mu, logvar): 2

    def __init__(self, **config: Any):
        super().__init__(**config)
        c = self.config
        if "loss" in c and c["loss"] not in ("l1", "l2"):
            raise MriadError(f"model {self.name}: loss must be l1 or l2, not {c['loss']!r}")
        shared: dict[str, Any] = {
            "image_size": int(c["image_size"]),
            "base_channels": int(c["base_channels"]),
            "channel_mult": tuple(c["channel_mult"]),
            "norm": str(c["norm"]),
        }
        self.encoder = ConvEncoder(self.encoder_outputs * int(c["latent_dim"]), **shared)
        self.decoder = ConvDecoder(int(c["latent_dim"]), **shared)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, int(self.config["image_size"]), self.name)
        return self.decoder(self.encoder(x))

    def training_loss(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x_hat = self(batch).float()  # fp32 loss under bf16 autocast
        if self.config["loss"] == "l2":
            return (batch.float() - x_hat).pow(2).mean()
        return (batch.float() - x_hat).abs().mean()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self(x).clamp(0, 1)

    def max_batch(self, height: int, width: int, memory_bytes: int | None = None) -> int:
        return 512
