"""Post-processing of anomaly maps as the pDDPM paper and its reference code do it, in torch.

The chain (DESIGN.md section 5) is: residual map -> x brain mask eroded per axial slice
(2D erosion, cross structuring element, 3 iterations) -> 3D median filter of size 5.

Why these exact choices:

* The reference erodes each axial slice with ``scipy.ndimage.binary_erosion`` and
  ``generate_binary_structure(2, 1)`` (the 4-neighbour cross) for ``H // 25`` iterations, which is 3
  on the 96x96 grid. scipy treats pixels beyond the image as background (``border_value=0``), so the
  erosion also eats in from the image border; :func:`erode_axial` does the same.
* The reference filters with ``scipy.ndimage.median_filter(size=5)`` whose default boundary mode is
  ``'reflect'`` (``d c b a | a b c d | d c b a``: the edge voxel is repeated). :func:`median_filter3d`
  pads the same way, so its output equals scipy's everywhere, not only in the interior.

Everything runs on the tensors' device and is batched over volumes: volumes are ``(X, Y, Z)`` or
``(B, X, Y, Z)`` float tensors with the axial axis last. On a CPU the median is scipy's own filter on
the mask's bounding box (faster there, and the same values). Elsewhere it gathers each voxel's 5x5x5
neighbourhood from a strided (zero-copy) view and takes the median in chunks whose size bounds memory.
Voxels whose whole neighbourhood is zero are skipped (their median is exactly 0); for maps without
negative values, voxels with fewer than ``size**3 // 2 + 1`` non-zero neighbours are skipped too
(their median is exactly 0 as well). Both shortcuts are exact.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

# Elements (neighbourhood values) gathered per median chunk; bounds memory to ~16 bytes each.
_CHUNK_ELEMENTS = {"cpu": 1 << 23, "cuda": 1 << 28}


def _as_batch(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Accept ``(X, Y, Z)`` or ``(B, X, Y, Z)``; return a 4D view and whether a batch dim was added."""
    if x.dim() == 3:
        return x.unsqueeze(0), True
    if x.dim() == 4:
        return x, False
    raise ValueError(f"expected a (X, Y, Z) or (B, X, Y, Z) volume, got shape {tuple(x.shape)}")


def erode_axial(mask: torch.Tensor, iterations: int = 3) -> torch.Tensor:
    """Erode a binary mask in every axial (last-axis) slice with the 2D 4-neighbour cross.

    Equals ``scipy.ndimage.binary_erosion(slice, generate_binary_structure(2, 1), iterations)`` on
    each slice, including the background border (pixels outside the image count as 0).
    Returns a bool tensor of the input's shape.
    """
    batch, added = _as_batch(mask)
    # int16 products of shifted slices: exact for 0/1 values and much faster on CPU than bool ops.
    current = (batch != 0).to(torch.int16)
    rows, nx, ny, nz = current.shape
    for _ in range(int(iterations)):
        # One zero pixel around X and Y (scipy's border_value=0); Z, the slice axis, is not touched.
        padded = current.new_zeros((rows, nx + 2, ny + 2, nz))
        padded[:, 1:-1, 1:-1] = current
        current = padded[:, 1:-1, 1:-1].clone()
        for shifted in (padded[:, :-2, 1:-1], padded[:, 2:, 1:-1], padded[:, 1:-1, :-2], padded[:, 1:-1, 2:]):
            current *= shifted
    out = current.bool()
    return out[0] if added else out


def _reflect_index(n: int, pad: int, device: torch.device) -> torch.Tensor:
    """Indices of scipy's 'reflect' (numpy 'symmetric') padding of an axis of length ``n``."""
    index = torch.arange(-pad, n + pad, device=device)
    period = 2 * n
    index = torch.remainder(index, period)
    return torch.where(index >= n, period - 1 - index, index)


def reflect_pad3d(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Pad the last three axes of a 4D tensor by ``pad`` with scipy's 'reflect' rule."""
    for axis in (1, 2, 3):
        n = x.shape[axis]
        if n >= pad:  # mirrored edge blocks: a cheap concatenation
            x = torch.cat([x.narrow(axis, 0, pad).flip(axis), x, x.narrow(axis, n - pad, pad).flip(axis)], axis)
        else:  # axes shorter than the pad reflect several times: general index rule
            x = x.index_select(axis, _reflect_index(n, pad, x.device))
    return x


def _box_count(binary: torch.Tensor, size: int) -> torch.Tensor:
    """Number of true voxels in every ``size``^3 window of a padded 4D tensor (valid positions)."""
    counts = binary.to(torch.int16 if size**3 < 2**15 else torch.int32)
    for axis in (1, 2, 3):
        n = counts.shape[axis] - size + 1
        total = counts.narrow(axis, 0, n).clone()
        for offset in range(1, size):
            total += counts.narrow(axis, offset, n)
        counts = total
    return counts


def median_filter3d(
    x: torch.Tensor,
    size: int = 5,
    *,
    where: torch.Tensor | None = None,
    chunk_elements: int | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """3D median filter equal to ``scipy.ndimage.median_filter(x, size=size)`` (mode 'reflect').

    ``where`` (bool, same shape) limits the work to those voxels; the output is 0 elsewhere. The
    evaluation passes the brain mask, because no metric reads a value outside it.
    ``size`` must be odd (an even window has no centre voxel; scipy would shift it).
    ``backend``: "torch" (gathered windows, on any device), "scipy" (CPU tensors only) or "auto":
    scipy for CPU tensors (its per-voxel selection, on the mask's bounding box, one volume per thread,
    is faster there than torch's gather + median: bench/evaluate.py), torch on GPUs. Both give the
    same values, bit for bit.
    """
    if size % 2 != 1 or size < 1:
        raise ValueError(f"median filter size must be odd and positive, got {size}")
    if backend not in ("auto", "torch", "scipy"):
        raise ValueError(f"median backend must be auto, torch or scipy, got {backend!r}")
    if backend == "scipy" or (backend == "auto" and x.device.type == "cpu" and _has_scipy()):
        return _median_scipy(x, size, where)
    batch, added = _as_batch(x)
    out = torch.zeros_like(batch)
    if size == 1:
        out = batch.clone()
        if where is not None:
            out = out * _as_batch(where)[0].to(out.dtype)
        return out[0] if added else out
    pad = size // 2
    window = size**3
    rank = window // 2  # scipy's rank for the median: the middle of the sorted window
    padded = reflect_pad3d(batch, pad)

    count = _box_count(padded != 0, size)
    # Exact shortcuts: an all-zero window has median 0; a non-negative window with more than half
    # zeros has median 0 too.
    minimum = 0 if bool((batch < 0).any()) else rank
    needed = count > minimum
    if where is not None:
        needed &= _as_batch(where)[0].bool()
    b, i, j, k = needed.nonzero(as_tuple=True)
    if b.numel() == 0:
        return out[0] if added else out

    # A zero-copy view (B, X, Y, Z, s, s, s) of every voxel's neighbourhood.
    windows = padded.unfold(1, size, 1).unfold(2, size, 1).unfold(3, size, 1)
    if chunk_elements is None:
        chunk_elements = _CHUNK_ELEMENTS["cuda" if x.device.type == "cuda" else "cpu"]
    step = max(1, chunk_elements // window)
    for start in range(0, b.numel(), step):
        sl = slice(start, start + step)
        values = windows[b[sl], i[sl], j[sl], k[sl]].reshape(-1, window)
        out[b[sl], i[sl], j[sl], k[sl]] = _median_rows(values, rank)
    return out[0] if added else out


def _has_scipy() -> bool:
    try:
        import scipy.ndimage  # noqa: F401
    except ImportError:
        return False
    return True


def _median_scipy(x: torch.Tensor, size: int, where: torch.Tensor | None) -> torch.Tensor:
    """scipy's median filter per volume, cropped to the bounding box of ``where`` plus a margin.

    The margin of ``size // 2`` voxels gives every voxel of the box its true neighbourhood; where the
    crop meets the volume's edge, scipy's 'reflect' rule applies exactly as on the whole volume. So the
    result inside ``where`` equals the uncropped filter, and the crop skips the empty border.
    """
    from scipy import ndimage

    batch, added = _as_batch(x)
    values = batch.detach().cpu().contiguous().numpy()
    keep = None if where is None else _as_batch(where)[0].detach().cpu().bool().numpy()
    out = np.zeros_like(values)
    pad = size // 2

    def one(b: int) -> None:
        if keep is None:
            out[b] = ndimage.median_filter(values[b], size=size)
            return
        inside = tuple(np.nonzero(keep[b].any(axis=other))[0] for other in ((1, 2), (0, 2), (0, 1)))
        if any(len(axis) == 0 for axis in inside):
            return  # nothing to compute: the output stays 0
        box = tuple(
            slice(max(0, axis[0] - pad), min(n, axis[-1] + 1 + pad)) for axis, n in zip(inside, values.shape[1:])
        )
        out[b][box] = ndimage.median_filter(values[b][box], size=size) * keep[b][box]

    # scipy's rank filter releases the GIL: volumes run in parallel on torch's intra-op thread count.
    workers = max(1, min(torch.get_num_threads(), values.shape[0]))
    if workers == 1:
        for b in range(values.shape[0]):
            one(b)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, range(values.shape[0])))
    result = torch.from_numpy(out).to(x.device)
    return result[0] if added else result


def _median_rows(values: torch.Tensor, rank: int, use_sort: bool | None = None) -> torch.Tensor:
    """The ``rank``-th smallest value of each row (the median for an odd row length).

    GPUs: a segmented sort of short rows is the fastest exact selection. CPUs: torch.median
    (nth_element per row) is several times faster than a full sort (pytorch issue 51450).
    """
    if use_sort is None:
        use_sort = values.device.type == "cuda"
    if use_sort:
        return torch.sort(values, dim=1).values[:, rank]
    return values.median(dim=1).values


def dilate_box(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Voxels within ``radius`` (chessboard distance, in 3D) of a true voxel of ``mask``."""
    batch, added = _as_batch(mask)
    if radius <= 0:
        out = batch.bool()
    else:
        size = 2 * radius + 1
        out = torch.nn.functional.max_pool3d(batch.float()[:, None], size, stride=1, padding=radius)[:, 0] > 0
    return out[0] if added else out


def postprocess(
    score: torch.Tensor,
    mask: torch.Tensor,
    *,
    erosion_iterations: int = 3,
    median_size: int = 5,
    restrict_to_mask: bool = True,
) -> torch.Tensor:
    """Anomaly map x eroded brain mask, then the 3D median filter (the reference's chain).

    ``score`` and ``mask`` are ``(X, Y, Z)`` or ``(B, X, Y, Z)`` on the same device. With
    ``restrict_to_mask`` the median is only computed inside the (uneroded) brain mask and the map is
    0 outside (the ``brain`` protocol never reads a value there). Without it the result is the
    median filter of the whole masked volume, as the reference computes it: values leak up to
    ``median_size // 2`` voxels beyond the eroded mask. Farther out every window holds only zeros, so
    the filter is computed on that margin alone and is still exact everywhere.
    """
    if score.shape != mask.shape:
        raise ValueError(f"score {tuple(score.shape)} and mask {tuple(mask.shape)} differ in shape")
    brain = mask != 0
    eroded = erode_axial(brain, erosion_iterations)
    masked = score.to(torch.float32) * eroded.to(torch.float32)
    where = brain if restrict_to_mask else dilate_box(eroded, median_size // 2)
    return median_filter3d(masked, median_size, where=where)
