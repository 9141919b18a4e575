"""`make demo`: the whole chain on built-in synthetic scans, printed command by command.

synth (raw IXI heads + BraTS-like tumours) -> preprocess -> split -> train pDDPM and two baselines ->
reconstruct + evaluate -> compare -> HTML report. Every step is a real `mriad` command run in a
subprocess, so the log is a script a user can copy. `--quick` shrinks everything for tests.

Usage: ``python -m mriad.demo [--quick] [--out demo_out] [--keep]``
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DemoSize:
    healthy: int
    lesions: int
    epochs: int  # the same for every trained model: with batch 32 and < 32 training volumes, epochs = steps
    channels: int
    skull_strip: str
    raw: bool  # False: synthesise the preprocessed layout directly (skips `mriad preprocess`)


FULL = DemoSize(healthy=16, lesions=8, epochs=100, channels=16, skull_strip="atlas", raw=True)
QUICK = DemoSize(healthy=7, lesions=4, epochs=2, channels=8, skull_strip="atlas", raw=False)
BATCH = "32"  # every model gets the same budget, epochs x batch; the comparison table prints it


def _run(args: list[str], workspace: Path) -> None:
    print(f"\n$ mriad {shlex.join(args)}", flush=True)
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, "-m", "mriad", *args], cwd=workspace, check=False)
    if completed.returncode != 0:
        raise SystemExit(f"demo step failed with exit code {completed.returncode}: mriad {shlex.join(args)}")
    print(f"  ({time.perf_counter() - started:.1f} s)", flush=True)


def _prepare_data(size: DemoSize, common: list[str], out: Path) -> None:
    """Synthetic raw scans -> preprocess -> split; or the preprocessed layout straight away."""
    raw, data = "raw", "data"
    counts = ["--healthy", str(size.healthy), "--lesions", str(size.lesions), "--layout", "brats"]
    if not size.raw:  # already preprocessed and split
        _run([*common, "synth", data, *counts, "--preprocessed"], out)
        return
    _run([*common, "synth", raw, *counts], out)
    ixi = ["--dataset", "ixi", "--skull-strip", size.skull_strip, "--demographics", f"{raw}/IXI.csv"]
    _run([*common, "preprocess", f"{raw}/IXI", data, *ixi, "--jobs", "2"], out)
    _run([*common, "preprocess", f"{raw}/BraTS2021", data, "--dataset", "brats21", "--jobs", "2"], out)
    _run([*common, "split", f"{data}/manifest.csv", "--brats-val", "0.3"], out)


def _train_and_evaluate(size: DemoSize, common: list[str], out: Path) -> list[str]:
    """Every model with the same budget (epochs x batch), evaluated on brats-test; returns the run names."""
    channels = str(size.channels)
    budget = ["--epochs", str(size.epochs), "--batch-size", BATCH, "--lr", "1e-3"]
    budget += ["--val-every", str(max(1, size.epochs // 5))]
    models = {
        "pddpm": [*budget, "--channels", channels, "--set", "num_res_blocks=1"],
        "ae": [*budget, "--set", f"base_channels={channels}"],
        "thresh": [],
    }
    for model, options in models.items():
        _run([*common, "train", "--model", model, "--fold", "0", "--out", f"runs/{model}", *options], out)
        _run([*common, "evaluate", "--run", f"runs/{model}", "--split", "brats-test"], out)
    return list(models)


def run_demo(out: Path, size: DemoSize, seed: int = 0) -> float:
    """Run the chain in ``out`` (the workspace); returns the total seconds."""
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    common = ["--seed", str(seed), "--device", "cpu"]
    _prepare_data(size, common, out)
    models = _train_and_evaluate(size, common, out)
    runs = [f"runs/{m}" for m in models]
    _run([*common, "compare", *runs, "--split", "brats-test", "--baseline", "runs/pddpm", "--out", "compare"], out)
    _run([*common, "report", "runs/pddpm"], out)
    if size.raw:
        _detect_new_scan(common, out, seed)
    total = time.perf_counter() - started
    print(
        f"\nDemo finished in {total:.0f} s. Comparison: {out / 'compare' / 'compare.md'}; "
        f"HTML report: {out / 'runs' / 'pddpm' / 'report.html'}"
    )
    return total


def _detect_new_scan(common: list[str], out: Path, seed: int) -> None:
    """Apply the demo's pDDPM to a raw scan it has never seen and compare its lesion mask with the truth.

    The new scan is a raw BraTS-like one (skull-stripped, on the SRI24 grid), so preprocessing skips
    skull stripping and registration as it did for the demo's BraTS scans; N4 follows the training data.
    """
    import json

    _run(
        [
            "--seed",
            str(seed + 1000),
            "--device",
            "cpu",
            "synth",
            "new_scan",
            "--healthy",
            "0",
            "--lesions",
            "1",
            "--layout",
            "brats",
        ],
        out,
    )
    scan = next((out / "new_scan" / "BraTS2021").rglob("*_t2.nii.gz"))
    listing = out / "new_scan" / "scans.csv"  # the scan and its lesion mask (ground truth, for the Dice)
    listing.write_text(
        f"subject_id,image,seg\nnew_scan,{scan.relative_to(listing.parent)},"
        f"{scan.with_name(scan.name.replace('_t2.', '_seg.')).relative_to(listing.parent)}\n"
    )
    _run(
        [
            *common,
            "detect",
            str(listing.relative_to(out)),
            "--run",
            "runs/pddpm",
            "--out",
            "detect",
            "--skull-strip",
            "none",
            "--registration",
            "none",
        ],
        out,
    )
    summary = json.loads((out / "detect" / "new_scan_summary.json").read_text())
    print("\nmriad detect on a new raw scan (outputs on the scan's own grid):")
    for name, path in summary["outputs"].items():
        print(f"  {name:9s} {out / path}")
    dice = (summary.get("ground_truth") or {}).get("dice")
    print(
        f"  lesion {summary['lesion_volume_ml']:.1f} ml in {summary['n_components']} component(s); "
        f"Dice vs the synthetic lesion: {'n/a' if dice is None else f'{dice:.3f}'}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, preprocessed synthetic data (for tests)")
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="workspace folder (default demo_out)")
    parser.add_argument("--keep", action="store_true", help="keep an existing demo folder instead of starting anew")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.out.exists() and not args.keep:
        shutil.rmtree(args.out)
    run_demo(args.out.resolve(), QUICK if args.quick else FULL, seed=args.seed)


if __name__ == "__main__":
    main()
