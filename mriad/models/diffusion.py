"""The diffusion maths pDDPM needs, in one place: schedules, the forward process, noise, scaling.

pDDPM never samples iteratively. Training: pick t ~ U{0..T-1}, noise the (patch of the) image with
the closed-form forward process, let the network predict the clean image x0, L1 loss. Testing: the
same single step at a fixed t_test. So the only pieces are::

    betas            linear 1e-4 -> 2e-2 (paper) or cosine, s = 0.008 (reference code)
    alpha_bar_t      = prod_{s <= t} (1 - beta_s)            (float64: a float32 product drifts)
    q_sample         x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps
    eps              Gaussian, or simplex noise (unnormalised, as the reference uses it)

Timesteps are 0-based indices: the paper's t_test = 500 is index 499, as in the reference code.
Images enter the network in [-1, 1] (x -> 2x - 1) and predictions are mapped back to [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from mriad.models.simplex import simplex_noise

SCHEDULES = ("linear", "cosine")
NOISES = ("simplex", "gaussian")


def linear_betas(timesteps: int = 1000, start: float = 1e-4, end: float = 2e-2) -> torch.Tensor:
    """Evenly spaced betas (Ho et al. 2020), float64."""
    return torch.linspace(start, end, timesteps, dtype=torch.float64)


def cosine_betas(timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Betas of the cosine schedule (Nichol & Dhariwal 2021): alpha_bar(t) = cos^2(((t/T + s)/(1 + s)) pi/2).

    beta_t = 1 - alpha_bar(t + 1) / alpha_bar(t), clipped at ``max_beta`` so the last steps stay finite.
    """
    steps = torch.arange(timesteps + 1, dtype=torch.float64)
    alpha_bar = torch.cos((steps / timesteps + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)


def make_betas(schedule: str, timesteps: int = 1000) -> torch.Tensor:
    if schedule == "linear":
        return linear_betas(timesteps)
    if schedule == "cosine":
        return cosine_betas(timesteps)
    raise ValueError(f"unknown schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")


def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    return torch.cumprod(1 - betas.double(), dim=0)


def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """Draw x_t ~ q(x_t | x0): ``sqrt(ab_t) x0 + sqrt(1 - ab_t) noise``, per-sample t (N,).

    The coefficients are computed in float64 and cast to the image dtype only when applied.
    """
    ab = alpha_bar.to(x0.device)[t]
    shape = (-1,) + (1,) * (x0.dim() - 1)
    signal = ab.sqrt().to(x0.dtype).reshape(shape)
    sigma = (1 - ab).sqrt().to(x0.dtype).reshape(shape)
    return signal * x0 + sigma * noise


def sample_timesteps(n: int, timesteps: int, generator: torch.Generator | None, device: Any) -> torch.Tensor:
    """t ~ U{0, ..., T-1} per sample (drawn where the generator lives, then moved)."""
    return torch.randint(0, timesteps, (n,), generator=generator, device=draw_device(generator, device)).to(device)


def draw_device(generator: torch.Generator | None, device: Any) -> torch.device:
    """Random draws must happen on the generator's device; without a generator, on the target device."""
    return generator.device if generator is not None else torch.device(device)


def make_noise(
    kind: str,
    shape: Sequence[int],
    *,
    generator: torch.Generator | None,
    device: Any,
    dtype: torch.dtype = torch.float32,
    octaves: int = 6,
    persistence: float = 0.8,
    frequency: float = 64.0,
    normalise: bool = False,
) -> torch.Tensor:
    """Noise for the forward process: ``gaussian`` or ``simplex`` (a distinct field per image)."""
    if kind == "gaussian":
        return torch.randn(tuple(shape), generator=generator, device=draw_device(generator, device), dtype=dtype).to(
            device
        )
    if kind == "simplex":
        return simplex_noise(
            shape,
            generator=generator,
            octaves=octaves,
            persistence=persistence,
            frequency=frequency,
            normalise=normalise,
            device=device,
            dtype=dtype,
        )
    raise ValueError(f"unknown noise {kind!r}; expected one of {', '.join(NOISES)}")


def to_model_space(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] intensities -> [-1, 1], the range the network is trained in."""
    return x * 2 - 1


def from_model_space(y: torch.Tensor) -> torch.Tensor:
    """Network output -> [0, 1] intensities (clamped: the prediction may overshoot)."""
    return ((y + 1) / 2).clamp(0, 1)
