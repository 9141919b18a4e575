"""Schedules and the forward process."""

from __future__ import annotations

import math

import pytest
import torch

from mriad.models.diffusion import (
    alphas_cumprod,
    cosine_betas,
    from_model_space,
    linear_betas,
    make_betas,
    make_noise,
    q_sample,
    sample_timesteps,
    to_model_space,
)


def test_linear_schedule_endpoints() -> None:
    betas = linear_betas(1000)
    assert betas.dtype == torch.float64 and betas.shape == (1000,)
    assert betas[0].item() == pytest.approx(1e-4, abs=1e-15)
    assert betas[-1].item() == pytest.approx(2e-2, abs=1e-15)
    assert torch.all(betas.diff() > 0)
    assert torch.equal(make_betas("linear"), betas)


def test_cosine_schedule_follows_its_formula() -> None:
    s, steps = 0.008, 1000
    alpha_bar = alphas_cumprod(cosine_betas(steps, s))

    def f(t: float) -> float:
        return math.cos((t / steps + s) / (1 + s) * math.pi / 2) ** 2

    for t in (0, 1, 250, 499, 750, 900):
        # alpha_bar after step t (0-based) is f(t + 1) / f(0) while no beta is clipped.
        assert alpha_bar[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    assert cosine_betas(steps, s).max().item() <= 0.999  # clipped at the end
    assert torch.equal(make_betas("cosine"), cosine_betas())
    with pytest.raises(ValueError):
        make_betas("quadratic")


def test_alpha_bar_is_float64_and_decreasing() -> None:
    alpha_bar = alphas_cumprod(linear_betas())
    assert alpha_bar.dtype == torch.float64
    assert torch.all(alpha_bar.diff() < 0)
    # t_test = 500 (index 499) keeps ~9% of the signal variance under the linear schedule
    assert 0.07 < alpha_bar[499].item() < 0.09


def test_q_sample_mean_and_variance() -> None:
    alpha_bar = alphas_cumprod(linear_betas())
    generator = torch.Generator().manual_seed(0)
    x0 = torch.full((4000, 1, 4, 4), 0.3)
    t = torch.full((4000,), 499)
    noise = make_noise("gaussian", x0.shape, generator=generator, device="cpu")
    x_t = q_sample(x0, t, noise, alpha_bar)
    ab = alpha_bar[499].item()
    assert x_t.mean().item() == pytest.approx(math.sqrt(ab) * 0.3, abs=0.01)
    assert x_t.var().item() == pytest.approx(1 - ab, rel=0.02)
    # per-sample t: t = 0 keeps almost all of x0
    mixed = q_sample(x0[:2], torch.tensor([0, 999]), torch.zeros(2, 1, 4, 4), alpha_bar)
    assert mixed[0].mean().item() == pytest.approx(0.3 * math.sqrt(alpha_bar[0].item()))
    assert mixed[1].abs().max().item() < 0.01


def test_timesteps_cover_the_range() -> None:
    t = sample_timesteps(20000, 1000, torch.Generator().manual_seed(0), "cpu")
    assert t.min().item() == 0 and t.max().item() == 999


def test_model_space_round_trip() -> None:
    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(from_model_space(to_model_space(x)), x)
    # An overshooting prediction stays as it is: clipping belongs to the evaluation protocol.
    assert from_model_space(torch.tensor([-3.0, 3.0])).tolist() == [-1.0, 2.0]


def test_noise_kinds() -> None:
    generator = torch.Generator().manual_seed(0)
    assert make_noise("simplex", (2, 1, 16, 16), generator=generator, device="cpu").shape == (2, 1, 16, 16)
    with pytest.raises(ValueError):
        make_noise("pink", (1, 1, 4, 4), generator=generator, device="cpu")
