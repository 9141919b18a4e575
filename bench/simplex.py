"""Simplex noise: time per 96x96 six-octave field, mriad (torch, batched) vs straightforward CPU code.

    .venv/bin/python bench/simplex.py [--fields 32] [--repeats 20]

Rows:
  mriad torch <device>       32 distinct fields per call (random permutations drawn on the device)
  mriad, plan build          one-off geometry for a grid (cached afterwards), reported separately
  numpy, one field at a time the same algorithm vectorised over pixels, no caching (a fair "numpy per field")
  opensimplex per pixel      opensimplex.noise2 per pixel and octave, as the reference's loop calls it
                             (without numba, which is not installed here: pure Python)
  reference numba (anchor)   ~2.3 ms per field on the 2-core dev machine (measured earlier, not here)

Times are the minimum over repeats: the dev machine is shared, the minimum is the least disturbed run.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from mriad.models import simplex

ANCHOR_NUMBA_MS = 2.3


def best_of(fn: Callable[[], object], repeats: int, sync: Callable[[], None] = lambda: None) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return min(times)


def numpy_field(seed: int, size: int = 96, octaves: int = 6, persistence: float = 0.8, frequency: float = 64.0):
    """One field, vectorised over pixels with numpy, no precomputed geometry."""
    perm = simplex.permutations_from_seeds([seed])[0].numpy()
    grads = np.array(simplex.GRADIENTS_2D, dtype=np.float64)
    rows, cols = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64), indexing="ij")
    field, scale, amplitude = np.zeros(size * size), frequency, 1.0
    for _ in range(octaves):
        value = np.zeros(size * size)
        for xsv, ysv, dx, dy in simplex._contributing_vertices((rows / scale).ravel(), (cols / scale).ravel()):
            index = perm[(perm[xsv & 0xFF] + ysv) & 0xFF] & 0x0E
            value += simplex._falloff(dx, dy) * (grads[index] * dx + grads[index + 1] * dy)
        field += amplitude * value / simplex.NORM_2D
        scale /= 2
        amplitude *= persistence
    return field.reshape(size, size)


def opensimplex_per_pixel(seed: int, size: int = 96, octaves: int = 6, persistence: float = 0.8, frequency=64.0):
    import opensimplex

    generator = opensimplex.OpenSimplex(seed)
    field, scale, amplitude = np.zeros((size, size)), frequency, 1.0
    for _ in range(octaves):
        for r in range(size):
            for c in range(size):
                field[r, c] += amplitude * generator.noise2(r / scale, c / scale)
        scale /= 2
        amplitude *= persistence
    return field


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fields", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="1: the shared dev machine makes 2 threads erratic")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n = args.fields
    rows: list[tuple[str, float]] = []

    simplex._plan.cache_clear()
    start = time.perf_counter()
    simplex.simplex_noise((1, 96, 96), generator=torch.Generator().manual_seed(0))
    plan_ms = (time.perf_counter() - start) * 1e3

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for name in devices:
        generator = torch.Generator(device=name).manual_seed(0)
        sync = torch.cuda.synchronize if name == "cuda" else (lambda: None)
        seconds = best_of(lambda g=generator: simplex.simplex_noise((n, 1, 96, 96), generator=g), args.repeats, sync)
        rows.append((f"mriad torch {name}, {n} fields per call", seconds * 1e3 / n))
    rows.append(("numpy, one field at a time", best_of(lambda: numpy_field(1), max(3, args.repeats // 4)) * 1e3))
    try:
        rows.append(("opensimplex.noise2 per pixel (no numba)", best_of(lambda: opensimplex_per_pixel(1), 1) * 1e3))
    except ImportError:
        pass
    rows.append(("reference numba (anchor, not measured here)", ANCHOR_NUMBA_MS))

    print(f"96x96 field, 6 octaves, persistence 0.8, frequency 64; torch {torch.__version__}, {args.threads} threads")
    print(f"one-off plan build for the 96x96 grid: {plan_ms:.0f} ms (cached per grid, device and dtype)")
    print(f"{'implementation':48s} {'ms/field':>10s} {'vs anchor':>10s}")
    for label, ms in rows:
        print(f"{label:48s} {ms:10.3f} {ANCHOR_NUMBA_MS / ms:9.1f}x")


if __name__ == "__main__":
    main()
