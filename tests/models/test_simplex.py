"""Simplex noise: value for value equal to the opensimplex package, seeding, statistics, spectrum."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mriad.models.simplex import noise2, permutations_from_seeds, simplex_field, simplex_noise

opensimplex = pytest.importorskip("opensimplex")

EXTREME_SEEDS = [0, 3, 13, -5, 2**63 - 1, -(2**63), 123456789012345]


@pytest.mark.parametrize("seed", EXTREME_SEEDS)
def test_pointwise_noise_matches_opensimplex(seed: int) -> None:
    rng = np.random.default_rng(abs(seed) % 1000)
    x, y = rng.uniform(-30, 30, 23), rng.uniform(-30, 30, 19)
    opensimplex.seed(seed)
    expected = opensimplex.noise2array(x, y)  # [j, i] = noise2(x[i], y[j])
    grid_x, grid_y = np.meshgrid(x, y)
    got = noise2(torch.from_numpy(grid_x), torch.from_numpy(grid_y), permutations_from_seeds([seed]))[0]
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-12)


def _reference_field(seed: int, size: int, octaves: int, persistence: float, frequency: float) -> np.ndarray:
    """AnoDDPM's octave loop (feature size halves, amplitude x persistence), on opensimplex."""
    opensimplex.seed(seed)
    field, amplitude = np.zeros((size, size)), 1.0
    coords = np.arange(size, dtype=np.float64)
    for _ in range(octaves):
        field += amplitude * opensimplex.noise2array(coords / frequency, coords / frequency).T
        frequency /= 2
        amplitude *= persistence
    return field


def test_fractal_field_matches_opensimplex_value_for_value() -> None:
    seeds = [11, -7, 2**40 + 3]
    got = simplex_noise((3, 1, 40, 40), seeds=seeds, dtype=torch.float64)
    for i, seed in enumerate(seeds):
        np.testing.assert_allclose(got[i, 0].numpy(), _reference_field(seed, 40, 6, 0.8, 64.0), atol=1e-6)
    # float32 (the training default) only loses float32 rounding
    got32 = simplex_noise((3, 1, 40, 40), seeds=seeds)
    np.testing.assert_allclose(got32[:, 0].double().numpy(), got[:, 0].numpy(), atol=1e-5)


def test_other_octave_settings_match_too() -> None:
    got = simplex_noise((1, 24, 24), seeds=[5], octaves=3, persistence=0.5, frequency=8.0, dtype=torch.float64)
    np.testing.assert_allclose(got[0].numpy(), _reference_field(5, 24, 3, 0.5, 8.0), atol=1e-6)


def test_generator_seeding_is_reproducible_and_fields_differ() -> None:
    a = simplex_noise((4, 1, 32, 32), generator=torch.Generator().manual_seed(1))
    b = simplex_noise((4, 1, 32, 32), generator=torch.Generator().manual_seed(1))
    c = simplex_noise((4, 1, 32, 32), generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    for i in range(4):  # a distinct field per sample, not one field for the batch
        for j in range(i):
            assert not torch.allclose(a[i], a[j])


def test_statistics() -> None:
    generator = torch.Generator().manual_seed(0)
    single = simplex_noise((64, 48, 48), generator=generator, octaves=1, frequency=8.0)
    assert single.abs().max() <= 1.0  # one octave of OpenSimplex stays within [-1, 1]
    assert abs(single.mean().item()) < 0.02
    fractal = simplex_noise((64, 96, 96), generator=generator)
    assert abs(fractal.mean().item()) < 0.1
    assert 0.2 < fractal.std().item() < 1.0  # unnormalised, as in the reference
    normalised = simplex_noise((8, 96, 96), generator=generator, normalise=True)
    torch.testing.assert_close(normalised.mean(dim=(1, 2)), torch.zeros(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(normalised.std(dim=(1, 2)), torch.ones(8), atol=1e-5, rtol=0)


def _high_frequency_share(field: torch.Tensor) -> float:
    power = torch.fft.rfft2(field - field.mean(dim=(-2, -1), keepdim=True)).abs().pow(2).mean(0)
    fy = torch.fft.fftfreq(field.shape[-2]).abs()[:, None]
    fx = torch.fft.rfftfreq(field.shape[-1])[None]
    high = (torch.maximum(fy, fx) > 0.125).float()
    return float((power * high).sum() / power.sum())


def test_more_octaves_add_high_frequency_power() -> None:
    shares = []
    for octaves in (1, 3, 6):
        fields = simplex_noise((32, 96, 96), generator=torch.Generator().manual_seed(3), octaves=octaves)
        shares.append(_high_frequency_share(fields))
    assert shares[0] < shares[1] < shares[2]


def test_field_shape_and_validation() -> None:
    perm = permutations_from_seeds([1, 2])
    assert simplex_field(perm, (20, 30)).shape == (2, 20, 30)
    with pytest.raises(ValueError):
        simplex_noise((2, 8, 8), seeds=[1])  # one seed for two fields
    with pytest.raises(ValueError):
        simplex_field(perm, (8, 8), octaves=0)
