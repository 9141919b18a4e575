"""Does an inference mode keep the numbers? Per-volume AUROC / Dice and map differences vs fp32.

    .venv/bin/python bench/precision_check.py demo_out/runs/pddpm --out /tmp/precision

For each mode (fp32, bf16, cl = channels_last, bf16+cl) the run's config and checkpoints are copied
to OUT/<mode>, ``reconstruct`` writes the maps of the validation and test splits with that mode's
inference settings and ``mriad evaluate`` scores the test split (threshold from the validation
split, as always). The table gives, per mode, the largest absolute change of a volume's AUROC and
Dice against fp32 and the largest voxel difference of the anomaly maps; issue 19's bound for a CPU
default is 0.005 on AUROC and Dice.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

MODES = {
    "fp32": {"precision": "fp32", "channels_last": False},
    "bf16": {"precision": "bf16", "channels_last": False},
    "cl": {"precision": "fp32", "channels_last": True},
    "bf16+cl": {"precision": "bf16", "channels_last": True},
}


def _copy_run(run: Path, target: Path) -> Path:
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    shutil.copy2(run / "config.json", target / "config.json")
    shutil.copytree(run / "checkpoints", target / "checkpoints")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--val-split", default="brats-val")
    parser.add_argument("--split", default="brats-test")
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import torch

    from mriad.infra.io import read_nifti
    from mriad.reconstruct import reconstruct

    results = {}
    for mode in args.modes.split(","):
        run = _copy_run(args.run, args.out / mode.replace("+", "_"))
        for split in (args.val_split, args.split):
            reconstruct(run, split, device=torch.device("cpu"), inference=MODES[mode])
        subprocess.run(
            [sys.executable, "-m", "mriad", "--device", "cpu", "--quiet", "evaluate", "--run", str(run),
             "--split", args.split, "--no-figures"], check=True,
        )  # fmt: skip
        frame = pd.read_csv(run / "eval" / args.split / "per_subject.csv").set_index("subject_id")
        maps = {
            p.name: read_nifti(p, allow_empty=True).data
            for p in sorted((run / "recon" / args.split).glob("*_score.nii.gz"))
        }
        results[mode] = (frame, maps)
    base_frame, base_maps = results["fp32"]
    print(f"# precision check: {args.run} on {args.split} ({len(base_frame)} volumes), threshold from {args.val_split}")
    print(
        f"{'mode':8s} {'max|dAUROC|':>11s} {'max|dDice|':>10s} {'max|d map|':>10s}"
        f" {'mean AUROC':>10s} {'mean Dice':>9s}"
    )
    for mode, (frame, maps) in results.items():
        d_auroc = float((frame["auroc"] - base_frame["auroc"]).abs().max())
        d_dice = float((frame["dice"] - base_frame["dice"]).abs().max())
        d_map = max(float(np.abs(maps[name] - base_maps[name]).max()) for name in base_maps)
        print(
            f"{mode:8s} {d_auroc:11.5f} {d_dice:10.5f} {d_map:10.2e}"
            f" {frame['auroc'].mean():10.4f} {frame['dice'].mean():9.4f}"
        )


if __name__ == "__main__":
    main()
