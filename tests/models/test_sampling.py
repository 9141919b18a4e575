"""AnoDDPM sampling: step indices, and the eta = 1 update equals DDPM's posterior q(x_{t-1} | x_t, x0)."""

from __future__ import annotations

import pytest
import torch

from mriad.models.diffusion import alphas_cumprod, linear_betas
from mriad.models.sampling import iterative_denoise, sampling_indices


def test_indices() -> None:
    assert sampling_indices(250, 250) == list(range(249, -1, -1))
    assert sampling_indices(250, 5) == [249, 187, 124, 62, 0]
    assert sampling_indices(10, 50) == list(range(9, -1, -1))  # never more steps than t_start
    assert sampling_indices(300, 1) == [299]
    with pytest.raises(ValueError):
        sampling_indices(0, 3)


def test_ancestral_step_is_the_ddpm_posterior() -> None:
    betas = linear_betas(1000)
    ab = alphas_cumprod(betas)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 1, 8, 8, generator=g) * 2 - 1
    x0_hat = torch.rand(3, 1, 8, 8, generator=g) * 2 - 1
    draws = [torch.randn(3, 1, 8, 8, generator=g) for _ in range(2)]
    seen: list[tuple[torch.Tensor, int]] = []

    def denoise(x: torch.Tensor, t: int) -> torch.Tensor:
        seen.append((x.clone(), t))
        return x0_hat

    noise = iter(draws)
    out = iterative_denoise(denoise, x0, ab, lambda: next(noise, draws[0]), t_start=401, steps=401)
    assert len(seen) == 401 and [t for _, t in seen] == list(range(400, -1, -1))
    assert torch.equal(out, x0_hat)
    t = 400
    x_t, x_prev = seen[0][0], seen[1][0]
    torch.testing.assert_close(x_t, (ab[t].sqrt() * x0 + (1 - ab[t]).sqrt() * draws[0]).float())
    beta, a_t, a_prev = betas[t], ab[t], ab[t - 1]
    mean = a_prev.sqrt() * beta / (1 - a_t) * x0_hat + (1 - beta).sqrt() * (1 - a_prev) / (1 - a_t) * x_t
    std = (beta * (1 - a_prev) / (1 - a_t)).sqrt()
    torch.testing.assert_close(x_prev, (mean + std * draws[1]).float(), atol=1e-5, rtol=1e-5)


def test_perfect_denoiser_returns_the_image_and_eta_zero_draws_once() -> None:
    ab = alphas_cumprod(linear_betas(1000))
    x0 = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    draws = []

    def noise() -> torch.Tensor:
        draws.append(1)
        return torch.randn_like(x0)

    out = iterative_denoise(lambda x, t: x0, x0, ab, noise, t_start=250, steps=10, eta=0.0)
    torch.testing.assert_close(out, x0)
    assert len(draws) == 1  # deterministic: only the forward noising draws
