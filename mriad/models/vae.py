"""Variational autoencoder with a fixed-sigma Gaussian likelihood (Baur et al. 2021; sigma = 1e-3).

Same encoder/decoder as :mod:`mriad.models.ae`; the encoder emits (mu, log sigma^2) of a diagonal
Gaussian posterior. The objective is the negative ELBO with p(x|z) = N(x_hat, sigma_VAE^2), rescaled
as documented in :func:`mriad.models.layers.vae_objective`. Test time decodes the posterior mean, so
reconstructions (and the threshold chosen on them) are deterministic.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from mriad.models.ae import BAUR_2021, AutoEncoder
from mriad.models.layers import check_input, gaussian_kl, reparameterise, vae_objective

# Keeps exp(logvar) finite when sigma_VAE is tiny and the posterior variance collapses.
LOGVAR_RANGE = (-30.0, 20.0)


class VAE(AutoEncoder):
    """Dense-bottleneck VAE; loss = per-pixel MSE + (2 sigma^2 / n_pixels) * KL."""

    name: ClassVar[str] = "vae"
    paper: ClassVar[str] = BAUR_2021
    summary: ClassVar[str] = (
        "Dense-bottleneck VAE (same conv encoder/decoder as ae): Gaussian likelihood with fixed "
        "sigma_vae = 0.001 (paper) + KL to N(0, I); loss reported as MSE + 2 sigma^2 KL / n_pixels "
        "(the negative ELBO rescaled); test time decodes the posterior mean."
    )
    defaults: ClassVar[dict[str, Any]] = {
        **{k: v for k, v in AutoEncoder.defaults.items() if k != "loss"},
        "sigma_vae": 1e-3,
    }
    encoder_outputs: ClassVar[int] = 2

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_input(x, int(self.config["image_size"]), self.name)
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(*LOGVAR_RANGE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic reconstruction: decode the posterior mean."""
        mu, _ = self.encode(x)
        return self.decoder(mu)

    def training_loss(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        mu, logvar = self.encode(batch)
        x_hat = self.decoder(reparameterise(mu, logvar, generator))
        return vae_objective(batch, x_hat, gaussian_kl(mu, logvar), float(self.config["sigma_vae"]))
