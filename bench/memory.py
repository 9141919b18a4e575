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
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, random_model  # noqa: E402

GIB = 1 << 30


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
        peaks[chunk] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
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
        peaks[batch] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
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
    args = parser.parse_args()
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
