"""Training throughput: mriad's engine vs a reference-style loop, slices/s and MFU.

    .venv/bin/python bench/train_throughput.py                      # small network on the CPU
    .venv/bin/python bench/train_throughput.py --device cuda --config paper --batch-size 32

Both loops train the same model on the same synthetic 96x96x50 volumes (written as NIfTI), same batch:

  mriad engine     the split loaded once onto the device, slices drawn there, a distinct simplex field
                   per slice generated on the device, bf16 autocast + channels_last on CUDA (fp32 on CPU):
                   exactly the engine's per-step work (DeviceSlices.sample_slices + model.training_step).
  reference-style  bench/reference_style.py: a torch DataLoader over the NIfTI files (one random slice
                   per volume, as the reference's epochs), fp32, ONE simplex field per batch generated on
                   the CPU and copied to the device. The reference computes that field with numba
                   (~2.3 ms on the dev machine); numba is not installed here, so the field comes from
                   mriad's CPU simplex for one field (well under 1 ms), which flatters the reference.

--compare-options instead trains mriad's engine step under each training option side by side:
fp32, bf16 (train_precision=bf16: autocast, also on a CPU), ckpt (gradient checkpointing) and
bf16+ckpt; steps are interleaved for the speed table, then each option trains --loss-steps steps
from the same initial weights and data stream, and the mean training loss of the last 10 steps is
compared (the effect on learning).

FLOPs per step are counted with torch.utils.flop_counter on one real training step (forward and
backward); the peak is measured with a matmul benchmark on the same device and dtype (fp32 on CPU,
bf16 on CUDA), so MFU = counted FLOPs / step time / measured matmul peak. Steps are interleaved
(one of each loop in turn); the table gives median [min-max] and the median of per-round ratios.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CONFIGS, ellipsoid_volumes, interleaved, machine, matmul_peak, ratios, spread  # noqa: E402
from reference_style import reference_training_step  # noqa: E402


def write_volumes(root: Path, count: int, depth: int = 50) -> Path:
    """Smooth random "brains" on the preprocessed grid, with masks and a manifest (ixi trainval)."""
    from mriad.contracts.manifest import write_manifest

    rows = ellipsoid_volumes(root, count, seed=0, depth=depth, prefix="IXI", radii=(0.8, 0.9, 1.2))
    rows.insert(1, "dataset", "ixi")
    rows.insert(2, "split", "trainval")
    rows.insert(3, "fold", [i % 5 for i in range(count)])
    rows.insert(4, "label", 0)
    return write_manifest(rows, root / "manifest.csv")


def step_flops(model: Any, batch: torch.Tensor, autocast: Any) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    generator = torch.Generator(device=batch.device).manual_seed(0)
    with FlopCounterMode(display=False) as counter:
        model.training_step(batch, model.configure_optimizers(), generator, autocast)
    return int(counter.get_total_flops())


def engine_step(model: Any, manifest: Path, device: torch.device, batch_size: int, autocast: Any = "device") -> Any:
    from mriad.contracts.data import load_volumes
    from mriad.contracts.manifest import read_manifest, select_split
    from mriad.train.sampler import DeviceSlices

    rows = select_split(read_manifest(manifest), "ixi-train", 0)
    data = DeviceSlices.from_split(load_volumes(rows, device=device))
    optimizers = model.configure_optimizers()
    generator = torch.Generator(device=device).manual_seed(0)
    if autocast == "device":  # the engine's default: bf16 autocast on CUDA, fp32 on a CPU
        autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" else None

    def step() -> dict[str, Any]:
        batch = data.sample_slices(batch_size, generator)
        if device.type == "cuda":
            batch = batch.contiguous(memory_format=torch.channels_last)
        return model.training_step(batch, optimizers, generator, autocast)

    return step


TRAIN_OPTIONS: dict[str, dict[str, Any]] = {
    "fp32": {"train_precision": "fp32"},
    "bf16": {"train_precision": "bf16"},
    "ckpt": {"train_precision": "fp32", "checkpointing": True},
    "bf16+ckpt": {"train_precision": "bf16", "checkpointing": True},
}


def option_step(
    config: str, options: dict[str, Any], manifest: Path, device: torch.device, batch: int, lr: float
) -> Any:
    """The engine's step for ``options`` (same seed: same initial weights and data stream)."""
    from mriad.models.registry import build_model
    from mriad.runtime.inference import training_autocast

    torch.manual_seed(0)
    model = build_model("pddpm", **CONFIGS[config], **options, lr=lr).to(device).train()
    step = engine_step(model, manifest, device, batch, training_autocast(options["train_precision"], device))
    return step


def compare_options(args: argparse.Namespace, config: str, device: torch.device, batch_size: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        manifest = write_volumes(Path(tmp), args.volumes)
        steps = {k: option_step(config, v, manifest, device, batch_size, args.lr) for k, v in TRAIN_OPTIONS.items()}
        times = interleaved(steps, device, args.steps, warmup=args.warmup, clock=args.clock)
        losses = {}
        for label, options in TRAIN_OPTIONS.items():
            step = option_step(config, options, manifest, device, batch_size, args.lr)
            values = [float(step()["loss"]) for _ in range(args.loss_steps)]
            losses[label] = float(np.mean(values[-10:]))
    print(f"# training options, {device}: {machine(device)}")
    print(f"config {config}, batch {batch_size}, lr {args.lr}; {args.steps} interleaved steps ({args.clock} clock); "
          f"loss = mean of the last 10 of {args.loss_steps} steps from the same start")  # fmt: skip
    print(f"{'option':10s} {'ms/step':>26s} {'speed-up vs fp32':>22s} {'loss':>8s} {'vs fp32':>8s}")
    for label, values in times.items():
        speed = ratios(times["fp32"], values)
        print(f"{label:10s} {spread(values, 1e3, 1):>26s} {spread(speed) + 'x':>22s} {losses[label]:8.4f} "
              f"{losses[label] - losses['fp32']:+8.4f}")  # fmt: skip


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
    parser.add_argument("--smoke", action="store_true", help="tiny network, few steps: checks the script runs")
    parser.add_argument("--compare-options", action="store_true", help="fp32 / bf16 / checkpointing side by side")
    parser.add_argument("--loss-steps", type=int, default=60, help="--compare-options: steps for the loss column")
    parser.add_argument("--lr", type=float, default=1e-3, help="--compare-options: learning rate (learns in few steps)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="cpu: thread CPU time (1 thread)")
    args = parser.parse_args()
    if args.smoke:
        args.config, args.volumes, args.warmup, args.steps = "tiny", 12, 1, 2
        args.batch_size = args.batch_size or 4

    from mriad.contracts.manifest import read_manifest, select_split
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
    if args.compare_options:
        if args.smoke:
            args.loss_steps = 12
        compare_options(args, config, device, batch_size)
        return

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
                rows = select_split(read_manifest(manifest), "ixi-train", 0)
                steps[label] = reference_training_step(model, rows, device, batch_size, workers)
        # Interleaved: a shared machine's load drifts; alternating steps exposes both loops to it equally.
        times = interleaved(steps, device, args.steps, warmup=args.warmup)
        flops = flops["mriad engine"]
        params = count_parameters(model)
        forward = count_flops(model.net, 96, 96)

    print(f"# training throughput, {device}: {machine(device)}")
    print(
        f"config {config}: {params / 1e6:.2f} M parameters, {forward / 1e9:.2f} GFLOP per 96x96 forward; "
        f"batch {batch_size}; {args.steps} interleaved steps; matmul peak {peak / 1e12:.3f} TFLOP/s "
        f"({'bf16' if cuda else 'fp32'}); counted FLOPs per training step: {flops / 1e9:.1f} GFLOP"
    )
    print(f"{'loop':18s} {'slices/s':>24s} {'ms/step':>26s} {'MFU':>7s}")
    for label, values in times.items():
        rate = [batch_size / v for v in values]
        mfu = flops / float(np.median(values)) / peak
        print(f"{label:18s} {spread(rate, digits=1):>24s} {spread(values, 1e3, 1):>26s} {mfu * 100:6.1f}%")
    ratio = ratios(times["reference-style"], times["mriad engine"])
    if cuda:
        mfu = flops / float(np.median(times["mriad engine"])) / peak
        verdict = "HOLDS" if np.median(ratio) >= 3 and mfu >= 0.4 else "MISSED"
        print(f"engine / reference-style: {spread(ratio)}x; target >= 3x and >= 40% MFU: {verdict}")
    else:
        print(f"engine / reference-style: {spread(ratio)}x (the training targets are GPU targets)")


if __name__ == "__main__":
    main()
