"""Mahalanobis scoring on 96x96 slices: batched Woodbury solve vs the reference's P x P inverse.

    .venv/bin/python bench/mahalanobis.py [--reconstructions 5] [--slices 50] [--repeats 3]

A brain-like elliptic mask (~4,900 of 9,216 pixels, as on the 96x96x50 grid) and N noisy copies of
a random slice. Rows: the reference formulation (per slice, invert the P x P covariance in float32,
``torch.linalg.inv`` as in MHD's mh_dist.py) timed on ONE slice, and :func:`mahalanobis_map` (float32,
all slices in one batched call) per slice. Times are the minimum over repeats (shared machine).
"""

from __future__ import annotations

import argparse
import time

import torch

from mriad.models.scoring import mahalanobis_map, mahalanobis_map_direct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reconstructions", type=int, default=5)
    parser.add_argument("--slices", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    rows = torch.arange(96, dtype=torch.float32)[:, None]
    cols = torch.arange(96, dtype=torch.float32)[None]
    brain = ((rows - 48) / 44) ** 2 + ((cols - 48) / 36) ** 2 <= 1
    x = torch.rand(args.slices, 1, 96, 96, generator=g) * brain
    recs = (x + 0.05 * torch.randn(args.reconstructions, *x.shape, generator=g)) * brain
    mask = brain.expand_as(x)
    x, recs, mask = x.to(device), recs.to(device), mask.to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def timed(fn) -> float:  # type: ignore[no-untyped-def]
        best = float("inf")
        for _ in range(args.repeats):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            best = min(best, time.perf_counter() - start)
        return best

    direct = timed(lambda: mahalanobis_map_direct(x[:1], recs[:, :1], mask[:1], dtype=torch.float32))
    fast = timed(lambda: mahalanobis_map(x, recs, mask)) / args.slices
    reference = mahalanobis_map_direct(x[:2], recs[:, :2], mask[:2], dtype=torch.float64)
    error = (mahalanobis_map(x[:2], recs[:, :2], mask[:2]).double() - reference).abs().max().item()
    print(
        f"device {device}, threads {torch.get_num_threads()}, N = {args.reconstructions}, "
        f"brain pixels per slice {int(brain.sum())}"
    )
    print(f"direct P x P inverse (float32), per slice : {direct * 1e3:10.1f} ms")
    print(f"Woodbury, {args.slices} slices batched, per slice: {fast * 1e3:10.3f} ms")
    print(f"speed-up: {direct / fast:,.0f}x; max |Woodbury fp32 - direct fp64| = {error:.2e}")


if __name__ == "__main__":
    main()
