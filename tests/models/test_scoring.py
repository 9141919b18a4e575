"""Mahalanobis scoring: the batched Woodbury form equals the reference's P x P inversion."""

from __future__ import annotations

import pytest
import torch

from mriad.models.scoring import (
    mahalanobis_map,
    mahalanobis_map_direct,
    residual_map,
    score_reconstructions,
)


def _data(slices: int = 3, n: int = 5, size: int = 12, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(slices, 1, size, size, generator=g)
    recs = x + 0.1 * torch.randn(n, slices, 1, size, size, generator=g)
    mask = torch.zeros(slices, 1, size, size, dtype=torch.bool)
    mask[:, :, 2:10, 3:11] = True
    mask[-1, :, 0, 0] = True  # an isolated brain pixel: slices differ in their pixel count
    return x, recs, mask


@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("regularisation", [1e-2, 1.0])
def test_woodbury_equals_direct_inverse(masked: bool, regularisation: float) -> None:
    x, recs, mask = _data()
    m = mask if masked else None
    direct = mahalanobis_map_direct(x, recs, m, regularisation)
    fast = mahalanobis_map(x, recs, m, regularisation, dtype=torch.float64)
    assert direct.abs().max() > 0.1  # a real signal, not zeros on both sides
    torch.testing.assert_close(fast, direct, rtol=1e-6, atol=1e-6)
    fast32 = mahalanobis_map(x, recs, m, regularisation)  # float32, the device default
    torch.testing.assert_close(fast32, direct, rtol=1e-3, atol=1e-4)


def test_outside_mask_is_zero_and_brain_only_covariance() -> None:
    x, recs, mask = _data()
    out = mahalanobis_map(x, recs, mask, dtype=torch.float64)
    assert (out[~mask] == 0).all()
    # Changing pixels outside the mask must not change the distance inside it.
    x2, recs2 = x.clone(), recs.clone()
    x2[~mask] = 5.0
    recs2[:, ~mask] = -3.0
    torch.testing.assert_close(mahalanobis_map(x2, recs2, mask, dtype=torch.float64), out)


def test_negative_terms_score_zero_like_the_reference() -> None:
    # The reference takes sqrt of each term d_p (S^-1 d)_p and sets the NaN of negative terms to 0.
    x, recs, _ = _data(slices=1, n=6, size=8, seed=3)
    lam = 1e-2
    r = recs[:, 0].reshape(6, -1).double()
    centred = r - r.mean(0)
    cov = centred.T @ centred / 5 + lam * torch.eye(r.shape[1], dtype=torch.float64)
    d = x.reshape(-1).double() - r.mean(0)
    terms = (d @ torch.linalg.inv(cov)) * d
    assert (terms < 0).any()
    expected = terms.sqrt().nan_to_num(0.0)
    got = mahalanobis_map(x, recs, None, lam, dtype=torch.float64).reshape(-1).double()
    torch.testing.assert_close(got, expected)


def test_anomaly_far_from_reconstructions_scores_high() -> None:
    g = torch.Generator().manual_seed(1)
    recs = 0.5 + 0.05 * torch.randn(8, 1, 1, 16, 16, generator=g)
    x = recs.mean(0).clone()
    x[:, :, 4:7, 4:7] += 0.5
    out = mahalanobis_map(x, recs)
    lesion = torch.zeros_like(x, dtype=torch.bool)
    lesion[:, :, 4:7, 4:7] = True
    assert out[lesion].min() > out[~lesion].max()


def test_score_reconstructions_modes_and_errors() -> None:
    x, recs, mask = _data()
    x_hat, score = score_reconstructions("residual", x, recs)
    torch.testing.assert_close(x_hat, recs.mean(0))
    torch.testing.assert_close(score, residual_map(x, recs))
    _, mhd = score_reconstructions("mahalanobis", x, recs, mask)
    _, both = score_reconstructions("mahalanobis_residual", x, recs, mask)
    torch.testing.assert_close(both, mhd * (x - x_hat).abs())
    with pytest.raises(ValueError, match="unknown scoring"):
        score_reconstructions("ssim", x, recs)
    with pytest.raises(ValueError, match="at least 2"):
        mahalanobis_map(x, recs[:1])
