"""Reconstruction: seconds per 96x96x50 volume, mriad's batched path vs the reference-style path.

    .venv/bin/python bench/reconstruct.py                    # CPU: the "small" network, 2 cores
    python bench/reconstruct.py --device cuda                # GPU: the paper network, bf16

Both paths use the SAME network and weights on the same volumes (SRI24-anatomy synthetic scans with
their brain masks, see common.bench_data):

  mriad            DiffusionModel.reconstruct as `mriad reconstruct` calls it: the volume's brain mask
                   passed (boxes without brain skip the network), every (slice, box) pair in
                   fixed-size calls (<= 8 on a CPU, where activations then stay in cache; <= 64 on a
                   GPU), noise drawn on the device, scatter-add stitching; precision, layout and
                   compilation per mode (below).
  reference-style  bench/reference_style.py: one fp32 NCHW call per box over the volume's 50 slices,
                   one CPU simplex field per volume copied to the device, every box reconstructed.

Rows: pDDPM with K = 4 (48-pixel boxes), pDDPM on the 60-pixel grid (K = 4, 24-pixel overlaps) and
DDPM (one box). Under each variant, one row per inference mode (--modes; measured in the same
interleaved rounds as the reference): fp32 (the CPU default), bf16 (autocast), cl (channels_last),
bf16+cl, and with --compile also compile and bf16+cl+compile (torch.compile mode --compile-mode;
its build time is printed apart). "vs fp32" is the largest |difference| of a mode's anomaly map
from the fp32 map (same noise, same mask), i.e. what the mode changes in the numbers. Columns:
median [min-max] seconds per volume over interleaved repeats, the median of the per-repeat ratios.
Each variant's reference line also gives the share of (slice, box) pairs the mask let mriad skip,
the largest difference between mriad fp32 and the reference when both get the same noise, and
whether the anomaly map inside the brain mask is bit-identical with and without box skipping.
MFU = counted FLOPs (torch.utils.flop_counter, network calls actually made) / time / the measured
matmul peak (fp32 on a CPU: bf16 rows can exceed what fp32 allows).
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


# Inference modes: configure_inference settings ("compile" takes --compile-mode).
MODES: dict[str, dict[str, Any]] = {
    "fp32": {"precision": "fp32", "channels_last": False},
    "bf16": {"precision": "bf16", "channels_last": False},
    "cl": {"precision": "fp32", "channels_last": True},
    "bf16+cl": {"precision": "bf16", "channels_last": True},
    "auto": {},
    "compile": {"precision": "fp32", "channels_last": False, "compile": True},
    "bf16+cl+compile": {"precision": "bf16", "channels_last": True, "compile": True},
}


def _configured(model: Any, mode: str, compile_mode: str) -> Any:
    settings = dict(MODES[mode])
    if settings.pop("compile", False):
        settings["compile"] = compile_mode
    return model.configure_inference(**settings)


def _mriad_path(model: Any, slices: torch.Tensor, brain: torch.Tensor) -> None:
    """``mriad reconstruct``'s call: the brain mask passed, a fixed seed."""
    with torch.inference_mode():
        model.reconstruct(slices, torch.Generator(device=slices.device).manual_seed(0), mask=brain)


def _anomaly_map(model: Any, volume: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        rec = model.reconstruct(volume, torch.Generator(device=volume.device).manual_seed(3), mask=mask)
    return (volume - rec).abs().float().cpu()


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
    # The reference clamps its reconstruction to [0, 1]; mriad's model does not (the evaluation
    # protocol decides, `evaluate --clamp`), so the two paths are compared on the clamped output.
    plain, skipped = plain.clamp(0, 1), skipped.clamp(0, 1)
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
    parser.add_argument("--modes", default="fp32,bf16,cl,bf16+cl", help="inference modes, comma-separated")
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
    from mriad.runtime.inference import cpu_has_native_bf16

    print(f"# reconstruction, {device}: {machine(device)}; CPU with native bf16: {cpu_has_native_bf16()}")
    print(
        f"network '{config}', {per_call} volume(s) per mriad call, {repeats} interleaved repeats, {args.clock} clock; "
        f"matmul peak "
        f"{peak / 1e12:.3f} TFLOP/s ({'bf16' if cuda else 'fp32'}); times: median [min-max] seconds per volume"
    )
    header = f"{'variant / mode':20s} {'mriad s/vol':>22s} {'reference s/vol':>22s} {'ratio':>20s}"
    print(header + f" {'vs fp32':>10s} {'MFU':>9s}")
    summary: dict[str, float] = {}
    modes = args.modes.split(",") + (["compile", "bf16+cl+compile"] if use_compile else [])
    for key in args.variants.split(","):
        label, name, options = VARIANTS[key]
        model = random_model(name, config, **options).to(device)
        forward = count_flops(model.net, 96, 96)
        twin = reference_copy(model)  # same weights, NCHW, never touched by mriad's settings
        reference = reference_reconstructor(twin)
        volume = slices[:50]

        def reference_path(reference: Any = reference) -> None:
            with torch.inference_mode():
                for v in range(per_call):  # the reference reconstructs one volume at a time
                    reference(slices[v * 50 : (v + 1) * 50])

        paths: dict[str, Any] = {"reference": reference_path}
        copies = {}
        for mode in modes:
            copy = _configured(reference_copy(model), mode, args.compile_mode)
            if "compile" in mode:
                start = time.perf_counter()
                with torch.inference_mode():
                    copy.reconstruct(slices, mask=brain)
                sync(device)
                print(f"  ({label}: {mode}, torch.compile mode {args.compile_mode} took "
                      f"{time.perf_counter() - start:.0f} s, once per process)")  # fmt: skip
            copies[mode] = copy
            paths[mode] = lambda m=copy: _mriad_path(m, slices, brain)
        times = interleaved(paths, device, repeats, clock=args.clock)
        times = {k: [t / per_call for t in v] for k, v in times.items()}
        needed, total, inputs = pair_counts(model, brain)
        worst, in_mask, identical = same_noise_check(model, twin, volume, brain[:50])
        maps = {mode: _anomaly_map(copy, volume, brain[:50]) for mode, copy in copies.items()}
        fp32_map = maps.get("fp32", _anomaly_map(reference_copy(model), volume, brain[:50]))
        mfu_ref = forward * total / per_call / np.median(times["reference"]) / peak
        print(f"{label:20s} {'':>22s} {spread(times['reference'], digits=3):>22s}   reference-style, "
              f"MFU {100 * mfu_ref:.1f}%; mriad skips {100 * (1 - needed / total):.1f}% of the pairs; fp32 vs "
              f"reference max|d| {worst:.1e} (in mask {in_mask:.1e}); map in mask bit-identical with skipping: "
              f"{'yes' if identical else 'NO'}")  # fmt: skip
        for mode in modes:
            ratio = ratios(times["reference"], times[mode])
            mfu = forward * inputs / per_call / np.median(times[mode]) / peak
            change = float((maps[mode] - fp32_map).abs().max())
            summary[f"{label}, {mode}"] = float(np.median(ratio))
            print(f"  {mode:18s} {spread(times[mode], digits=3):>22s} {'':>22s} {spread(ratio) + 'x':>20s} "
                  f"{change:10.1e} {100 * mfu:8.1f}%")  # fmt: skip
    paper_forward = count_flops(random_model("pddpm", "paper").net, 96, 96)
    print(
        f"FLOPs (torch.utils.flop_counter): paper UNet {paper_forward / 1e9:.1f} GFLOP per 96x96 forward, "
        f"{200 * paper_forward / 1e12:.1f} TFLOP per volume at K=4 (200 forwards); "
        f"'{config}' {count_flops(random_model('pddpm', config).net, 96, 96) / 1e9:.2f} GFLOP per forward"
    )
    target = 3.0
    for label, value in summary.items():
        verdict = "HOLDS" if value >= target else "MISSED"
        print(f"target: {label} >= {target}x the reference-style path: {verdict} ({value:.2f}x)")


if __name__ == "__main__":
    main()
