"""Scaling of reconstruction: time vs number of volumes (the whole stage, files in and out) and vs
the number of boxes per slice (the model). Both should grow linearly: nothing quadratic may hide in
stitching, grouping or I/O.

    .venv/bin/python bench/scaling.py                 # CPU, the "micro" network
    python bench/scaling.py --device cuda --config paper

A tiny network makes everything that is not the network visible (on a CPU the paper network would
swamp it). Table 1 runs `mriad.reconstruct` (the stage function: NIfTI images and masks read on a
worker thread, maps written as NIfTI) on 1, 4 and 16 volumes; table 2 runs pDDPM.reconstruct on
one volume with 96-, 48-, 32- and 24-pixel boxes (K = 1, 4, 9, 16), once with the network and once
with an identity stub (noise, masks, batching and stitching only). Table 1 uses the stub network
throughout: the network's cost per volume is fixed by table 2, the stage adds only its own work.
Seconds per volume or per (slice, box) pair should stay near the smallest case's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bench_data, interleaved, load_slices, machine, random_model, spread, write_run  # noqa: E402


class _Identity(nn.Module):
    """Stands in for the network: what remains is mriad's own work around it."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x + self.dummy


def volumes_table(root: Path, config: str, device: torch.device, counts: list[int], repeats: int) -> None:
    """The stage on 1, 4, 16 volumes, with the network replaced by an identity: I/O, noise, batching
    and stitching only, so anything that grows faster than the volume count would stand out."""
    from mriad.contracts.manifest import write_manifest
    from mriad.models import registry
    from mriad.reconstruct import reconstruct

    rows = bench_data(root, max(counts))
    loader = registry.load_run_model

    def stub_model(run: Path, which: str = "best", device: object = "cpu") -> object:
        model = loader(run, which=which, device=device)
        model.net = _Identity().to(device)
        return model

    registry.load_run_model = stub_model
    try:
        print(f"{'volumes':>7s} {'seconds':>24s} {'s/volume':>10s} {'vs 1 volume':>11s}")
        first = None
        for count in counts:
            manifest = write_manifest(rows.head(count), root / f"manifest{count}.csv")
            run = write_run(root / f"run{count}", random_model("pddpm", config), manifest)

            def stage(run: Path = run) -> None:
                reconstruct(run, "ixi-test", device=device, force=True)

            times = interleaved({"stage": stage}, device, repeats, warmup=1)["stage"]
            per = float(np.median(times)) / count
            first = first or per
            print(f"{count:7d} {spread(times):>24s} {per:10.3f} {per / first:10.2f}x")
    finally:
        registry.load_run_model = loader


def boxes_table(config: str, device: torch.device, patches: list[int], repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        images, masks = load_slices(bench_data(Path(tmp), 1))
    slices, brain = images[0].to(device), masks[0].to(device)
    print(f"{'box px':>6s} {'K':>3s} {'pairs':>5s} {'network s':>22s} {'ms/pair':>8s} {'vs K=1':>7s}", end=" ")
    print(f"{'stub s':>22s} {'ms/pair':>8s}")
    first = None
    for patch in patches:
        model = random_model("pddpm", config, patch_size=patch).to(device)
        stub = random_model("pddpm", config, patch_size=patch).to(device)
        stub.net = _Identity().to(device)
        pairs = len(model.grid(96, 96)) * slices.shape[0]
        times = interleaved(
            {
                "net": lambda m=model: m.reconstruct(slices, mask=brain),
                "stub": lambda m=stub: m.reconstruct(slices, mask=brain),
            },
            device,
            repeats,
        )
        per = float(np.median(times["net"])) / pairs * 1e3
        first = first or per
        stub_per = float(np.median(times["stub"])) / pairs * 1e3
        print(
            f"{patch:6d} {pairs // slices.shape[0]:3d} {pairs:5d} {spread(times['net'], digits=3):>22s} {per:8.2f} "
            f"{per / first:6.2f}x {spread(times['stub'], digits=3):>22s} {stub_per:8.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--config", default="micro", help="network size (default micro)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="fewer cases, 1 repeat")
    args = parser.parse_args()
    device = torch.device(args.device)
    repeats = 1 if args.smoke else args.repeats
    counts = [1, 4] if args.smoke else [1, 4, 16]
    patches = [96, 48] if args.smoke else [96, 48, 32, 24]
    print(f"# reconstruction scaling, {device}: {machine(device)}")
    print(f"network '{args.config}', {repeats} repeats; median [min-max] seconds")
    with tempfile.TemporaryDirectory() as tmp:
        print(
            "time vs volumes: `mriad.reconstruct` on a split (4 volumes per group, NIfTI in and out), identity network"
        )
        volumes_table(Path(tmp), args.config, device, counts, repeats)
    print("time vs boxes per slice: pDDPM.reconstruct on one 96x96x50 volume with its brain mask")
    boxes_table(args.config, device, patches, repeats)


if __name__ == "__main__":
    main()
