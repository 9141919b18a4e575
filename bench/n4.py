"""N4 settings against the lesion-contrast check: how much faster, how much tumour contrast kept.

``mriad.preprocess.bias.n4_correct`` estimates the bias field on an x``shrink`` image with one
B-spline fitting level per entry of ``iterations``. Three levels were chosen because the fourth
absorbed tumours into the "bias" (docs in bias.py). This bench runs other settings side by side on
the real BraTS 2018 T2 scans (../shared/realdata/brats18; skipped when absent), each cropped to its
brain as the pipeline does before N4, and reports per setting: wall and CPU seconds, the tumour /
brain mean-intensity ratio after correction (raw: before), and how far the corrected image lies
from the first setting's, shrink 4 (RMS of the relative difference inside the brain).

    python bench/n4.py --json /tmp/n4.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "brats18"
SETTINGS: dict[str, dict[str, Any]] = {
    "shrink 4, 3 x 50 (default before revision 4)": {"shrink": 4, "iterations": (50, 50, 50)},
    "shrink 6, 3 x 50 (default)": {"shrink": 6, "iterations": (50, 50, 50)},
    "shrink 8, 3 x 50": {"shrink": 8, "iterations": (50, 50, 50)},
    "shrink 4, 3 x 25": {"shrink": 4, "iterations": (25, 25, 25)},
    "shrink 6, 3 x 25": {"shrink": 6, "iterations": (25, 25, 25)},
    "shrink 4, 2 x 50": {"shrink": 4, "iterations": (50, 50)},
}


def _case(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """T2, brain mask and tumour mask of one case, cropped to the brain's bounding box."""
    import nibabel as nib

    t2 = np.asarray(nib.load(next(folder.glob("*_t2.nii.gz"))).dataobj, dtype=np.float32)
    seg = np.asarray(nib.load(next(folder.glob("*_seg.nii.gz"))).dataobj) > 0
    brain = t2 > 0  # BraTS scans are skull stripped: the brain is where the image is not 0
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(brain))
    return t2[box], brain[box], seg[box] & brain[box]


def _ratio(image: np.ndarray, brain: np.ndarray, tumour: np.ndarray) -> float:
    return float(image[tumour].mean() / image[brain & ~tumour].mean())


def run(cases: list[Path]) -> dict[str, Any]:
    from mriad.preprocess.bias import n4_correct

    rows: dict[str, dict[str, list[float]]] = {
        name: {"wall": [], "cpu": [], "ratio": [], "rms_vs_shrink4": []} for name in SETTINGS
    }
    raw_ratios = []
    for folder in cases:
        image, brain, tumour = _case(folder)
        raw_ratios.append(_ratio(image, brain, tumour))
        reference = None
        for name, setting in SETTINGS.items():
            wall, cpu = time.perf_counter(), time.process_time()
            corrected = n4_correct(image, brain, **setting)
            rows[name]["wall"].append(time.perf_counter() - wall)
            rows[name]["cpu"].append(time.process_time() - cpu)
            rows[name]["ratio"].append(_ratio(corrected, brain, tumour))
            if reference is None:
                reference = corrected
            relative = (corrected[brain] - reference[brain]) / np.maximum(reference[brain], 1e-6)
            rows[name]["rms_vs_shrink4"].append(float(np.sqrt(np.mean(relative**2))))
        print(f"{folder.name}: done", flush=True)
    return {"cases": [c.name for c in cases], "raw_ratio": raw_ratios, "settings": rows}


def table(numbers: dict[str, Any]) -> str:
    raw = np.array(numbers["raw_ratio"])
    lines = [
        f"raw tumour/brain T2 ratio: {raw.min():.2f}-{raw.max():.2f} (mean {raw.mean():.2f}), "
        f"{len(raw)} BraTS 2018 cases",
        "",
        "| setting | wall s / case | CPU s / case | tumour/brain ratio (min-max, mean) | ratio kept vs raw "
        "(min) | RMS rel. diff. to shrink 4 |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in numbers["settings"].items():
        ratio = np.array(row["ratio"])
        kept = (ratio - 1) / np.maximum(raw - 1, 1e-6)
        lines.append(
            f"| {name} | {np.mean(row['wall']):.1f} | {np.mean(row['cpu']):.1f} | "
            f"{ratio.min():.2f}-{ratio.max():.2f}, {ratio.mean():.2f} | {kept.min():.2f} | "
            f"{np.mean(row['rms_vs_shrink4']):.4f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=8, help="BraTS cases to use (default: all 8)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()
    cases = sorted(p for p in REALDATA.glob("Brats18_*") if p.is_dir())[: args.cases]
    if not cases:
        raise SystemExit(f"no BraTS cases under {REALDATA}: nothing to measure")
    numbers = run(cases)
    print(table(numbers))
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")


if __name__ == "__main__":
    main()
