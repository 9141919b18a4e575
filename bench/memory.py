"""Peak memory of reconstruction, and the chunk sizes mriad picks for a 24 GB GPU and a 2-core CPU box.

    .venv/bin/python bench/memory.py                 # CPU: measured in a child process (peak RSS)
    python bench/memory.py --device cuda             # GPU: torch.cuda.max_memory_allocated, bf16

mriad sizes its network calls from an analytic estimate, ``120 bytes x H x W x base channels`` per
input (runtime.memory.INFERENCE_BYTES_PER_PIXEL_CHANNEL), and a budget: half the free GPU memory (at most 64 inputs
per call) or a quarter of the available RAM on a CPU (at most 8). This measures the real peak per
input (the growth of the peak between two chunk sizes, so the model and the runtime cancel out) and
shows which chunk each budget gets and that it fits.

    .venv/bin/python bench/memory.py --train         # training: peak RSS per slice vs mriad's estimate

--train measures the peak RSS of training steps (fp32, Adam) at two batch sizes in a child process,
with and without gradient checkpointing, and compares the growth per slice with the activations
runtime.memory.unet_training_memory counts (its TRAINING_CALIBRATION comes from this table).

    nice -n 10 .venv/bin/python bench/memory.py --baselines          # AE and DAE (--models ae,dae,vae,...)

--baselines checks the count every other model is guarded by (runtime.footprint: autograd's saved
tensors for a training step, the live-tensor high-water mark for score_volumes, both on the "meta"
device) against the peak RSS growth of the real thing, one fresh child process per measurement:
after a warm-up at the smallest size (kernels loaded, Adam's moments allocated) the child notes its
RSS, resets the high-water mark (/proc/self/clear_refs) and reports VmHWM after the measured call.
Peaks are read from /proc/self/status (VmHWM): ru_maxrss survives exec, so a child would report
its parent's peak.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, random_model  # noqa: E402

GIB = 1 << 30


def _status_bytes(field: str) -> int:
    """A field of /proc/self/status in bytes (VmHWM: this process's peak RSS, VmRSS: now)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


# Baseline settings the --baselines table measures (96x96 slices unless --size says otherwise).
BASELINE_OPTIONS: dict[str, dict[str, object]] = {"fanogan": {"gan_steps": 1000}}


def _baseline_model(name: str, size: int) -> torch.nn.Module:
    from mriad.models.registry import get_model_class

    cls = get_model_class(name)
    options = dict(BASELINE_OPTIONS.get(name, {}))
    if "image_size" in cls.resolve_config({}):
        options["image_size"] = size
    return cls(**options)


def baseline_child(name: str, mode: str, sizes: list[int], size: int) -> None:
    """Warm up at ``sizes[0]``, then measure at ``sizes[1]``: one JSON line of RSS before and peak."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = _baseline_model(name, size)
    volumes = model.batch_kind == "volumes"
    optimizers = model.configure_optimizers() if mode == "train" else None
    generator = torch.Generator().manual_seed(0)

    def run(n: int) -> None:
        if mode == "train":
            x = torch.rand(n, 8, 1, size, size) if volumes else torch.rand(n, 1, size, size)
            for _ in range(2):  # the second step has Adam's moments allocated
                model.train().training_step(x, optimizers, generator)
        else:
            with torch.inference_mode():
                model.eval().score_volumes(torch.rand(1, n, 1, size, size), generator)

    run(sizes[0])
    before = _status_bytes("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # peak RSS := RSS now
        reset = True
    except OSError:
        reset = False
    run(sizes[1])
    print(json.dumps({"before": before, "peak": _status_bytes("VmHWM"), "reset": reset}))


def measure_baseline(name: str, mode: str, warm: int, n: int, size: int) -> dict[str, int]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    command = [sys.executable, __file__, "--baseline-child", f"{name}:{mode}", "--chunks", f"{warm},{n}"]
    out = subprocess.run([*command, "--size", str(size)], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def baseline_table(names: list[str], size: int, train_sizes: list[int], infer_sizes: list[int]) -> None:
    """Measured peak RSS growth against runtime.footprint's count, training steps and score_volumes."""
    from mriad.runtime.footprint import (
        COUNTED_INFERENCE_CALIBRATION,
        COUNTED_TRAINING_CALIBRATION,
        INFERENCE_OVERHEAD,
        counted_inference_bytes,
    )

    where = machine(torch.device("cpu"))
    print(f"# baselines, counted vs measured peak RSS growth (fp32, CPU, 1 thread), {size}x{size}: {where}")
    print(f"{'model':8s} {'mode':5s} {'n':>4s} {'growth':>10s} {'counted':>10s} {'meas/count':>10s} "
          f"{'estimate':>10s} {'est/meas':>8s}")  # fmt: skip
    for name in names:
        model = _baseline_model(name, size)
        volumes = model.batch_kind == "volumes"
        for mode, sizes in (("train", train_sizes), ("infer", infer_sizes)):
            growth: dict[int, float] = {}
            counted: dict[int, float] = {}
            guarded: dict[int, float] = {}  # what the guards use: the count scaled, plus the overhead
            for n in sizes[1:]:
                result = measure_baseline(name, mode, sizes[0], n, size)
                growth[n] = result["peak"] - result["before"]
                if mode == "train":
                    depth = 8 if volumes else 1
                    estimate = type(model).estimate_training_memory(dict(model.config), n, size, size, depth=depth)
                    guarded[n] = estimate.activations
                    counted[n] = estimate.activations / COUNTED_TRAINING_CALIBRATION
                else:
                    guarded[n] = counted_inference_bytes(model, (1, n, 1, size, size))
                    counted[n] = (guarded[n] - INFERENCE_OVERHEAD) / COUNTED_INFERENCE_CALIBRATION
                note = "" if result["reset"] else "  (peak not reset: includes the warm-up)"
                print(f"{name:8s} {mode:5s} {n:4d} {growth[n] / 2**20:7.1f} MB {counted[n] / 2**20:7.1f} MB "
                      f"{growth[n] / counted[n]:9.2f}x {guarded[n] / 2**20:7.1f} MB {guarded[n] / growth[n]:7.2f}x"
                      f"{note}")  # fmt: skip
            if len(growth) > 1:
                low, high = min(growth), max(growth)
                slope = (growth[high] - growth[low]) / (counted[high] - counted[low])
                print(f"{name:8s} {mode:5s} slope {low}->{high}: measured/counted {slope:.2f}x")


def _forward(model: torch.nn.Module, chunk: int, device: torch.device, bf16: bool) -> None:
    x = torch.rand(chunk, 1, 96, 96, device=device) * 2 - 1
    t = torch.full((chunk,), 499, device=device, dtype=torch.long)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        model.net(x, t)


def child(config: str, chunks: list[int]) -> None:
    """Peak RSS (bytes) after a forward of each chunk size, ascending: one JSON line on stdout."""
    torch.set_num_threads(1)
    model = random_model("pddpm", config)
    peaks = {}
    for chunk in chunks:
        _forward(model, chunk, torch.device("cpu"), bf16=False)
        peaks[chunk] = _status_bytes("VmHWM")
    print(json.dumps(peaks))


def train_child(config: str, batches: list[int], checkpointing: bool) -> None:
    """Peak RSS (bytes) after two training steps at each batch size, ascending: one JSON line."""
    torch.set_num_threads(1)
    model = random_model("pddpm", config, checkpointing=checkpointing).train()
    optimizers = model.configure_optimizers()
    generator = torch.Generator().manual_seed(0)
    peaks = {}
    for batch in batches:
        x = torch.rand(batch, 1, 96, 96)
        for _ in range(2):  # the second step has Adam's moments allocated
            model.training_step(x, optimizers, generator)
        peaks[batch] = _status_bytes("VmHWM")
    print(json.dumps(peaks))


def measure_training(config: str, batches: list[int], checkpointing: bool) -> dict[int, int]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    flag = ["--checkpointing"] if checkpointing else []
    command = [sys.executable, __file__, "--train-child", config, "--chunks", ",".join(map(str, batches)), *flag]
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return {int(k): v for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()}


def training_table(configs: list[str], batches: list[int]) -> None:
    from mriad.models.registry import get_model_class
    from mriad.runtime.memory import CHECKPOINTED_CALIBRATION, TRAINING_CALIBRATION

    cls = get_model_class("pddpm")
    print(f"# training memory (fp32, Adam), cpu: {machine(torch.device('cpu'))}; batches {batches}")
    header = f"{'network':8s} {'ckpt':>5s} {'peak':>10s} {'per slice, measured':>20s}"
    print(header + f" {'counted':>10s} {'meas/count':>10s}")
    for config in configs:
        options = cls.resolve_config(dict(random_model("pddpm", config).config))
        for checkpointing in (False, True):
            peaks = measure_training(config, batches, checkpointing)
            slope = (peaks[batches[-1]] - peaks[batches[0]]) / (batches[-1] - batches[0])
            estimate = cls.estimate_training_memory(options, 1, 96, 96)
            counted = estimate.checkpointed_activations if checkpointing else estimate.activations
            counted /= CHECKPOINTED_CALIBRATION if checkpointing else TRAINING_CALIBRATION
            print(f"{config:8s} {str(checkpointing):>5s} {peaks[batches[-1]] / 2**20:8.0f} MB {slope / 2**20:17.1f} MB "
                  f"{counted / 2**20:7.1f} MB {slope / counted:9.2f}x")  # fmt: skip


def measure_cpu(config: str, chunks: list[int]) -> dict[int, int]:
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]),
    )
    out = subprocess.run(
        [sys.executable, __file__, "--child", config, "--chunks", ",".join(map(str, chunks))],
        capture_output=True, text=True, check=True, env=env,
    )  # fmt: skip
    return {int(k): v for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()}


def measure_cuda(config: str, chunks: list[int], device: torch.device) -> dict[int, int]:
    model = random_model("pddpm", config).to(device).to(memory_format=torch.channels_last)
    peaks = {}
    for chunk in chunks:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        _forward(model, chunk, device, bf16=True)
        torch.cuda.synchronize(device)
        peaks[chunk] = torch.cuda.max_memory_allocated(device)
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--configs", default=None, help="comma-separated (default: small,paper; CUDA: paper)")
    parser.add_argument("--chunks", default=None, help="chunk sizes, ascending (default: 1,4 CPU; 8,32,64 CUDA)")
    parser.add_argument("--smoke", action="store_true", help="small network only")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--train", action="store_true", help="training memory instead (CPU)")
    parser.add_argument("--train-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--baselines", action="store_true", help="the counted estimate of other models (CPU)")
    parser.add_argument("--models", default="ae,dae", help="--baselines: registered models to measure")
    parser.add_argument("--size", type=int, default=96, help="--baselines: slice size")
    parser.add_argument("--train-batches", default="2,8,24", help="--baselines: warm-up, then measured batches")
    parser.add_argument("--infer-slices", default="8,32,128", help="--baselines: warm-up, then measured slices")
    parser.add_argument("--baseline-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_child:
        name, mode = args.baseline_child.split(":")
        baseline_child(name, mode, [int(c) for c in args.chunks.split(",")], args.size)
        return
    if args.baselines:
        train_sizes = [int(c) for c in args.train_batches.split(",")]
        infer_sizes = [int(c) for c in args.infer_slices.split(",")]
        baseline_table(args.models.split(","), args.size, train_sizes, infer_sizes)
        return
    if args.train_child:
        train_child(args.train_child, [int(c) for c in args.chunks.split(",")], args.checkpointing)
        return
    if args.train:
        configs = (args.configs or ("small" if args.smoke else "small,paper")).split(",")
        training_table(configs, [int(c) for c in (args.chunks or "2,6").split(",")])
        return
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    chunks = [int(c) for c in (args.chunks or ("8,32,64" if cuda else "1,4")).split(",")]
    if args.child:
        child(args.child, chunks)
        return
    configs = (args.configs or ("small" if args.smoke else ("paper" if cuda else "small,paper"))).split(",")

    from mriad.runtime.memory import INFERENCE_BYTES_PER_PIXEL_CHANNEL, available_memory

    print(f"# reconstruction memory, {device}: {machine(device)}")
    print(
        f"{'network':8s} {'chunk':>5s} {'peak':>10s} {'per input, measured':>20s} {'estimated':>10s} {'est/meas':>9s}"
    )
    per_input = {}
    for config in configs:
        peaks = measure_cuda(config, chunks, device) if cuda else measure_cpu(config, chunks)
        base = int(random_model("pddpm", config).config["base_channels"])
        estimate = INFERENCE_BYTES_PER_PIXEL_CHANNEL * 96 * 96 * base
        slope = (peaks[chunks[-1]] - peaks[chunks[0]]) / (chunks[-1] - chunks[0])
        per_input[config] = slope
        for chunk in chunks:
            print(f"{config:8s} {chunk:5d} {peaks[chunk] / 2**20:8.0f} MB", end="")
            if chunk == chunks[-1]:
                print(f" {slope / 2**20:17.1f} MB {estimate / 2**20:7.1f} MB {estimate / slope:8.2f}x")
            else:
                print()
    model = random_model("pddpm", "paper")
    print("chunk sizes for the paper network (max_batch; the estimate is what mriad uses):")
    measured = per_input.get("paper")
    budgets = [
        ("24 GB GPU (half of ~23 GiB free)", int(23 * GIB) // 2, 64),
        ("2-core CPU box, 4 GiB available (a quarter)", 4 * GIB // 4, 8),
        (f"this machine ({device.type})", None, None),
    ]
    for label, budget, cap in budgets:
        if budget is None:
            chunk = model.to(device).max_batch(96, 96)
            budget = torch.cuda.mem_get_info(device)[0] // 2 if cuda else available_memory() // 4
        else:
            chunk = model.max_batch(96, 96, memory_bytes=budget, cap=cap)
        need = f"{chunk * measured / GIB:.2f} GiB measured" if measured else "n/a"
        print(f"  {label:44s} chunk {chunk:3d}: needs {need} of a {budget / GIB:.2f} GiB budget")


if __name__ == "__main__":
    main()
