"""Sequence VAE: per-slice VAE latents mixed across slices by a transformer (Behrendt et al. 2022).

A 2D VAE sees each slice alone and so cannot use the neighbouring slices of the same brain. Here
every slice of a volume is encoded by the shared conv encoder, the per-slice latent codes (a sequence
over the axial index, with a sinusoidal slice-position embedding) pass through a small transformer
encoder, and each output token is decoded back to its slice. Training therefore sees whole volumes
(``batch_kind = "volumes"``: batches ``(B, S, 1, H, W)``); the objective is the fixed-sigma VAE
objective of :mod:`mriad.models.vae` (sigma = 1e-3), averaged over slices.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from mriad.models.ae import CONV_DEFAULTS
from mriad.models.base import AnomalyModel
from mriad.models.layers import ConvDecoder, ConvEncoder, check_input, gaussian_kl, reparameterise, vae_objective
from mriad.models.vae import LOGVAR_RANGE


def slice_positions(n_slices: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Sinusoidal embedding of the slice index ``(S, dim)``; works for any stack length."""
    position = torch.arange(n_slices, device=device, dtype=torch.float32)[:, None]
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=device, dtype=torch.float32) / max(half, 1))
    angles = position * freq[None]
    emb = torch.cat([angles.sin(), angles.cos()], dim=1)
    if dim % 2:
        emb = torch.cat([emb, emb.new_zeros(n_slices, 1)], dim=1)
    return emb.to(dtype)


class SequenceVAE(AnomalyModel):
    """Per-slice conv VAE + transformer over the slice axis of a volume."""

    name: ClassVar[str] = "svae"
    paper: ClassVar[str] = (
        "Behrendt, Bengs, Bhattacharya, Krueger, Opfer, Schlaefer. Capturing inter-slice dependencies "
        "of 3D brain MRI-scans for unsupervised anomaly detection. MIDL 2022 (short paper)."
    )
    summary: ClassVar[str] = (
        "Sequence VAE: slice-wise conv VAE (as vae) whose latents pass through a transformer encoder "
        "across the slices of a volume (sinusoidal slice-index embedding) before decoding; trained on "
        "whole volumes (batch_size = volumes per step); sigma_vae = 0.001 (paper); test time decodes "
        "the posterior means. Transformer sizes are our choice."
    )
    defaults: ClassVar[dict[str, Any]] = {
        **CONV_DEFAULTS,
        "sigma_vae": 1e-3,
        "transformer_layers": 2,
        "transformer_heads": 4,
        "transformer_ff": 512,
        "transformer_dropout": 0.0,
        "batch_size": 8,
    }
    batch_kind: ClassVar[str] = "volumes"

    def __init__(self, **config: Any):
        super().__init__(**config)
        c = self.config
        latent = int(c["latent_dim"])
        shared: dict[str, Any] = {
            "image_size": int(c["image_size"]),
            "base_channels": int(c["base_channels"]),
            "channel_mult": tuple(c["channel_mult"]),
            "norm": str(c["norm"]),
        }
        self.encoder = ConvEncoder(2 * latent, **shared)
        self.decoder = ConvDecoder(latent, **shared)
        layer = nn.TransformerEncoderLayer(
            d_model=latent,
            nhead=int(c["transformer_heads"]),
            dim_feedforward=int(c["transformer_ff"]),
            dropout=float(c["transformer_dropout"]),
            batch_first=True,
            norm_first=True,
        )
        self.transformer = nn.TransformerEncoder(
            layer, num_layers=int(c["transformer_layers"]), enable_nested_tensor=False
        )

    @staticmethod
    def as_volumes(batch: torch.Tensor) -> torch.Tensor:
        """``(B, S, 1, H, W)`` as is; a flat slice stack ``(S, 1, H, W)`` is read as one volume."""
        if batch.dim() == 4:
            return batch.unsqueeze(0)
        if batch.dim() != 5:
            raise ValueError(
                f"svae: expected volumes (B, S, 1, H, W) or one stack (S, 1, H, W), got {tuple(batch.shape)}"
            )
        return batch

    def encode(self, volumes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior moments ``(B, S, latent)`` of every slice."""
        flat = volumes.flatten(0, 1)
        check_input(flat, int(self.config["image_size"]), self.name)
        mu, logvar = self.encoder(flat).chunk(2, dim=1)
        b, s = volumes.shape[:2]
        return mu.unflatten(0, (b, s)), logvar.clamp(*LOGVAR_RANGE).unflatten(0, (b, s))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Mix latents ``(B, S, latent)`` across slices, then decode every slice ``(B, S, 1, H, W)``."""
        b, s, d = z.shape
        mixed = self.transformer(z + slice_positions(s, d, z.device, z.dtype)[None])
        return self.decoder(mixed.flatten(0, 1)).unflatten(0, (b, s))

    def forward(self, volumes: torch.Tensor) -> torch.Tensor:
        volumes = self.as_volumes(volumes)
        mu, _ = self.encode(volumes)
        return self.decode(mu)

    def training_loss(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        volumes = self.as_volumes(batch)
        mu, logvar = self.encode(volumes)
        x_hat = self.decode(reparameterise(mu, logvar, generator))
        return vae_objective(
            volumes.flatten(0, 1),
            x_hat.flatten(0, 1),
            gaussian_kl(mu, logvar).flatten(),
            float(self.config["sigma_vae"]),
        )

    @torch.no_grad()
    def reconstruct_volumes(
        self, volumes: torch.Tensor, generator: torch.Generator | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self(volumes).clamp(0, 1)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A flat stack ``(S, 1, H, W)`` is one volume: the slices inform each other."""
        return self.reconstruct_volumes(x.unsqueeze(0), generator)[0]

    def max_batch(self, height: int, width: int, memory_bytes: int | None = None) -> int:
        """Volumes per call is what matters here; whole volumes must stay together."""
        return 512
