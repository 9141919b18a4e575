"""Shared pieces of the benchmarks: machine description, timing, peaks, bench data and run folders.

Timing rule for every table: the paths being compared run in ONE process, interleaved (one call of
each in turn, repeated), so a shared machine's drifting load hits them alike; tables report the
median and the spread (min-max) of the repeats, and ratios are medians of per-repeat ratios.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]

# Network sizes used by the benchmarks. "paper" is the published UNet; "small" is the reduced width
# the CPU benchmarks use (a paper-size volume is ~30 TFLOP: minutes per volume on two cores);
# "tiny" is for smoke runs; "micro" exposes everything that is not the network (stitching, I/O) in
# the scaling tables.
CONFIGS: dict[str, dict[str, Any]] = {
    "paper": {},
    "small": {"base_channels": 16, "channel_mult": "1,2,2", "num_res_blocks": 1, "groups": 8, "head_channels": 32},
    "tiny": {"base_channels": 8, "channel_mult": "1,2,2", "num_res_blocks": 1, "groups": 4, "head_channels": 16},
    "micro": {"base_channels": 4, "channel_mult": "1,2,2", "num_res_blocks": 1, "groups": 2, "head_channels": 8},
}


def git_commit() -> str:
    """Short commit, with "+uncommitted" when the tree differs from it (benchmarks name what they ran)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout
        return commit + ("+uncommitted" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine(device: torch.device) -> str:
    """One line saying where a table was measured."""
    accel = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return (
        f"{time.strftime('%Y-%m-%d %H:%M')}, nproc {os.cpu_count()}, {cpu_model()}{accel}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}, commit {git_commit()}"
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, seconds: float = 2.0, clock: str = "wall") -> float:
    """The best matmul rate seen in ``seconds`` (FLOP/s): the denominator of MFU on this device.

    ``clock="cpu"``: timed with the thread's CPU time, for MFUs of paths timed the same way.
    """
    now = time.thread_time if clock == "cpu" else time.perf_counter
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        sync(device)
        start = now()
        for _ in range(10):
            a @ b
        sync(device)
        best = max(best, 10 * 2 * n**3 / max(now() - start, 1e-9))
    return best


def interleaved(
    paths: dict[str, Callable[[], Any]], device: torch.device, repeats: int, warmup: int = 1, clock: str = "wall"
) -> dict[str, list[float]]:
    """Seconds of each path per repeat, one call of each in turn (after ``warmup`` untimed rounds).

    ``clock="cpu"`` times with the calling thread's CPU time instead of the wall clock: with ONE
    intra-op thread on a CPU that is the work done, whatever else the machine runs meanwhile (a
    busy shared box stretches wall times, and stalls multi-threaded barriers, unevenly).
    """
    now = time.thread_time if clock == "cpu" else time.perf_counter
    for _ in range(warmup):
        for run in paths.values():
            run()
    times: dict[str, list[float]] = {label: [] for label in paths}
    for _ in range(repeats):
        for label, run in paths.items():
            sync(device)
            start = now()
            run()
            sync(device)
            times[label].append(now() - start)
    return times


def spread(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    """``median [min-max]`` of ``values * scale``."""
    v = np.asarray(values) * scale
    return f"{np.median(v):.{digits}f} [{v.min():.{digits}f}-{v.max():.{digits}f}]"


def ratios(numerator: list[float], denominator: list[float]) -> list[float]:
    """Per-repeat ratios (paired: both were measured in the same round)."""
    return [a / b for a, b in zip(numerator, denominator)]


def bench_data(root: Path, count: int, seed: int = 0) -> pd.DataFrame:
    """``count`` preprocessed 96x96x50 subjects (image + brain mask) as manifest rows (absolute paths).

    Made with `mriad synth` (real SRI24 anatomy, so brain masks, and hence skippable boxes, look
    like real preprocessed scans); smooth ellipsoid "brains" when the atlas is not installed.
    """
    try:
        from mriad.synth import min_healthy_for_splits, synthesize

        healthy = max(min_healthy_for_splits(5), count)
        result = synthesize(root / "synth", healthy=healthy, lesions=0, layout="ixi", preprocessed=True, seed=seed)
        from mriad.contracts.manifest import read_manifest

        frame = read_manifest(result.manifest).head(count)
    except Exception as exc:  # noqa: BLE001 - any failure: fall back to shapes that need no atlas
        print(f"(mriad synth unavailable: {exc}; using ellipsoid volumes)")
        frame = ellipsoid_volumes(root / "ellipsoids", count, seed)
    rows = frame[["subject_id", "image", "mask"]].copy()
    rows["dataset"], rows["split"], rows["fold"], rows["label"] = "ixi", "test", "", 0
    for column in ("seg", "age", "sex", "source"):
        rows[column] = ""
    return rows.reset_index(drop=True)


def ellipsoid_volumes(
    root: Path,
    count: int,
    seed: int,
    *,
    depth: int = 50,
    prefix: str = "E",
    radii: tuple[float, float, float] = (0.75, 0.9, 1.1),
) -> pd.DataFrame:
    """Smooth random ellipsoid "brains" on the 96x96 preprocessed grid with masks; needs no atlas.

    Returns rows with subject_id, image and mask paths.
    """
    from mriad.infra.io import write_nifti

    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in (96, 96, depth)), indexing="ij")
    mask = (x / radii[0]) ** 2 + (y / radii[1]) ** 2 + (z / radii[2]) ** 2 < 1
    rows = []
    for i in range(count):
        image = (0.5 + 0.3 * np.sin(5 * x + rng.uniform(0, 6)) * np.cos(4 * y)) * mask
        sid = f"{prefix}{i:03d}"
        write_nifti(root / sid / "image.nii.gz", image.astype(np.float32), np.diag([2.0, 2, 2, 1]))
        write_nifti(root / sid / "mask.nii.gz", mask.astype(np.uint8), np.diag([2.0, 2, 2, 1]), dtype=np.uint8)
        rows.append(
            {"subject_id": sid, "image": str(root / sid / "image.nii.gz"), "mask": str(root / sid / "mask.nii.gz")}
        )
    return pd.DataFrame(rows)


def load_slices(rows: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and brain masks of ``rows`` as slice stacks ``(V, 50, 1, 96, 96)`` (float32, bool)."""
    from mriad.contracts.data import volume_to_slices
    from mriad.infra.io import read_nifti

    images, masks = [], []
    for row in rows.itertuples(index=False):
        images.append(volume_to_slices(torch.from_numpy(read_nifti(row.image).data)))
        masks.append(volume_to_slices(torch.from_numpy(read_nifti(row.mask, allow_empty=True).data > 0.5)))
    return torch.stack(images), torch.stack(masks)


def random_model(name: str, config: str, seed: int = 0, **options: Any) -> Any:
    """A model with random weights everywhere (the zero-initialised output layers re-drawn too), so
    outputs vary with the input as a trained network's do and differences between paths show."""
    from mriad.models.registry import build_model

    torch.manual_seed(seed)
    model = build_model(name, **CONFIGS[config], **options)
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, torch.nn.Conv2d) and weight is not None and not weight.any():
            module.reset_parameters()
    return model.eval()


def reference_copy(model: Any) -> Any:
    """The same weights in a separate model, NCHW (mriad's path converts its own network to NHWC)."""
    import copy

    twin = copy.deepcopy(model)
    twin.net.to(memory_format=torch.contiguous_format)
    return twin


def write_run(folder: Path, model: Any, manifest: Path) -> Path:
    """A run folder as `mriad train` leaves it (config.json + checkpoints/best.pt) for ``model``."""
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    state = {"model": model.name, "config": model.config, "state_dict": model.state_dict()}
    torch.save(state, folder / "checkpoints" / "best.pt")
    config = {"model": model.name, "fold": 0, "data": str(manifest), "options": model.config, "seed": 0}
    (folder / "config.json").write_text(json.dumps(config, default=list))
    return folder
