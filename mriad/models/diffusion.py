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

:class:`DiffusionProcess` bundles these for one configuration: the schedule as float64 data, the
noise, ``q_sample``, the training loss and the one-step input at ``t_test``. It never runs a network
on its own terms (batching, precision, compilation): that is :mod:`mriad.runtime.inference`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from mriad.models.simplex import simplex_noise

SCHEDULES = ("linear", "cosine")
NOISES = ("simplex", "gaussian")
# How the box-only loss L_p is averaged: over the noised box (mriad's default) or over the whole
# image, as the reference code does (there L_p is the box's error divided by H x W).
LOSS_NORMALISATIONS = ("box", "image")

# Hyperparameters shared by every diffusion model (pDDPM, DDPM): the paper's values.
DIFFUSION_DEFAULTS: dict[str, Any] = {
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
    "checkpointing": False,
    "lr": 1e-5,
    "batch_size": 32,
    "epochs": 1600,
    "val_every": 10,
}


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
    """Network output -> intensities, NOT clamped to [0, 1]: the reference code scores the residual of
    the unclamped prediction, and clipping is the evaluation protocol's choice (``evaluate --clamp``)."""
    return (y + 1) / 2


Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True, eq=False)
class DiffusionProcess:
    """The forward process of one configuration and the two uses pDDPM makes of it.

    Training: ``x_t = q_sample(x0, t, eps)`` inside a region (the rest stays clean), the network
    predicts x0, L1 loss. Reconstruction: the same noising at the single step ``t_test`` (1-based,
    as configured; index ``t_test - 1``).
    """

    alpha_bar: torch.Tensor  # (T,) float64 on the CPU; per-device copies are cached
    t_test: int
    noise_kind: str = "simplex"
    octaves: int = 6
    persistence: float = 0.8
    frequency: float = 64.0
    normalise_noise: bool = False
    _on_device: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DiffusionProcess:
        for key, allowed in (("schedule", SCHEDULES), ("noise", NOISES)):
            if config[key] not in allowed:
                raise ValueError(f"{key} must be one of {', '.join(allowed)}, got {config[key]!r}")
        timesteps = int(config["timesteps"])
        if not 1 <= int(config["t_test"]) <= timesteps:
            raise ValueError(f"t_test must lie in 1..{timesteps}, got {config['t_test']}")
        with torch.device("cpu"):  # the schedule is host data, even when a model is built on "meta"
            alpha_bar = alphas_cumprod(make_betas(str(config["schedule"]), timesteps))
        return cls(
            alpha_bar=alpha_bar,
            t_test=int(config["t_test"]),
            noise_kind=str(config["noise"]),
            octaves=int(config["octaves"]),
            persistence=float(config["persistence"]),
            frequency=float(config["frequency"]),
            normalise_noise=bool(config["normalise_noise"]),
        )

    @property
    def timesteps(self) -> int:
        return int(self.alpha_bar.numel())

    def schedule_on(self, device: torch.device) -> torch.Tensor:
        """``alpha_bar`` on ``device``, copied once: a copy per step would stall a GPU's queue."""
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = self.alpha_bar.to(device)
        return self._on_device[key]

    def sample_timesteps(self, n: int, generator: torch.Generator | None, device: Any) -> torch.Tensor:
        return sample_timesteps(n, self.timesteps, generator, device)

    def noise(self, shape: tuple[int, ...], generator: torch.Generator | None, device: Any) -> torch.Tensor:
        return make_noise(
            self.noise_kind,
            shape,
            generator=generator,
            device=device,
            octaves=self.octaves,
            persistence=self.persistence,
            frequency=self.frequency,
            normalise=self.normalise_noise,
        )

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return q_sample(x0, t, noise, self.schedule_on(x0.device))

    def training_loss(
        self,
        denoise: Denoiser,
        x0: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor,
        region: torch.Tensor,
        *,
        region_only: bool = False,
        normalisation: str = "box",
    ) -> torch.Tensor:
        """L1 between ``denoise(x_t, t)`` and ``x0`` (model space); ``x_t`` is noised inside ``region``.

        ``region_only``: the loss counts only pixels of the region (pDDPM's L_p), averaged over the
        region (``normalisation="box"``) or over the whole image (``"image"``: the box's share of the
        image, ps^2 / (H W) for a square box, times the box average); else the mean over every pixel.
        """
        x_t = torch.where(region, self.q_sample(x0, t, noise), x0)  # context stays clean
        error = (denoise(x_t, t).float() - x0).abs()
        if not region_only:
            return error.mean()
        weight = region.to(error.dtype)
        if normalisation == "image":
            return (error * weight).sum() / error.numel()
        return (error * weight).sum() / (weight.sum() * error.shape[1])

    @property
    def test_index(self) -> int:
        """The 0-based timestep of reconstruction (``t_test - 1``)."""
        return self.t_test - 1

    def noised_at_test(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``x_t`` at ``t_test`` for every slice: what reconstruction puts into the boxes."""
        t = torch.full((x0.shape[0],), self.test_index, device=x0.device, dtype=torch.long)
        return self.q_sample(x0, t, noise)
