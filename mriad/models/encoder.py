"""cDDPM's conditioning encoder: a ResNet that turns the clean slice into one feature vector.

cDDPM (Behrendt et al., 2025) conditions its denoising UNet on an encoding of the clean input: a
ResNet-50 (timm, through SparK's encoder wrapper) whose pooled feature vector (``cond_dim``) goes
through an MLP and is combined with the time embedding. This module has the encoder and the
optional masked-image-modelling pretraining.

Departures, all configurable or documented:

* Basic residual blocks (two 3x3 convolutions) with ``encoder_blocks`` per stage, not ResNet-50's
  bottleneck blocks; (3, 4, 6, 3) blocks at widths (64, 128, 256, 512) is the ResNet-34 layout
  (21 M parameters at one input channel), the default. GroupNorm instead of BatchNorm: the encoder
  then behaves the same in training and evaluation, with the small per-process batches of 2D slices.
* Pretraining (:class:`MaskedImageModelling`): SparK masks 65 % of 32 x 32-pixel patches and runs
  *sparse* convolutions on the visible ones (masked positions stay empty at every layer), with a
  light UNet-like decoder fed by four scales and a loss on the masked patches, each normalised by
  its own mean and variance. mriad zeroes the masked patches and runs the ordinary (dense) encoder,
  so information leaks into masked regions through the convolutions' receptive fields; the decoder
  upsamples the last feature map only (no multi-scale fusion, no mask tokens); the loss is the
  per-patch-normalised L2 on the masked patches, as in SparK. Patch size is the encoder's total
  stride (16 for four stages: 6 x 6 patches on 96 x 96).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mriad.models.unet import GroupNorm32


class BasicBlock(nn.Module):
    """conv-norm-ReLU-conv-norm plus a (projected) skip; ``stride`` 2 halves the size."""

    def __init__(self, channels: int, out_channels: int, stride: int = 1, groups: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = GroupNorm32(groups, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = GroupNorm32(groups, out_channels)
        # Zero-initialised last norm: each block starts as the identity (as torchvision's zero_init_residual).
        nn.init.zeros_(self.norm2.weight)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or channels != out_channels:
            self.skip = nn.Sequential(
                nn.Conv2d(channels, out_channels, 1, stride=stride, bias=False), GroupNorm32(groups, out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.skip(x) + self.norm2(self.conv2(h)))


class ResNetEncoder(nn.Module):
    """``forward(x) -> (N, cond_dim)``; :meth:`features` gives the last feature map (stride 16)."""

    def __init__(
        self,
        in_channels: int = 1,
        widths: Sequence[int] = (64, 128, 256, 512),
        blocks: Sequence[int] = (3, 4, 6, 3),
        cond_dim: int = 128,
        groups: int = 32,
    ):
        super().__init__()
        self.in_channels = in_channels
        if len(widths) != len(blocks) or not widths:
            raise ValueError(f"encoder: {len(widths)} widths for {len(blocks)} stages")
        # Stem at stride 2 without max-pooling: 96 x 96 slices are small next to ImageNet's 224.
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, stride=2, padding=1, bias=False),
            GroupNorm32(groups, widths[0]),
            nn.ReLU(),
        )
        stages: list[nn.Module] = []
        channels = widths[0]
        for index, (width, count) in enumerate(zip(widths, blocks)):
            stride = 1 if index == 0 else 2
            layers = [BasicBlock(channels, width, stride, groups)]
            layers += [BasicBlock(width, width, 1, groups) for _ in range(int(count) - 1)]
            stages.append(nn.Sequential(*layers))
            channels = width
        self.stages = nn.Sequential(*stages)
        self.out_channels = channels
        self.stride = 2 ** len(widths)
        self.head = nn.Linear(channels, cond_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


class MaskedImageModelling(nn.Module):
    """Pretraining head: reconstruct masked patches of the slice from the encoder's feature map."""

    def __init__(self, encoder: ResNetEncoder, mask_ratio: float = 0.65, groups: int = 32):
        super().__init__()
        self.encoder = encoder
        self.mask_ratio = float(mask_ratio)
        layers: list[nn.Module] = []
        channels = encoder.out_channels
        for _ in range(len(encoder.stages)):  # the stem and every stage after the first halve the size
            out = max(channels // 2, 16)
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(channels, out, 3, padding=1),
                GroupNorm32(groups, out),
                nn.ReLU(),
            ]
            channels = out
        layers.append(nn.Conv2d(channels, encoder.in_channels, 1))
        self.decoder = nn.Sequential(*layers)

    def patch_mask(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """``(N, 1, H, W)`` bool, True where masked: ``mask_ratio`` of the stride-sized patches."""
        n, _, height, width = x.shape
        p = self.encoder.stride
        rows, cols = -(-height // p), -(-width // p)
        source = generator.device if generator is not None else x.device
        scores = torch.rand(n, rows * cols, generator=generator, device=source).to(x.device)
        keep = round(rows * cols * (1 - self.mask_ratio))
        order = scores.argsort(dim=1)
        masked = torch.ones(n, rows * cols, dtype=torch.bool, device=x.device)
        masked.scatter_(1, order[:, :keep], False)
        grid = masked.reshape(n, 1, rows, cols)
        return grid.repeat_interleave(p, 2).repeat_interleave(p, 3)[:, :, :height, :width]

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-patch-normalised L2 on the masked patches (SparK's target), ``x`` in model space."""
        masked = self.patch_mask(x, generator)
        prediction = self.decoder(self.encoder.features(torch.where(masked, torch.zeros_like(x), x)))
        prediction = (
            F.interpolate(prediction, size=x.shape[-2:], mode="nearest") if prediction.shape != x.shape else prediction
        )
        p = self.encoder.stride
        target = _patch_normalise(x, p)
        error = (prediction.float() - target) ** 2
        weight = masked.to(error.dtype)
        return (error * weight).sum() / weight.sum().clamp(min=1) / x.shape[1]


def _patch_normalise(x: torch.Tensor, patch: int) -> torch.Tensor:
    """Each ``patch`` x ``patch`` patch minus its mean over its standard deviation (SparK's pix_norm)."""
    n, c, height, width = x.shape
    pad_h, pad_w = (-height) % patch, (-width) % patch
    padded = F.pad(x.float(), (0, pad_w, 0, pad_h))
    tiles = padded.unfold(2, patch, patch).unfold(3, patch, patch)  # (N, C, R, C', p, p)
    mean = tiles.mean(dim=(-1, -2), keepdim=True)
    std = tiles.var(dim=(-1, -2), keepdim=True, unbiased=False).add(1e-6).sqrt()
    normalised = (tiles - mean) / std
    rows, cols = normalised.shape[2], normalised.shape[3]
    whole = normalised.permute(0, 1, 2, 4, 3, 5).reshape(n, c, rows * patch, cols * patch)
    return whole[:, :, :height, :width]
