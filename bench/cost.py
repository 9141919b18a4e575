"""What reconstructing a split costs a run's model: network calls per slice, seconds per volume.

Runs `mriad reconstruct` in this process (``--force``: every subject is computed) with a forward hook
on each direct sub-network of the model (a diffusion model's ``net``, cDDPM's ``encoder``, an AE's
``encoder``/``decoder``...), counting the inputs it saw. Network inputs per slice = counted inputs /
slices reconstructed; padding of a last, partly filled call is counted, since it is computed.
Seconds: wall and CPU (all threads) of the whole reconstruct call, reading and writing included.

    python bench/cost.py --run runs/family/pddpm --split brats-test --json cost.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any


def measure(run: Path, split: str, device: str = "cpu", threads: int | None = None) -> dict[str, Any]:
    import torch

    import mriad.models.registry as registry
    from mriad.reconstruct import reconstruct

    if threads:
        torch.set_num_threads(threads)
    inputs: Counter[str] = Counter()
    load = registry.load_run_model

    def counted(*args: Any, **kwargs: Any) -> Any:
        model = load(*args, **kwargs)
        for name, module in model.named_children():

            def hook(_module: Any, args: tuple[Any, ...], _out: Any, name: str = name) -> None:
                if args and isinstance(args[0], torch.Tensor):
                    inputs[name] += int(args[0].shape[0])

            module.register_forward_hook(hook)
        return model

    registry.load_run_model = counted  # reconstruct imports it from the registry at call time
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        result = reconstruct(run, split, device=device, force=True)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        registry.load_run_model = load
    import nibabel as nib

    volumes = sorted(result.out.glob("*_score.nii.gz"))
    slices = sum(int(nib.load(path).shape[2]) for path in volumes)
    return {
        "run": str(run),
        "split": split,
        "volumes": len(volumes),
        "slices": slices,
        "inputs_per_slice": {name: round(count / max(slices, 1), 2) for name, count in inputs.items()},
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "wall_s_per_volume": round(wall / max(len(volumes), 1), 3),
        "cpu_s_per_volume": round(cpu / max(len(volumes), 1), 3),
        "threads": torch.get_num_threads(),
        "failures": len(result.failures),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--split", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()
    numbers = measure(args.run, args.split, args.device, args.threads)
    print(json.dumps(numbers, indent=2))
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")


if __name__ == "__main__":
    main()
