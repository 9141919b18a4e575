"""Reconstruction: seconds per 96x96x50 volume, mriad's batched path vs the reference-style path.

    .venv/bin/python bench/reconstruct.py                    # CPU: the "small" network, 2 cores
    python bench/reconstruct.py --device cuda                # GPU: the paper network, bf16

Both paths use the SAME network and weights on the same volumes (SRI24-anatomy synthetic scans with
their brain masks, see common.bench_data):

  mriad            DiffusionModel.reconstruct as `mriad reconstruct` calls it: the volume's brain mask
                   passed (boxes without brain skip the network), every (slice, box) pair in
                   fixed-size calls (<= 8 on a CPU, where activations then stay in cache; <= 64 on a
                   GPU), channels_last, bf16 autocast on CUDA, noise drawn on the device, scatter-add
                   stitching. --compile adds a torch.compile row (its compile time is printed apart).
  reference-style  bench/reference_style.py: one fp32 NCHW call per box over the volume's 50 slices,
                   one CPU simplex field per volume copied to the device, every box reconstructed.

Rows: pDDPM with K = 4 (48-pixel boxes), pDDPM on the 60-pixel grid (K = 4, 24-pixel overlaps) and
DDPM (one box). Columns: median [min-max] seconds per volume over interleaved repeats, the median
of the per-repeat ratios, the share of (slice, box) pairs the mask let mriad skip, the largest
difference between the two outputs when both get the same noise (fp32), and whether the anomaly map
inside the brain mask is bit-identical with and without box skipping. MFU = counted FLOPs
(torch.utils.flop_counter, network calls actually made) / time / the measured matmul peak.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    bench_data,
    interleaved,
    load_slices,
    machine,
    matmul_peak,
    random_model,
    ratios,
    reference_copy,
    spread,
    sync,
)
from reference_style import cpu_simplex_field, reference_reconstructor  # noqa: E402

VARIANTS = {
    "k4": ("pDDPM K=4 (48 px)", "pddpm", {"patch_size": 48}),
    "grid60": ("pDDPM grid 60 px", "pddpm", {"patch_size": 60}),
    "ddpm": ("DDPM", "ddpm", {}),
}


def pair_counts(model: Any, masks: torch.Tensor) -> tuple[int, int, int]:
    """(pairs needed, pairs in total, network inputs incl. padding) of one reconstruct call on ``masks``."""
    from mriad.models.patches import boxes_with_brain

    n, _, h, w = masks.shape
    boxes = model.grid(h, w)
    needed = int(boxes_with_brain(boxes, masks.cpu()).sum())
    chunk = model.inference_chunk(n * len(boxes), h, w)
    return needed, n * len(boxes), -(-needed // chunk) * chunk


def same_noise_check(model: Any, twin: Any, slices: torch.Tensor, mask: torch.Tensor) -> tuple[float, float, bool]:
    """Max |mriad - reference| (all pixels, no mask; and inside the mask, with mask), fp32, same noise;
    and whether skipping leaves the anomaly map inside the mask bit-identical."""
    saved = model.executor.settings
    model.configure_inference(precision="fp32")
    h, w = slices.shape[-2:]
    field = torch.from_numpy(cpu_simplex_field(model.config, h, w, seed=5))
    model.noise = lambda shape, generator, device: field.to(device).expand(shape)  # the reference's noise
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        reference = reference_reconstructor(twin, seed=5)(slices).cpu()
        plain = model.reconstruct(slices).cpu()
        skipped = model.reconstruct(slices, mask=mask).cpu()
    finally:
        del model.noise
        model.executor.settings = saved
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    inside = mask.cpu()
    x = slices.cpu()
    identical = torch.equal((x - plain).abs()[inside], (x - skipped).abs()[inside])
    return float((plain - reference).abs().max()), float((skipped - reference).abs()[inside].max()), identical


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--config", default=None, help="paper/small/tiny (default: paper on CUDA, small on CPU)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--volumes-per-call", type=int, default=None, help="default: 1 on CPU, 4 on CUDA")
    parser.add_argument("--compile", action="store_true", help="add a torch.compile row per variant (slow to build)")
    parser.add_argument("--compile-mode", default="default", help="torch.compile mode (reduce-overhead: CUDA graphs)")
    parser.add_argument("--smoke", action="store_true", help="tiny network, 1 repeat: checks the script runs")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    parser.add_argument("--variants", default="k4,grid60,ddpm", help="rows: comma-separated k4, grid60, ddpm")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="cpu: thread CPU time (1 thread)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu" and (torch.get_num_threads() != 1 or args.device != "cpu"):
        parser.error("--clock cpu measures one thread's CPU time: use it with --device cpu --threads 1")

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    config = "tiny" if args.smoke else (args.config or ("paper" if cuda else "small"))
    repeats = 1 if args.smoke else args.repeats
    per_call = args.volumes_per_call or (4 if cuda else 1)
    use_compile = args.compile
    torch.backends.cudnn.benchmark = True

    from mriad.models.unet import count_flops

    with tempfile.TemporaryDirectory() as tmp:
        rows = bench_data(Path(tmp), per_call)
        images, masks = load_slices(rows)
    slices = images.flatten(0, 1).to(device)
    brain = masks.flatten(0, 1).to(device)
    peak = matmul_peak(device, torch.bfloat16 if cuda else torch.float32, clock=args.clock)
    print(f"# reconstruction, {device}: {machine(device)}")
    print(
        f"network '{config}', {per_call} volume(s) per mriad call, {repeats} interleaved repeats, {args.clock} clock; "
        f"matmul peak "
        f"{peak / 1e12:.3f} TFLOP/s ({'bf16' if cuda else 'fp32'}); times: median [min-max] seconds per volume"
    )
    header = f"{'variant':20s} {'mriad s/vol':>22s} {'reference s/vol':>22s} {'ratio':>20s} {'skipped':>8s}"
    print(header + f" {'max|d| all':>10s} {'in mask':>9s} {'bit-id':>6s} {'MFU mriad':>9s} {'MFU ref':>8s}")
    summary = {}
    for key in args.variants.split(","):
        label, name, options = VARIANTS[key]
        model = random_model(name, config, **options).to(device)
        forward = count_flops(model.net, 96, 96)
        generator = torch.Generator(device=device)
        twin = reference_copy(model)  # same weights, NCHW, never touched by mriad's settings
        reference = reference_reconstructor(twin)
        volume = slices[:50]

        def mriad_path(model: Any = model, generator: torch.Generator = generator) -> None:
            with torch.inference_mode():
                model.reconstruct(slices, generator.manual_seed(0), mask=brain)

        def reference_path(reference: Any = reference) -> None:
            with torch.inference_mode():
                for v in range(per_call):  # the reference reconstructs one volume at a time
                    reference(slices[v * 50 : (v + 1) * 50])

        paths = {"mriad": mriad_path, "reference": reference_path}
        if use_compile:
            compiled = random_model(name, config, **options).to(device)
            compiled.configure_inference(compile=args.compile_mode)
            start = time.perf_counter()
            with torch.inference_mode():
                compiled.reconstruct(slices, mask=brain)
            sync(device)
            seconds = time.perf_counter() - start
            print(f"  ({label}: torch.compile mode {args.compile_mode} took {seconds:.0f} s, once per process)")
            paths["mriad + compile"] = lambda m=compiled: m.reconstruct(slices, mask=brain)
        times = interleaved(paths, device, repeats, clock=args.clock)
        times = {k: [t / per_call for t in v] for k, v in times.items()}
        needed, total, inputs = pair_counts(model, brain)
        worst, in_mask, identical = same_noise_check(model, twin, volume, brain[:50])
        mfu_mriad = forward * inputs / per_call / np.median(times["mriad"]) / peak
        mfu_ref = forward * total / per_call / np.median(times["reference"]) / peak
        ratio = ratios(times["reference"], times["mriad"])
        summary[label] = float(np.median(ratio))
        print(
            f"{label:20s} {spread(times['mriad'], digits=3):>22s} {spread(times['reference'], digits=3):>22s} "
            f"{spread(ratio) + 'x':>20s} {100 * (1 - needed / total):7.1f}% {worst:10.1e} {in_mask:9.1e} "
            f"{'yes' if identical else 'NO':>6s} {100 * mfu_mriad:8.1f}% {100 * mfu_ref:7.1f}%"
        )
        if "mriad + compile" in times:
            compiled_ratio = ratios(times["reference"], times["mriad + compile"])
            print(f"{'  + torch.compile':20s} {spread(times['mriad + compile'], digits=3):>22s} {'':>22s} "
                  f"{spread(compiled_ratio) + 'x':>20s}")  # fmt: skip
    paper_forward = count_flops(random_model("pddpm", "paper").net, 96, 96)
    print(
        f"FLOPs (torch.utils.flop_counter): paper UNet {paper_forward / 1e9:.1f} GFLOP per 96x96 forward, "
        f"{200 * paper_forward / 1e12:.1f} TFLOP per volume at K=4 (200 forwards); "
        f"'{config}' {count_flops(random_model('pddpm', config).net, 96, 96) / 1e9:.2f} GFLOP per forward"
    )
    target = 3.0 if cuda else 1.5
    for label, value in summary.items():
        verdict = "HOLDS" if value >= target else "MISSED"
        print(f"target: {label} >= {target}x the reference-style path: {verdict} ({value:.2f}x)")


if __name__ == "__main__":
    main()
