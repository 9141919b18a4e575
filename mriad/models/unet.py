"""The denoising UNet of pDDPM: the guided-diffusion ("ADM") architecture, every size configurable.

Paper configuration: base 128 channels, multipliers (1, 2, 2) -> widths 128/256/256 at 96/48/24
pixels, 3 residual blocks per level, GroupNorm(32) + SiLU before every convolution, a sinusoidal
timestep embedding (dim = base) fed through an MLP to 4 x base, injected into every residual block
by scale-shift normalisation, skip connections between encoder and decoder, self-attention only in
the middle block (the reference configures attention resolutions that never match the feature
sizes, so the middle block's attention is the only one that exists), dropout 0.

Down/upsampling: by default residual blocks that resample inside (average pooling / nearest x2
between their normalisation and first convolution), as the reference configures it
(``resblock_updown``); ``resblock_updown=False`` uses a strided 3x3 convolution / nearest x2 + 3x3
convolution instead (~3 M fewer parameters). ``checkpointing`` recomputes every residual block's
activations in the backward pass instead of keeping them (torch.utils.checkpoint, as the reference
trains): training memory drops to the blocks' inputs for about a third more compute; results are
the same. Output convolutions of each residual block and of the
network start at zero, as in guided-diffusion, so a fresh network is an identity-like residual stack
and training starts stable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``[cos(t f_i), sin(t f_i)]`` with geometric frequencies, ``(N, dim)`` float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32, so bf16 autocast does not cost accuracy in the statistics.

    ``groups`` is an upper bound: narrow test/CPU networks (8 or 16 channels) use the largest common
    divisor, so `--channels 8` works without also having to set the group count.
    """

    def __init__(self, groups: int, channels: int):
        super().__init__(math.gcd(groups, channels), channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """norm-SiLU-conv, then scale-shift by the time embedding, norm-SiLU-(dropout)-conv; plus skip.

    ``resample`` "down"/"up" halves/doubles the size between the first activation and convolution
    (and on the skip path), so the block is also the network's resampling step.
    """

    def __init__(
        self,
        channels: int,
        out_channels: int,
        emb_dim: int,
        groups: int,
        dropout: float = 0.0,
        resample: str | None = None,
    ):
        super().__init__()
        self.resample = resample
        self.in_norm = GroupNorm32(groups, channels)
        self.in_conv = nn.Conv2d(channels, out_channels, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_channels)
        self.out_norm = GroupNorm32(groups, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.out_conv = _zero(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Identity() if channels == out_channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, size: Sequence[int] | None = None) -> torch.Tensor:
        h = F.silu(self.in_norm(x))
        if self.resample == "down":
            # ceil_mode: odd sizes round up, like a strided convolution, so the decoder can match them.
            h, x = (F.avg_pool2d(v, 2, ceil_mode=True) for v in (h, x))
        elif self.resample == "up":
            assert size is not None, "an upsampling block needs the size of its skip connection"
            h, x = (F.interpolate(v, size=tuple(size), mode="nearest") for v in (h, x))
        h = self.in_conv(h)
        scale, shift = self.emb(F.silu(emb)).type(h.dtype)[:, :, None, None].chunk(2, dim=1)
        h = self.out_norm(h) * (1 + scale) + shift
        h = self.out_conv(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over all pixels (used once, at the lowest resolution)."""

    def __init__(self, channels: int, groups: int, head_channels: int):
        super().__init__()
        if channels % head_channels:
            raise ValueError(f"attention: {channels} channels are not a multiple of head_channels {head_channels}")
        self.heads = channels // head_channels
        self.norm = GroupNorm32(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, h * w)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # (N, heads, HW, head_channels)
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(out.transpose(-1, -2).reshape(n, c, h, w))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        # Upsample to the skip's exact size, so odd feature sizes (e.g. 25 -> 50) still line up.
        return self.conv(F.interpolate(x, size=tuple(size), mode="nearest"))


class UNet(nn.Module):
    """``forward(x, t[, cond])``: ``x`` (N, in_channels, H, W), ``t`` (N,) timestep indices -> (N, out_channels, H, W).

    ``cond`` (N, 4 x base_channels), optional, is added to the time embedding (cDDPM's conditioning).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        base_channels: int = 128,
        channel_mult: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 3,
        groups: int = 32,
        head_channels: int = 64,
        dropout: float = 0.0,
        mid_attention: bool = True,
        resblock_updown: bool = True,
        checkpointing: bool = False,
    ):
        super().__init__()
        self.base_channels = base_channels
        self.checkpointing = checkpointing
        emb_dim = 4 * base_channels
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.stem = nn.Conv2d(in_channels, base_channels, 3, padding=1)

        # Encoder: every block's output is kept as a skip; the decoder consumes them in reverse.
        self.down = nn.ModuleList()
        skips = [base_channels]
        ch = base_channels
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                self.down.append(ResBlock(ch, mult * base_channels, emb_dim, groups, dropout))
                ch = mult * base_channels
                skips.append(ch)
            if level < len(channel_mult) - 1:
                self.down.append(
                    ResBlock(ch, ch, emb_dim, groups, dropout, "down") if resblock_updown else Downsample(ch)
                )
                skips.append(ch)

        self.mid1 = ResBlock(ch, ch, emb_dim, groups, dropout)
        self.mid_attn = Attention(ch, groups, min(head_channels, ch)) if mid_attention else nn.Identity()
        self.mid2 = ResBlock(ch, ch, emb_dim, groups, dropout)

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for block in range(num_res_blocks + 1):
                self.up.append(ResBlock(ch + skips.pop(), mult * base_channels, emb_dim, groups, dropout))
                ch = mult * base_channels
                if level > 0 and block == num_res_blocks:
                    self.up.append(
                        ResBlock(ch, ch, emb_dim, groups, dropout, "up") if resblock_updown else Upsample(ch)
                    )
        self.out_norm = GroupNorm32(groups, ch)
        self.out_conv = _zero(nn.Conv2d(ch, out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.base_channels).to(x.dtype))
        if cond is not None:  # cDDPM: a projected encoding of the clean input joins the time embedding
            emb = emb + cond.to(emb.dtype)
        run = self._checkpointed if self.checkpointing and self.training and torch.is_grad_enabled() else _call
        h = self.stem(x)
        skips = [h]
        for block in self.down:
            h = run(block, h, emb) if isinstance(block, ResBlock) else block(h)
            skips.append(h)
        h = run(self.mid2, self.mid_attn(run(self.mid1, h, emb)), emb)
        for block in self.up:
            if isinstance(block, Upsample):
                h = block(h, skips[-1].shape[-2:])
            elif getattr(block, "resample", None) == "up":
                h = run(block, h, emb, skips[-1].shape[-2:])
            else:
                h = run(block, torch.cat([h, skips.pop()], dim=1), emb)
        return self.out_conv(F.silu(self.out_norm(h)))

    @staticmethod
    def _checkpointed(block: nn.Module, *args: object) -> torch.Tensor:
        from torch.utils.checkpoint import checkpoint

        # Non-reentrant: works with autocast and inputs that need no grad; RNG state (dropout) is replayed.
        return checkpoint(block, *args, use_reentrant=False)


def _call(block: nn.Module, *args: object) -> torch.Tensor:
    return block(*args)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_flops(model: nn.Module, height: int = 96, width: int = 96, batch: int = 1) -> int:
    """FLOPs of one forward pass (torch.utils.flop_counter: 2 per multiply-add; convs, matmuls, attention).

    Counted on a copy on the "meta" device: shapes only, no arithmetic, so the paper network counts
    in a fraction of a second even on a laptop.
    """
    import copy

    from torch.utils.flop_counter import FlopCounterMode

    meta = copy.deepcopy(model).to("meta")
    x = torch.zeros(batch, 1, height, width, device="meta")
    t = torch.zeros(batch, dtype=torch.long, device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        meta(x, t)
    return int(counter.get_total_flops())
