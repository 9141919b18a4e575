"""Convolutional encoder/decoder blocks shared by the AE, VAE, SVAE and f-AnoGAN baselines.

One piece of code builds all of them so the baselines differ only in what the paper says they
differ in (the bottleneck and the objective), not in incidental architecture choices.

Layout (defaults: 96x96 input, ``channel_mult=(1, 2, 4, 8)``, ``base_channels=32``)::

    encoder: [conv 5x5 stride 2 -> norm -> LeakyReLU(0.2)] x 4   96 -> 48 -> 24 -> 12 -> 6
             flatten (256*6*6) -> dense -> out_features           (the "dense bottleneck")
    decoder: dense -> (256, 6, 6) -> [upsample x2 -> conv 5x5 -> norm -> LeakyReLU] x 4
             -> conv 3x3 -> 1 channel -> sigmoid (or linear)

Nearest upsampling followed by a convolution avoids the checkerboard artefacts of transposed
convolutions, which would otherwise show up directly in the residual maps we score with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

NORMS = ("batch", "group", "layer", "none")


def norm_layer(kind: str, channels: int) -> nn.Module:
    """A normalisation layer by name.

    ``batch`` for plain encoders/decoders; ``layer`` (GroupNorm with one group, i.e. LayerNorm over
    C,H,W) for a WGAN-GP critic, whose gradient penalty is defined per sample and so must not mix
    samples through batch statistics; ``group`` (up to 8 groups) for batch-size-independent nets.
    """
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(8, channels), channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose one of {', '.join(NORMS)}")


def stage_channels(base_channels: int, channel_mult: Sequence[int]) -> list[int]:
    """Channels after each stride-2 stage, e.g. 32 x (1, 2, 4, 8) -> [32, 64, 128, 256]."""
    return [int(base_channels) * int(m) for m in channel_mult]


def bottleneck_size(image_size: int, n_stages: int) -> int:
    """Spatial side at the bottleneck; refuses sizes that do not halve cleanly."""
    factor = 2**n_stages
    if image_size % factor:
        raise ValueError(f"image_size {image_size} is not divisible by 2**{n_stages} = {factor}")
    return image_size // factor


def check_input(x: torch.Tensor, image_size: int, owner: str) -> None:
    """Fail with a readable message instead of a shape error deep inside a dense layer."""
    if x.dim() != 4 or x.shape[1] != 1 or x.shape[-2:] != (image_size, image_size):
        raise ValueError(
            f"{owner}: expected slices (N, 1, {image_size}, {image_size}), got {tuple(x.shape)}; "
            f"set image_size to the data's slice size"
        )


class ConvEncoder(nn.Module):
    """Strided conv stages, then a dense layer to ``out_features`` (latent code, moments or a score).

    :meth:`features` exposes the last convolutional feature map: f-AnoGAN's critic uses it for the
    feature residual of the izif loss.
    """

    def __init__(
        self,
        out_features: int,
        *,
        image_size: int = 96,
        base_channels: int = 32,
        channel_mult: Sequence[int] = (1, 2, 4, 8),
        norm: str = "batch",
        in_channels: int = 1,
        kernel_size: int = 5,
    ):
        super().__init__()
        channels = stage_channels(base_channels, channel_mult)
        side = bottleneck_size(image_size, len(channels))
        layers: list[nn.Module] = []
        previous = in_channels
        for i, ch in enumerate(channels):
            # No normalisation on the first stage: it would rescale the raw intensities, which is
            # exactly what the networks need to see (common practice since DCGAN).
            layers += [
                nn.Conv2d(previous, ch, kernel_size, stride=2, padding=kernel_size // 2),
                norm_layer(norm if i > 0 else "none", ch),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            previous = ch
        self.conv = nn.Sequential(*layers)
        self.feature_shape = (channels[-1], side, side)
        self.dense = nn.Linear(channels[-1] * side * side, out_features)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(self.conv(x).flatten(1))


class ConvDecoder(nn.Module):
    """Dense layer to a small feature map, then upsampling conv stages back to the image size."""

    def __init__(
        self,
        latent_dim: int,
        *,
        image_size: int = 96,
        base_channels: int = 32,
        channel_mult: Sequence[int] = (1, 2, 4, 8),
        norm: str = "batch",
        out_channels: int = 1,
        kernel_size: int = 5,
        output: str = "sigmoid",
    ):
        super().__init__()
        if output not in ("sigmoid", "linear"):
            raise ValueError(f"unknown decoder output {output!r}; choose sigmoid or linear")
        channels = stage_channels(base_channels, channel_mult)
        side = bottleneck_size(image_size, len(channels))
        self.start_shape = (channels[-1], side, side)
        self.dense = nn.Sequential(nn.Linear(latent_dim, channels[-1] * side * side), nn.LeakyReLU(0.2, inplace=True))
        layers: list[nn.Module] = []
        # Mirror of the encoder: 256 -> 128 -> 64 -> 32 -> 32 for the default widths.
        targets = list(reversed(channels[:-1])) + [channels[0]]
        previous = channels[-1]
        for ch in targets:
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(previous, ch, kernel_size, padding=kernel_size // 2),
                norm_layer(norm, ch),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            previous = ch
        layers.append(nn.Conv2d(previous, out_channels, 3, padding=1))
        self.conv = nn.Sequential(*layers)
        self.output = output

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        y = self.conv(self.dense(z).unflatten(1, self.start_shape))
        return torch.sigmoid(y) if self.output == "sigmoid" else y


def reparameterise(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """z = mu + sigma * eps with eps drawn from ``generator`` (reproducible training)."""
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) summed over the last dimension."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


def vae_objective(x: torch.Tensor, x_hat: torch.Tensor, kl_per_sample: torch.Tensor, sigma: float) -> torch.Tensor:
    """Negative ELBO with a fixed-sigma Gaussian likelihood, rescaled for readable values.

    Per image, -ELBO = sum_pixels (x - x_hat)^2 / (2 sigma^2) + KL (+ a constant). We multiply it by
    2 sigma^2 / n_pixels, which keeps the minimiser (and, for Adam, the updates) unchanged but makes
    the reported loss the per-pixel MSE plus a KL term weighted by 2 sigma^2 / n_pixels. With the
    paper's sigma = 1e-3 that weight is ~2e-10 per pixel on 96x96 slices: the reconstruction term
    dominates, as the paper intends (a VAE close to an AE, with a regularised, sampled bottleneck).
    """
    n_pixels = x[0].numel()
    # fp32 for the reduction: under bf16 autocast the decoder output is bf16.
    mse = (x.float() - x_hat.float()).pow(2).flatten(1).mean(1)
    return (mse + (2.0 * sigma**2 / n_pixels) * kl_per_sample.float()).mean()
