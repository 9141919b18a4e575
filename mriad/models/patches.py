"""Boxes (patches) of a slice: the evenly spaced grid, random boxes, masks and stitching.

A box is ``(top, left, bottom, right)`` in pixels, bottom/right exclusive, as an int64 row.

The grid follows the design notes rather than the paper's unexplained K formula: per axis
``n = ceil(size / patch)`` starts, evenly spaced from 0 to ``size - patch`` (rounded half up), so
any patch size covers the slice; where boxes overlap, their predictions are averaged. For 48 on 96
this is the reference's 2 x 2 grid with stride 48; for 60 it is starts 0 and 36 (overlap 24).
"""

from __future__ import annotations

import math
from typing import Any

import torch


def grid_starts(size: int, patch: int) -> list[int]:
    """Evenly spaced starts covering ``size`` with boxes of ``patch`` (clamped to ``size``)."""
    if size < 1 or patch < 1:
        raise ValueError(f"grid needs positive sizes, got size {size}, patch {patch}")
    patch = min(patch, size)
    n = math.ceil(size / patch)
    if n == 1:
        return [0]
    # floor(v + 0.5), not round(): Python rounds halves to even, which would make grids asymmetric.
    return [math.floor(i * (size - patch) / (n - 1) + 0.5) for i in range(n)]


def grid_boxes(height: int, width: int, patch: int | tuple[int, int]) -> torch.Tensor:
    """All boxes of the grid, row-major, ``(K, 4)``."""
    ph, pw = (patch, patch) if isinstance(patch, int) else patch
    ph, pw = min(ph, height), min(pw, width)
    boxes = [(r, c, r + ph, c + pw) for r in grid_starts(height, ph) for c in grid_starts(width, pw)]
    return torch.tensor(boxes, dtype=torch.long)


def full_box(height: int, width: int) -> torch.Tensor:
    """The single box covering the whole slice (plain DDPM), ``(1, 4)``."""
    return torch.tensor([[0, 0, height, width]], dtype=torch.long)


def random_boxes(
    n: int, height: int, width: int, patch: int, generator: torch.Generator | None, device: Any
) -> torch.Tensor:
    """``n`` boxes at uniformly random integer positions fully inside the slice, ``(n, 4)``."""
    ph, pw = min(patch, height), min(patch, width)
    source = generator.device if generator is not None else device
    top = torch.randint(0, height - ph + 1, (n,), generator=generator, device=source)
    left = torch.randint(0, width - pw + 1, (n,), generator=generator, device=source)
    return torch.stack([top, left, top + ph, left + pw], dim=1).to(device)


def box_masks(boxes: torch.Tensor, height: int, width: int, dtype: torch.dtype = torch.bool) -> torch.Tensor:
    """Masks ``(len(boxes), 1, H, W)``: 1 inside each box. Built by broadcasting, no Python loop."""
    rows = torch.arange(height, device=boxes.device)
    cols = torch.arange(width, device=boxes.device)
    in_rows = (rows[None] >= boxes[:, 0:1]) & (rows[None] < boxes[:, 2:3])
    in_cols = (cols[None] >= boxes[:, 1:2]) & (cols[None] < boxes[:, 3:4])
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None].to(dtype)


def coverage(masks: torch.Tensor) -> torch.Tensor:
    """How many boxes cover each pixel, ``(1, H, W)``; every pixel of a grid is covered at least once."""
    return masks.to(torch.float32).sum(dim=0)


def stitch(predictions: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Average per-box predictions ``(N, K, C, H, W)`` over the boxes ``(K, 1, H, W)`` that cover a pixel."""
    weights = masks.to(predictions.dtype)
    return (predictions * weights).sum(dim=1) / coverage(masks).to(predictions.dtype)


def boxes_with_brain(boxes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Which boxes hold at least one brain pixel, per slice: ``(N, K)`` bool.

    ``mask`` is ``(N, 1, H, W)`` (any dtype, non-zero = brain). A summed-area table gives every box's
    brain-pixel count in four lookups, instead of materialising an ``(N, K, H, W)`` intersection.
    """
    brain = (mask[:, 0] != 0).to(torch.int32)
    table = torch.nn.functional.pad(brain.cumsum(1).cumsum(2), (1, 0, 1, 0))  # (N, H+1, W+1)
    top, left, bottom, right = (boxes[:, i].to(mask.device) for i in range(4))
    counts = table[:, bottom, right] - table[:, top, right] - table[:, bottom, left] + table[:, top, left]
    return counts > 0


def chunk_size(total: int, limit: int) -> int:
    """Inputs per network call for ``total`` inputs and at most ``limit`` per call: little padding.

    Every call of one reconstruction has this one size (the last call is padded), so an input's
    result never depends on what else its call holds (see ``DiffusionModel.reconstruct``). Among the
    sizes from ``limit / 2`` to ``limit`` the one that pads least is taken (ties: the larger size,
    fewer calls); e.g. 50 slices with at most 8 per call -> 10 calls of 5, not 7 calls of 8 (6 padded).
    """
    limit = max(1, int(limit))
    if total <= limit:
        return max(1, int(total))
    return min(range((limit + 1) // 2, limit + 1), key=lambda size: (math.ceil(total / size) * size, -size))
