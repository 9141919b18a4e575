"""Training throughput: mriad's engine vs a reference-style loop, slices/s and MFU.

    .venv/bin/python bench/train_throughput.py                      # small network on the CPU
    .venv/bin/python bench/train_throughput.py --device cuda --config paper --batch-size 32

Both loops train the same model on the same synthetic 96x96x50 volumes (written as NIfTI), same batch:

  mriad engine     the split loaded once onto the device, slices drawn there, a distinct simplex field
                   per slice generated on the device, bf16 autocast + channels_last on CUDA (fp32 on CPU):
                   exactly the engine's per-step work (DeviceSlices.sample_slices + model.training_step).
  reference-style  a torch DataLoader over the NIfTI files (one random slice per volume, as the
                   reference's epochs), fp32, ONE simplex field per batch generated on the CPU and copied
                   to the device. The reference computes that field with numba (~2.3 ms on the dev
                   machine); numba is not installed here, so the field comes from mriad's CPU simplex
                   for one field (~0.05-0.5 ms), which flatters the reference slightly.

FLOPs per step are counted with torch.utils.flop_counter on one real training step (forward and
backward); the peak is measured with a matmul benchmark on the same device and dtype (fp32 on CPU,
bf16 on CUDA), so MFU = counted FLOPs / step time / measured matmul peak.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

CONFIGS = {
    "paper": {},
    "small": {"base_channels": 16, "channel_mult": "1,2,2", "num_res_blocks": 1, "groups": 8, "head_channels": 32},
}


def write_volumes(root: Path, count: int, depth: int = 50) -> Path:
    """Smooth random "brains" on the preprocessed grid, with masks and a manifest (ixi trainval)."""
    from mriad.io import write_nifti
    from mriad.manifest import write_manifest

    rng = np.random.default_rng(0)
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in (96, 96, depth)), indexing="ij")
    rows = []
    for i in range(count):
        mask = (x / 0.8) ** 2 + (y / 0.9) ** 2 + (z / 1.2) ** 2 < 1
        image = (0.5 + 0.3 * np.sin(5 * x + rng.uniform(0, 6)) * np.cos(4 * y)) * mask
        sid = f"IXI{i:03d}"
        write_nifti(root / sid / "image.nii.gz", image.astype(np.float32), np.diag([2.0, 2, 2, 1]))
        write_nifti(root / sid / "mask.nii.gz", mask.astype(np.uint8), np.diag([2.0, 2, 2, 1]), dtype=np.uint8)
        rows.append(
            {
                "subject_id": sid,
                "dataset": "ixi",
                "split": "trainval",
                "fold": i % 5,
                "label": 0,
                "image": str(root / sid / "image.nii.gz"),
                "mask": str(root / sid / "mask.nii.gz"),
            }
        )
    return write_manifest(pd.DataFrame(rows), root / "manifest.csv")


def matmul_peak(device: torch.device, dtype: torch.dtype, seconds: float = 2.0) -> float:
    n = 4096 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        _sync(device)
        start = time.perf_counter()
        for _ in range(10):
            a @ b
        _sync(device)
        best = max(best, 10 * 2 * n**3 / (time.perf_counter() - start))
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_flops(model: Any, batch: torch.Tensor, autocast: Any) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    generator = torch.Generator(device=batch.device).manual_seed(0)
    with FlopCounterMode(display=False) as counter:
        model.training_step(batch, model.configure_optimizers(), generator, autocast)
    return int(counter.get_total_flops())


def time_interleaved(steps: dict[str, Any], device: torch.device, warmup: int, count: int) -> dict[str, float]:
    """Median seconds per step of each loop, timing one step of each in turn."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {label: [] for label in steps}
    for _ in range(count):
        for label, step in steps.items():
            _sync(device)
            start = time.perf_counter()
            step()
            _sync(device)
            times[label].append(time.perf_counter() - start)
    return {label: float(np.median(values)) for label, values in times.items()}


def engine_step(model: Any, manifest: Path, device: torch.device, batch_size: int) -> Any:
    from mriad.data import load_volumes
    from mriad.manifest import read_manifest, select_split
    from mriad.train.sampler import DeviceSlices

    rows = select_split(read_manifest(manifest), "ixi-train", 0)
    data = DeviceSlices.from_split(load_volumes(rows, device=device))
    optimizers = model.configure_optimizers()
    generator = torch.Generator(device=device).manual_seed(0)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" else None

    def step() -> None:
        batch = data.sample_slices(batch_size, generator)
        if device.type == "cuda":
            batch = batch.contiguous(memory_format=torch.channels_last)
        model.training_step(batch, optimizers, generator, autocast)

    return step


class _SliceDataset(torch.utils.data.Dataset):
    """The reference pattern: read a volume file per item, return one random brain slice."""

    def __init__(self, rows: pd.DataFrame):
        self.rows = rows.reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> torch.Tensor:
        from mriad.io import read_nifti

        image = read_nifti(self.rows.loc[i, "image"]).data
        mask = read_nifti(self.rows.loc[i, "mask"], allow_empty=True).data
        brain = np.flatnonzero(mask.reshape(-1, mask.shape[-1]).any(axis=0))
        z = int(np.random.choice(brain))
        return torch.from_numpy(np.ascontiguousarray(image[:, :, z]))[None]


def reference_step(model: Any, manifest: Path, device: torch.device, batch_size: int, workers: int) -> Any:
    from mriad.manifest import read_manifest, select_split
    from mriad.models.simplex import simplex_noise

    rows = select_split(read_manifest(manifest), "ixi-train", 0)
    loader = torch.utils.data.DataLoader(
        _SliceDataset(rows),
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        persistent_workers=workers > 0,
    )
    optimizers = model.configure_optimizers()
    cpu = torch.Generator().manual_seed(0)
    state = {"iterator": iter(loader)}
    config = model.config

    def one_field(shape: tuple[int, ...], generator: Any, target: Any) -> torch.Tensor:
        field = simplex_noise(
            (1, 1, *shape[-2:]),
            generator=cpu,
            octaves=int(config["octaves"]),
            persistence=float(config["persistence"]),
            frequency=float(config["frequency"]),
        )
        return field.to(target).expand(shape)  # one field for the whole batch, made on the host

    model.noise = one_field  # type: ignore[method-assign]

    def step() -> None:
        try:
            batch = next(state["iterator"])
        except StopIteration:
            state["iterator"] = iter(loader)
            batch = next(state["iterator"])
        model.training_step(batch.to(device), optimizers, None, None)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--config", choices=list(CONFIGS), default=None, help="default: paper on CUDA, small on CPU")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 32 on CUDA, 8 on CPU")
    parser.add_argument("--volumes", type=int, default=24)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: 0 on CPU, 4 on CUDA)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    from mriad.models.registry import build_model
    from mriad.models.unet import count_flops, count_parameters

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    config = args.config or ("paper" if cuda else "small")
    batch_size = args.batch_size or (32 if cuda else 8)
    workers = args.workers if args.workers is not None else (4 if cuda else 0)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.benchmark = True

    with tempfile.TemporaryDirectory() as tmp:
        manifest = write_volumes(Path(tmp), args.volumes)
        peak = matmul_peak(device, torch.bfloat16 if cuda else torch.float32)
        steps, flops = {}, {}
        for label in ("mriad engine", "reference-style"):
            torch.manual_seed(0)
            model = build_model("pddpm", **CONFIGS[config]).to(device)
            engine = label == "mriad engine"
            if engine and cuda:
                model = model.to(memory_format=torch.channels_last)
            autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if (cuda and engine) else None
            flops[label] = step_flops(model, torch.rand(batch_size, 1, 96, 96, device=device), autocast)
            if engine:
                steps[label] = engine_step(model, manifest, device, batch_size)
            else:
                steps[label] = reference_step(model, manifest, device, batch_size, workers)
        # Interleaved: a shared machine's load drifts; alternating steps exposes both loops to it equally.
        times = time_interleaved(steps, device, args.warmup, args.steps)
        results = []
        for label, seconds in times.items():
            results.append((label, batch_size / seconds, seconds, flops[label] / seconds / peak))
        flops = flops["mriad engine"]
        params = count_parameters(model)
        forward = count_flops(model.net, 96, 96)

    print(
        f"device {device} ({torch.cuda.get_device_name(device) if cuda else f'{torch.get_num_threads()} threads'}), "
        f"config {config}: {params / 1e6:.2f} M parameters, {forward / 1e9:.2f} GFLOP per 96x96 forward; "
        f"batch {batch_size}; measured matmul peak {peak / 1e12:.3f} TFLOP/s ({'bf16' if cuda else 'fp32'})"
    )
    print(f"counted FLOPs per training step: {flops / 1e9:.1f} GFLOP")
    print(f"{'loop':18s} {'slices/s':>10s} {'ms/step':>10s} {'MFU':>7s}")
    for label, rate, seconds, mfu in results:
        print(f"{label:18s} {rate:10.1f} {seconds * 1e3:10.1f} {mfu * 100:6.1f}%")
    print(f"engine / reference-style: {results[0][1] / results[1][1]:.2f}x")


if __name__ == "__main__":
    main()
