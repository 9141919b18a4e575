"""Simplex noise in torch: OpenSimplex 2D, value for value, as multi-octave fields for a whole batch.

pDDPM noises with simplex noise (Wyatt et al., AnoDDPM 2022) instead of Gaussian noise, because its
low-frequency structure lets the network "heal" lesion-sized regions. The reference implementations
draw ONE field per batch on the CPU (numba) and copy it to the GPU; here every sample gets its own
field, generated on the device.

The noise is Kurt Spencer's OpenSimplex 2D as the ``opensimplex`` package computes it (stretch and
squish constants, 8 lattice gradients, a 256-entry permutation drawn from a 64-bit LCG seed); the
fractal field follows AnoDDPM's octave loop::

    field[r, c] = sum_k persistence**k * noise2(r / f_k, c / f_k),   f_k = frequency / 2**k

(``frequency`` is a feature size in pixels, halved each octave; rows map to the first coordinate).

Why it is fast: for a fixed grid, everything except the gradient choice is the same for every
sample, and the field is linear in the lattice gradients. So the geometry (which lattice vertices
touch which pixel, with what falloff and offset) is computed once per grid and stored as a sparse
matrix ``M`` (pixels x 2 * vertices, all octaves folded in); a batch of fields is then one gradient
lookup per (sample, vertex) and one sparse-dense product (an ``embedding_bag`` sum).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

# OpenSimplex 2D constants, as in the opensimplex package (values written with the same digits so
# that results agree to the last bit of float64 arithmetic order, not just approximately).
STRETCH_2D = -0.211324865405187  # (1 / sqrt(3) - 1) / 2
SQUISH_2D = 0.366025403784439  # (sqrt(3) - 1) / 2
NORM_2D = 47.0
# Eight gradients pointing at the vertices of an octagon, stored as (gx, gy) pairs; a lattice hash
# ``& 0x0E`` picks the even index of a pair.
GRADIENTS_2D = (5, 2, 2, 5, -5, 2, -2, 5, 5, -2, 2, -5, -5, -2, -2, -5)
_LCG_MULTIPLIER = 6364136223846793005
_LCG_INCREMENT = 1442695040888963407


# ---- permutations ---------------------------------------------------------------------------------
def permutations_from_seeds(seeds: Sequence[int] | torch.Tensor, device: Any = "cpu") -> torch.Tensor:
    """The opensimplex permutation for each 64-bit seed, ``(len(seeds), 256)`` int64.

    Same result as ``opensimplex.OpenSimplex(seed)``; vectorised over seeds with numpy's wrapping
    uint64 arithmetic (the shuffle itself is inherently sequential over its 256 steps).
    """
    raw = seeds.cpu().numpy() if isinstance(seeds, torch.Tensor) else np.asarray(list(seeds))
    # Python ints of any size wrap to int64 exactly like opensimplex's ctypes overflow does.
    state = np.array([int(s) & (2**64 - 1) for s in raw.reshape(-1).tolist()], dtype=np.uint64)
    mul, inc = np.uint64(_LCG_MULTIPLIER), np.uint64(_LCG_INCREMENT)
    with np.errstate(over="ignore"):
        for _ in range(3):
            state = state * mul + inc
        source = np.tile(np.arange(256, dtype=np.int64), (len(state), 1))
        perm = np.zeros_like(source)
        rows = np.arange(len(state))
        for i in range(255, -1, -1):
            state = state * mul + inc
            signed = state.view(np.int64)
            # opensimplex computes (seed + 31) % (i + 1) on unbounded ints; reducing first avoids int64
            # overflow of seed + 31 and gives the same non-negative remainder.
            r = (np.mod(signed, i + 1) + 31) % (i + 1)
            perm[:, i] = source[rows, r]
            source[rows, r] = source[:, i]
    return torch.from_numpy(perm).to(device)


def random_permutations(n: int, generator: torch.Generator | None = None, device: Any = None) -> torch.Tensor:
    """``n`` independent uniform permutations of 0..255 drawn on the device (no host round trip)."""
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    keys = torch.rand((n, 256), generator=generator, device=device, dtype=torch.float64)
    return keys.argsort(dim=1)


def _gradient_table(device: Any, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(GRADIENTS_2D, device=device, dtype=dtype)


# ---- pointwise OpenSimplex 2D -------------------------------------------------------------------
def _contributing_vertices(x: np.ndarray, y: np.ndarray) -> list[tuple[np.ndarray, ...]]:
    """The four lattice vertices OpenSimplex sums for each point: (xsv, ysv, dx, dy) per vertex.

    Float64 numpy, branch-free: each ``if`` of the scalar algorithm becomes an ``np.where``.
    """
    stretch = (x + y) * STRETCH_2D
    xs, ys = x + stretch, y + stretch
    xsb, ysb = np.floor(xs), np.floor(ys)
    squish = (xsb + ysb) * SQUISH_2D
    xins, yins = xs - xsb, ys - ysb
    in_sum = xins + yins
    dx0, dy0 = x - (xsb + squish), y - (ysb + squish)
    xsb_i, ysb_i = xsb.astype(np.int64), ysb.astype(np.int64)
    two_s = 2 * SQUISH_2D

    vertices: list[tuple[np.ndarray, ...]] = [
        (xsb_i + 1, ysb_i, dx0 - 1 - SQUISH_2D, dy0 - SQUISH_2D),  # (1, 0)
        (xsb_i, ysb_i + 1, dx0 - SQUISH_2D, dy0 - 1 - SQUISH_2D),  # (0, 1)
    ]
    lower = in_sum <= 1  # inside the triangle at (0, 0), else the one at (1, 1)
    x_gt_y = xins > yins
    # Lower triangle: the extra vertex depends on whether (0, 0) is one of the two closest vertices.
    zl = 1 - in_sum
    near0 = (zl > xins) | (zl > yins)
    lx = np.where(near0, np.where(x_gt_y, xsb_i + 1, xsb_i - 1), xsb_i + 1)
    ly = np.where(near0, np.where(x_gt_y, ysb_i - 1, ysb_i + 1), ysb_i + 1)
    ldx = np.where(near0, np.where(x_gt_y, dx0 - 1, dx0 + 1), dx0 - 1 - two_s)
    ldy = np.where(near0, np.where(x_gt_y, dy0 + 1, dy0 - 1), dy0 - 1 - two_s)
    # Upper triangle: mirrored, and the base vertex moves to (1, 1).
    zu = 2 - in_sum
    near1 = (zu < xins) | (zu < yins)
    ux = np.where(near1, np.where(x_gt_y, xsb_i + 2, xsb_i), xsb_i)
    uy = np.where(near1, np.where(x_gt_y, ysb_i, ysb_i + 2), ysb_i)
    udx = np.where(near1, np.where(x_gt_y, dx0 - 2 - two_s, dx0 - two_s), dx0)
    udy = np.where(near1, np.where(x_gt_y, dy0 - two_s, dy0 - 2 - two_s), dy0)
    vertices.append(
        (
            np.where(lower, xsb_i, xsb_i + 1),
            np.where(lower, ysb_i, ysb_i + 1),
            np.where(lower, dx0, dx0 - 1 - two_s),
            np.where(lower, dy0, dy0 - 1 - two_s),
        )
    )
    vertices.append(
        (np.where(lower, lx, ux), np.where(lower, ly, uy), np.where(lower, ldx, udx), np.where(lower, ldy, udy))
    )
    return vertices


def _falloff(dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    attn = 2 - dx * dx - dy * dy
    return np.where(attn > 0, attn**4, 0.0)


def _gradient_components(perm: torch.Tensor, xsv: torch.Tensor, ysv: torch.Tensor, grads: torch.Tensor) -> tuple:
    """Lattice hash ``perm[(perm[x & 255] + y) & 255] & 14`` per sample -> gradient (gx, gy)."""
    # torch.take on the flattened table: gather() along dim 1 is ~30x slower on CPU for this shape.
    base = torch.arange(perm.shape[0], device=perm.device)[:, None] * 256
    first = torch.take(perm, base + (xsv & 0xFF))
    index = torch.take(perm, base + ((first + ysv) & 0xFF)) & 0x0E
    return grads.take(index), grads.take(index + 1)


def noise2(x: torch.Tensor, y: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """OpenSimplex 2D at points ``(x, y)`` (any equal shapes) for each permutation: ``(B, *x.shape)``.

    The pointwise form, for checks and irregular points; fields on a grid use :func:`simplex_field`.
    """
    device, dtype = x.device, x.dtype if x.is_floating_point() else torch.float64
    xn = x.detach().cpu().double().numpy().reshape(-1)
    yn = y.detach().cpu().double().numpy().reshape(-1)
    grads = _gradient_table(device, torch.float64)
    perm = perm.to(device)
    value = torch.zeros(perm.shape[0], xn.size, device=device, dtype=torch.float64)
    for xsv, ysv, dx, dy in _contributing_vertices(xn, yn):
        w = torch.from_numpy(_falloff(dx, dy)).to(device)
        gx, gy = _gradient_components(
            perm, torch.from_numpy(xsv).to(device)[None], torch.from_numpy(ysv).to(device)[None], grads
        )
        value += w * (gx * torch.from_numpy(dx).to(device) + gy * torch.from_numpy(dy).to(device))
    return (value / NORM_2D).to(dtype).reshape(perm.shape[0], *x.shape)


# ---- fractal fields on a grid --------------------------------------------------------------------
class _FieldPlan:
    """Geometry of a multi-octave field on an ``H x W`` grid: unique lattice keys and the sparse map.

    Stored in CSR form (``offsets``, ``columns``, ``weights``); column ``k`` holds the x weight of
    lattice key ``k`` and column ``K + k`` its y weight. The product with the per-sample gradients is
    an ``embedding_bag`` sum, which torch runs far faster than its generic sparse matmul.
    """

    def __init__(
        self,
        height: int,
        width: int,
        octaves: int,
        persistence: float,
        frequency: float,
        device: Any,
        dtype: torch.dtype,
    ):
        rows, cols = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
        pixel = np.arange(height * width)
        entries_row, entries_key, entries_x, entries_y = [], [], [], []
        scale, amplitude = float(frequency), 1.0
        for _ in range(octaves):
            for xsv, ysv, dx, dy in _contributing_vertices((rows / scale).ravel(), (cols / scale).ravel()):
                w = amplitude * _falloff(dx, dy) / NORM_2D
                keep = w > 0  # vertices outside the kernel radius contribute nothing
                entries_row.append(pixel[keep])
                # The permutation only ever sees coordinates mod 256, so vertices that agree mod 256
                # (within or across octaves) share one gradient and one column.
                entries_key.append(((xsv[keep] & 0xFF) << 8) | (ysv[keep] & 0xFF))
                entries_x.append(w[keep] * dx[keep])
                entries_y.append(w[keep] * dy[keep])
            scale /= 2
            amplitude *= persistence
        keys, column = np.unique(np.concatenate(entries_key), return_inverse=True)
        row = np.concatenate(entries_row)
        n_keys = len(keys)
        rows_all = np.concatenate([row, row])
        cols_all = np.concatenate([column, column + n_keys])
        values = np.concatenate([np.concatenate(entries_x), np.concatenate(entries_y)])
        # Merge a pixel's repeated keys (across octaves) and order entries by pixel: CSR layout.
        entry, slot = np.unique(rows_all * (2 * n_keys) + cols_all, return_inverse=True)
        merged = np.bincount(slot.ravel(), weights=values, minlength=len(entry))
        counts = np.bincount(entry // (2 * n_keys), minlength=height * width)
        self.columns = torch.from_numpy(entry % (2 * n_keys))
        self.weights = torch.from_numpy(merged).to(dtype)
        self.offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64))
        self.shape = (height, width)
        self.key_x = torch.from_numpy(keys >> 8)[None]
        self.key_y = torch.from_numpy(keys & 0xFF)[None]
        self.grads = _gradient_table("cpu", dtype)
        for name in ("columns", "weights", "offsets", "key_x", "key_y", "grads"):
            setattr(self, name, getattr(self, name).to(device))

    def fields(self, perm: torch.Tensor) -> torch.Tensor:
        gx, gy = _gradient_components(perm, self.key_x, self.key_y, self.grads)
        table = torch.cat([gx, gy], dim=1).t().contiguous()  # (2K, B): one "embedding" row per column
        out = F.embedding_bag(self.columns, table, self.offsets, mode="sum", per_sample_weights=self.weights)
        return out.t().reshape(perm.shape[0], *self.shape)


@functools.lru_cache(maxsize=16)
def _plan(
    height: int, width: int, octaves: int, persistence: float, frequency: float, device: str, dtype: torch.dtype
) -> _FieldPlan:
    return _FieldPlan(height, width, octaves, persistence, frequency, device, dtype)


def simplex_field(
    perm: torch.Tensor,
    shape: tuple[int, int],
    *,
    octaves: int = 6,
    persistence: float = 0.8,
    frequency: float = 64.0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Multi-octave fields ``(B, H, W)``, one per permutation row (AnoDDPM's octave loop, unnormalised)."""
    if octaves < 1 or frequency <= 0:
        raise ValueError("simplex noise needs octaves >= 1 and frequency > 0")
    device = perm.device
    plan = _plan(int(shape[0]), int(shape[1]), int(octaves), float(persistence), float(frequency), str(device), dtype)
    return plan.fields(perm)


def simplex_noise(
    shape: Sequence[int],
    *,
    generator: torch.Generator | None = None,
    seeds: Sequence[int] | torch.Tensor | None = None,
    octaves: int = 6,
    persistence: float = 0.8,
    frequency: float = 64.0,
    normalise: bool = False,
    device: Any = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Simplex noise shaped like a batch ``(N, C, H, W)`` (or ``(N, H, W)``), a distinct field per image.

    Fields come from ``generator`` (random permutations drawn on the device) or, for exact
    agreement with the ``opensimplex`` package, from explicit per-image 64-bit ``seeds``.
    ``normalise`` rescales each field to zero mean and unit variance (the reference does not).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(f"simplex noise needs at least (H, W), got {shape}")
    height, width = shape[-2:]
    count = math.prod(shape[:-2]) if len(shape) > 2 else 1
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    if seeds is not None:
        perm = permutations_from_seeds(seeds, device=device)
        if perm.shape[0] != count:
            raise ValueError(f"{perm.shape[0]} seeds for {count} fields")
    else:
        source = generator.device if generator is not None else device
        perm = random_permutations(count, generator, source).to(device)
    field = simplex_field(
        perm, (height, width), octaves=octaves, persistence=persistence, frequency=frequency, dtype=dtype
    )
    if normalise:
        mean = field.mean(dim=(1, 2), keepdim=True)
        std = field.std(dim=(1, 2), keepdim=True).clamp_min(1e-12)
        field = (field - mean) / std
    return field.reshape(shape)
