"""AnoDDPM's iterative partial diffusion (Wyatt et al., CVPR Workshops 2022) for x0-predicting networks.

AnoDDPM noises the slice only up to ``t_start`` (their lambda = 250 of T = 1000 for brain MRI),
then denoises step by step back to t = 0, drawing simplex noise at every step. mriad's networks
predict the clean image x0 (as in pDDPM), so each step goes through the generalised (DDIM,
Song et al. 2021) update from index ``i`` to the next index ``j < i``::

    eps_hat = (x_i - sqrt(ab_i) x0_hat) / sqrt(1 - ab_i)
    sigma   = eta sqrt((1 - ab_j) / (1 - ab_i) (1 - ab_i / ab_j))
    x_j     = sqrt(ab_j) x0_hat + sqrt(1 - ab_j - sigma^2) eps_hat + sigma z

With every step (``steps = t_start``) and ``eta = 1`` this is DDPM's ancestral sampling, AnoDDPM's
sampler; fewer steps stride evenly over [t_start - 1, 0]; ``eta = 0`` is deterministic (DDIM). The
last step returns the network's x0 prediction. Cost: ``steps`` network calls per slice.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# denoise(x_t, t_index) -> x0 prediction (model space), for a batch of slices at one timestep.
Denoise = Callable[[torch.Tensor, int], torch.Tensor]


def sampling_indices(t_start: int, steps: int) -> list[int]:
    """0-based timesteps from ``t_start - 1`` down to 0, ``steps`` of them (fewer if they coincide)."""
    if t_start < 1 or steps < 1:
        raise ValueError(f"t_start and steps must be positive, got {t_start}, {steps}")
    steps = min(steps, t_start)
    if steps == 1:
        return [t_start - 1]
    values = torch.linspace(t_start - 1, 0, steps, dtype=torch.float64).round().long().tolist()
    return list(dict.fromkeys(int(v) for v in values))


def iterative_denoise(
    denoise: Denoise,
    x0: torch.Tensor,
    alpha_bar: torch.Tensor,
    noise: Callable[[], torch.Tensor],
    t_start: int,
    steps: int,
    eta: float = 1.0,
) -> torch.Tensor:
    """Noise ``x0`` (model space) to ``t_start`` and denoise it in ``steps`` steps; returns x0_hat.

    ``alpha_bar`` (T,) float64; ``noise()`` draws a fresh field shaped like ``x0`` (first at the
    forward noising, then once per intermediate step).
    """
    indices = sampling_indices(t_start, steps)
    ab = alpha_bar.to(torch.float64).cpu()
    first = indices[0]
    x = ab[first].sqrt().item() * x0 + (1 - ab[first]).sqrt().item() * noise()
    for position, i in enumerate(indices):
        x0_hat = denoise(x, i).float()
        if position == len(indices) - 1:
            return x0_hat
        j = indices[position + 1]
        ab_i, ab_j = float(ab[i]), float(ab[j])
        eps_hat = (x - ab_i**0.5 * x0_hat) / (1 - ab_i) ** 0.5
        sigma = eta * ((1 - ab_j) / (1 - ab_i) * (1 - ab_i / ab_j)) ** 0.5
        x = ab_j**0.5 * x0_hat + max(1 - ab_j - sigma**2, 0.0) ** 0.5 * eps_hat
        if sigma > 0:
            x = x + sigma * noise()
    raise AssertionError("unreachable: sampling_indices returns at least one index")
