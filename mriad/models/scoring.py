"""Anomaly scores from several reconstructions: residual or pixel-wise Mahalanobis distance (MHD).

MHD (Behrendt et al., MICCAI 2024): reconstruct a slice N times with different noise; the N
reconstructions ``r_1..r_N`` (brain pixels only, P of them) define a mean ``m`` and a covariance
``S = U^T U + lambda I`` with ``U = (r - m) / sqrt(N - 1)`` (N x P) and ``lambda = 1e-2``. With
``d = x - m`` the pixel-wise distance is ``sqrt(d_p (S^-1 d)_p)``: the terms of the squared
Mahalanobis distance ``d^T S^-1 d`` that belong to pixel p. A term can be negative (the
off-diagonal part of ``S^-1``); the reference takes the square root of it as is, gets NaN and sets
NaN to 0, which :func:`mahalanobis_map` reproduces by scoring negative terms 0.

The reference inverts the P x P matrix per slice (P ~ 5000 brain pixels on 96 x 96: ~100 MB and
~0.4 TFLOP per slice). ``U^T U`` has rank at most N - 1, so the Woodbury identity gives the same
vector with an N x N solve::

    S^-1 d = (d - U^T (lambda I_N + U U^T)^-1 U d) / lambda

which costs O(N^2 P) per slice and runs batched over all slices of a volume. Pixels outside the
mask are zeroed in ``d`` and ``U``: ``S`` is then block-diagonal (the brain block plus ``lambda I``),
so the brain pixels get exactly the distance of the brain-only computation, and the rest scores 0.

Reference configuration (FinnBehrendt/Mahalanobis-Unsupervised-Anomaly-Detection,
configs/experiment/MHD/cDDPM_MHD.yaml and src/models/DDPM_2D.py): 10 reconstructions at
t = 500 (``num_mc_samples`` default 10), ``mh_regu`` 1e-2, distance over the brain mask
(``masked_mhd``), and the final map is the distance min-max normalised over the volume times an SSIM
residual (``residualmode: ssim``). mriad's ``mahalanobis`` score is the distance itself, not
min-max normalised per volume (a model scores slices and does not know their volume; the
normalisation also rescales each volume differently before the threshold pooled over volumes);
``mahalanobis_residual`` multiplies the distance by the L1 residual of the mean reconstruction
(mriad has no SSIM residual).
"""

from __future__ import annotations

import torch

SCORINGS = ("residual", "mahalanobis", "mahalanobis_residual")


def _flatten(
    x: torch.Tensor, recs: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Slices ``(S, C, H, W)`` -> vectors ``(S, P)``, reconstructions ``(N, S, ...)`` -> ``(S, N, P)``."""
    if recs.dim() != x.dim() + 1 or recs.shape[1:] != x.shape:
        raise ValueError(f"reconstructions {tuple(recs.shape)} must be (N, *{tuple(x.shape)})")
    if recs.shape[0] < 2:
        raise ValueError("the Mahalanobis distance needs at least 2 reconstructions")
    s = x.shape[0]
    flat_x = x.reshape(s, -1)
    flat_r = recs.reshape(recs.shape[0], s, -1).transpose(0, 1)
    flat_m = None
    if mask is not None:
        flat_m = (mask != 0).expand_as(x).reshape(s, -1)
    return flat_x, flat_r, flat_m


@torch.no_grad()
def mahalanobis_map(
    x: torch.Tensor,
    recs: torch.Tensor,
    mask: torch.Tensor | None = None,
    regularisation: float = 1e-2,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Pixel-wise Mahalanobis distance of ``x`` to its reconstructions, batched over slices (Woodbury).

    ``x`` ``(S, C, H, W)``; ``recs`` ``(N, S, C, H, W)``, N >= 2; ``mask`` broadcastable to ``x``
    (non-zero = brain; None: every pixel). Returns ``(S, C, H, W)`` in ``x``'s dtype, 0 outside the
    mask. Each slice's covariance is over its own pixels (all channels of a slice form one vector).
    """
    flat_x, flat_r, flat_m = _flatten(x, recs, mask)
    n = flat_r.shape[1]
    lam = float(regularisation)
    mean = flat_r.to(dtype).mean(dim=1)
    d = flat_x.to(dtype) - mean  # (S, P)
    u = (flat_r.to(dtype) - mean[:, None]) / (n - 1) ** 0.5  # (S, N, P)
    if flat_m is not None:
        keep = flat_m.to(dtype)
        d = d * keep
        u = u * keep[:, None]
    gram = u @ u.transpose(1, 2)  # (S, N, N)
    gram.diagonal(dim1=1, dim2=2).add_(lam)
    # lambda I + U U^T is symmetric positive definite with eigenvalues >= lambda: Cholesky is safe.
    factor = torch.linalg.cholesky(gram)
    y = torch.cholesky_solve((u @ d[:, :, None]), factor)  # (S, N, 1)
    s_inv_d = (d - (u.transpose(1, 2) @ y)[:, :, 0]) / lam
    terms = d * s_inv_d
    return terms.clamp(min=0).sqrt().reshape(x.shape).to(x.dtype)


@torch.no_grad()
def mahalanobis_map_direct(
    x: torch.Tensor,
    recs: torch.Tensor,
    mask: torch.Tensor | None = None,
    regularisation: float = 1e-2,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """The reference's formulation: per slice, invert the P x P covariance of the brain pixels.

    Kept to check :func:`mahalanobis_map` against and to measure the speed-up; memory grows with P^2.
    """
    flat_x, flat_r, flat_m = _flatten(x, recs, mask)
    out = torch.zeros_like(flat_x, dtype=dtype)
    n = flat_r.shape[1]
    for i in range(flat_x.shape[0]):
        keep = flat_m[i] if flat_m is not None else torch.ones_like(flat_x[i], dtype=torch.bool)
        if not keep.any():
            continue
        r = flat_r[i][:, keep].to(dtype)
        mean = r.mean(dim=0)
        centred = r - mean
        covariance = centred.T @ centred / (n - 1)
        covariance += regularisation * torch.eye(covariance.shape[0], dtype=dtype, device=covariance.device)
        d = flat_x[i][keep].to(dtype) - mean
        terms = (d @ torch.linalg.inv(covariance)) * d
        out[i, keep] = terms.clamp(min=0).sqrt()
    return out.reshape(x.shape).to(x.dtype)


def residual_map(x: torch.Tensor, recs: torch.Tensor) -> torch.Tensor:
    """|x - mean of the reconstructions| (N = 1: the plain residual)."""
    return (x - recs.mean(dim=0)).abs()


def score_reconstructions(
    scoring: str,
    x: torch.Tensor,
    recs: torch.Tensor,
    mask: torch.Tensor | None = None,
    regularisation: float = 1e-2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_hat, score)`` for ``x`` ``(S, C, H, W)`` and ``recs`` ``(N, S, C, H, W)``.

    ``x_hat`` is the mean reconstruction; ``score`` per ``scoring`` (see :data:`SCORINGS`).
    """
    x_hat = recs.mean(dim=0)
    if scoring == "residual":
        return x_hat, (x - x_hat).abs()
    if scoring == "mahalanobis":
        return x_hat, mahalanobis_map(x, recs, mask, regularisation)
    if scoring == "mahalanobis_residual":
        return x_hat, mahalanobis_map(x, recs, mask, regularisation) * (x - x_hat).abs()
    raise ValueError(f"unknown scoring {scoring!r}; expected one of {', '.join(SCORINGS)}")
