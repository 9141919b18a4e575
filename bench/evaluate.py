"""Benchmark: mriad's torch evaluation path vs a straightforward scipy + scikit-learn loop.

Both do the same work on N synthetic 96x96x50 volumes (random maps with blob lesions inside an
ellipsoid brain): erosion per axial slice, 3D median filter, a pooled threshold, per-volume AUPRC and
AUROC over brain voxels, binarisation, removal of components < 7 voxels and Dice. The loop follows the
reference code (scipy median_filter, sklearn metrics, 10-step bisection with a full Dice pass per
step); the torch path is the one `mriad evaluate` runs (exact threshold search, plus oracle Dice).
Loading files is not timed: it is the same for both.

    .venv/bin/python bench/evaluate.py --volumes 20            # CPU, and CUDA when available
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

SHAPE = (96, 96, 50)


def synthetic(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Brain masks, lesion masks, images, reconstructions and score maps of ``n`` volumes."""
    rng = np.random.default_rng(seed)
    grid = np.indices(SHAPE).transpose(1, 2, 3, 0).astype(np.float32)
    brain = (((grid - [48, 48, 25]) / [40, 44, 30]) ** 2).sum(-1) <= 1
    masks, segs, scores = [], [], []
    for _ in range(n):
        seg = np.zeros(SHAPE, bool)
        for _ in range(int(rng.integers(1, 4))):
            centre = rng.uniform([30, 30, 12], [66, 66, 38])
            radii = rng.uniform(2, 9, 3)
            seg |= (((grid - centre) / radii) ** 2).sum(-1) <= 1
        seg &= brain
        noise = rng.gamma(2.0, 0.03, SHAPE).astype(np.float32)
        score = (noise + seg * rng.uniform(0.05, 0.4, SHAPE)).astype(np.float32) * brain
        masks.append(brain.copy())
        segs.append(seg)
        scores.append(score)
    image = (0.3 + 0.5 * rng.random((n, *SHAPE))).astype(np.float32) * np.stack(masks)
    return {"mask": np.stack(masks), "seg": np.stack(segs), "score": np.stack(scores), "image": image}


def baseline(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The reference-style loop: scipy post-processing, sklearn metrics, bisection threshold."""
    from scipy import ndimage
    from sklearn.metrics import average_precision_score, roc_auc_score

    cross = ndimage.generate_binary_structure(2, 1)
    maps = []
    for score, mask in zip(data["score"], data["mask"]):
        eroded = np.stack(
            [ndimage.binary_erosion(mask[:, :, z], cross, iterations=3) for z in range(mask.shape[2])], -1
        )
        maps.append(ndimage.median_filter(score * eroded, size=5))
    pooled = np.concatenate([m[b] for m, b in zip(maps, data["mask"])])
    truth = np.concatenate([s[b] for s, b in zip(data["seg"], data["mask"])])

    def dice(t: float) -> float:
        pred = pooled >= t
        return 2 * np.sum(pred & truth) / (pred.sum() + truth.sum())

    low, high, best, point = 0.0, float(pooled.max()), 0.0, 0.0
    for _ in range(10):
        centre, q1, q3 = low + (high - low) / 2, low + (high - low) / 4, low + 3 * (high - low) / 4
        d1, d3 = dice(q1), dice(q3)
        if d1 >= d3:
            best, point = (d1, q1) if d1 >= best else (best, point)
            high = centre
        else:
            best, point = (d3, q3) if d3 >= best else (best, point)
            low = centre
    auprc, auroc, dices = [], [], []
    for m, b, s in zip(maps, data["mask"], data["seg"]):
        auprc.append(average_precision_score(s[b], m[b]))
        auroc.append(roc_auc_score(s[b], m[b]))
        labelled, count = ndimage.label((m >= point) & b)
        sizes = np.bincount(labelled.ravel())
        keep = sizes >= 7
        keep[0] = False
        pred = keep[labelled]
        dices.append(2 * np.sum(pred & s) / (pred.sum() + s.sum()))
    return {"auprc": np.array(auprc), "auroc": np.array(auroc), "dice": np.array(dices), "threshold": point}


def torch_path(data: dict[str, np.ndarray], device: torch.device) -> dict[str, np.ndarray]:
    """mriad's stage functions on already-loaded volumes."""
    from mriad.evaluate.protocol import PROTOCOLS
    from mriad.evaluate.run import choose_threshold, postprocess_split, subject_metrics
    from mriad.evaluate.volumes import SplitVolumes

    brain = PROTOCOLS["brain"]  # the numpy path above counts brain voxels, >= and 6-connectivity

    n = len(data["score"])
    rows = pd.DataFrame({"subject_id": [f"S{i}" for i in range(n)], "dataset": "bench", "label": 1})
    volumes = SplitVolumes(
        rows=rows,
        image=torch.from_numpy(data["image"]),
        reconstruction=torch.from_numpy(data["image"] - data["score"]),
        score=torch.from_numpy(data["score"]),
        mask=torch.from_numpy(data["mask"]),
        seg=torch.from_numpy(data["seg"]),
        affine=np.eye(4),
    )
    maps = postprocess_split(volumes, device, protocol=brain)
    chosen = choose_threshold(volumes, maps, "exact", protocol=brain)
    table = subject_metrics(volumes, maps, chosen.threshold, protocol=brain)
    return {name: table[name].to_numpy(dtype=float) for name in ("auprc", "auroc", "dice")} | {
        "threshold": chosen.threshold
    }


def _timed(func, *args) -> tuple[float, dict]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = func(*args)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def replicate(data: dict[str, np.ndarray], count: int) -> dict[str, np.ndarray]:
    """``count`` volumes made by repeating the distinct ones (a 1151-volume split without minutes of numpy)."""
    index = np.arange(count) % len(data["score"])
    return {key: value[index] for key, value in data.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=20)
    parser.add_argument("--distinct", type=int, default=None, help="synthesise this many, repeat to --volumes")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved repeats; medians are reported")
    parser.add_argument("--devices", default=None, help="comma-separated torch devices (default: cpu[,cuda])")
    parser.add_argument("--skip-baseline", action="store_true", help="only time the torch path(s)")
    args = parser.parse_args()
    data = synthetic(min(args.volumes, args.distinct or args.volumes))
    data = replicate(data, args.volumes)
    print(f"{args.volumes} synthetic volumes {SHAPE}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    paths: dict[str, object] = {}
    if not args.skip_baseline:
        paths["scipy + sklearn loop (cpu)"] = lambda: baseline(data)
    names = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for name in names:
        device = torch.device(name)
        if device.type == "cuda":
            torch_path({k: v[:1] for k, v in data.items()}, device)  # warm-up: CUDA context, kernels
        paths[f"mriad torch ({device.type})"] = lambda device=device: torch_path(data, device)
    times: dict[str, list[float]] = {label: [] for label in paths}
    results: dict[str, dict] = {}
    for _ in range(args.repeats):  # interleaved: a shared machine's load drifts, both paths see it alike
        for label, run in paths.items():
            seconds, results[label] = _timed(run)
            times[label].append(seconds)
    base = float(np.median(next(iter(times.values()))))
    print(
        f"{'path':28s} {'median s':>9s} {'min-max s':>13s} {'s/volume':>9s} {'speed-up':>9s} {'Dice':>7s} {'AUPRC':>7s}"
    )
    for label, values in times.items():
        median, result = float(np.median(values)), results[label]
        print(
            f"{label:28s} {median:9.2f} {min(values):6.2f}-{max(values):6.2f} {median / args.volumes:9.4f} "
            f"{base / median:8.2f}x {np.nanmean(result['dice']):7.4f} {np.nanmean(result['auprc']):7.4f}"
        )
    reference = results.get("scipy + sklearn loop (cpu)")
    if reference is not None:
        for label, result in results.items():
            if result is reference:
                continue
            print(
                f"{label}: max |AUPRC - sklearn| {np.max(np.abs(result['auprc'] - reference['auprc'])):.2e}, "
                f"max |AUROC - sklearn| {np.max(np.abs(result['auroc'] - reference['auroc'])):.2e}, "
                f"threshold exact {result['threshold']:.5f} vs bisection {reference['threshold']:.5f}"
            )


if __name__ == "__main__":
    main()
