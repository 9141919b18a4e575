"""Why does (or doesn't) pDDPM come out ahead? Measurements on runs that were already evaluated.

``residuals RUN...``: from each run's reconstructions of SPLIT, the mean |x - x_hat| on healthy brain
voxels and on lesion voxels (and their ratio: the contrast a threshold can use), and, on healthy
brain voxels, the error within 2 pixels of pDDPM's box borders against the rest (seams);
``--border-patch 48`` measures the same band for models without boxes, as a control.

``sweep RUN --t-test 200,300,... --patch-size 48,60``: re-evaluate RUN's best checkpoint with other
test-time settings, one variant folder each under OUT (a copy of the checkpoint whose config carries
the setting; the run itself is never touched), and print their Dice / AUPRC / AUROC. A patch size other
than the trained one is a test-time variant only (the network was trained on the trained box size).

Usage:
  python bench/pddpm_diagnostics.py residuals RUNS/t2/pddpm RUNS/t2/ddpm RUNS/t2/ae --split brats-test
  python bench/pddpm_diagnostics.py sweep RUNS/t2/pddpm --split brats-test --val-split brats-val \\
      --t-test 200,300,400,600,700 --out /tmp/sweep
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mriad.contracts.manifest import read_manifest, select_split
from mriad.contracts.run_folder import RunFolder, resolve_manifest
from mriad.infra.io import read_nifti
from mriad.models.patches import grid_starts

BORDER = 2  # pixels either side of a box edge counted as "at the border"


def _border_mask(shape: tuple[int, ...], patch: int) -> np.ndarray:
    """(X, Y) bool: pixels within BORDER of an inner box edge of the patch grid (image edges excluded)."""
    mask = np.zeros(shape[:2], dtype=bool)
    for axis, size in enumerate(shape[:2]):
        edges = {s for s in grid_starts(size, patch) if s > 0} | {s + patch for s in grid_starts(size, patch)}
        for edge in sorted(e for e in edges if 0 < e < size):
            lo, hi = max(0, edge - BORDER), min(size, edge + BORDER)
            if axis == 0:
                mask[lo:hi, :] = True
            else:
                mask[:, lo:hi] = True
    return mask


def residuals(run_path: Path, split: str, border_patch: int = 0) -> dict[str, float | str]:
    """Mean errors; the border band is that of ``border_patch``'s grid (default: the run's own box size),
    so models without boxes get the same pixels as a control (the 96 / 2 line is also the midline)."""
    run = RunFolder(run_path)
    config = run.read_config()
    rows = select_split(read_manifest(resolve_manifest(run.root, config, None)), split, int(config.get("fold", 0)))
    patch = border_patch or int(config.get("options", {}).get("patch_size", 0) or 0)
    healthy, lesion, border, inner = [], [], [], []
    for row in rows.itertuples(index=False):
        rec_path, _ = run.recon_files(split, str(row.subject_id))
        image = read_nifti(row.image).data.astype(np.float32)
        rec = read_nifti(rec_path).data.astype(np.float32)
        brain = read_nifti(row.mask).data > 0
        seg = read_nifti(row.seg).data > 0
        error = np.abs(image - rec)
        healthy.append(error[brain & ~seg])
        lesion.append(error[seg])
        if patch:
            at_border = np.broadcast_to(_border_mask(image.shape, patch)[..., None], image.shape)
            border.append(error[brain & ~seg & at_border])
            inner.append(error[brain & ~seg & ~at_border])
    h, les = np.concatenate(healthy), np.concatenate(lesion)
    result: dict[str, float | str] = {
        "run": run.root.name,
        "healthy": float(h.mean()),
        "lesion": float(les.mean()),
        "ratio": float(les.mean() / h.mean()),
    }
    if patch:
        b, i = np.concatenate(border), np.concatenate(inner)
        result.update(border=float(b.mean()), interior=float(i.mean()), border_ratio=float(b.mean() / i.mean()))
    return result


def _variant(run: RunFolder, out: Path, name: str, changes: dict[str, int]) -> Path:
    """A run folder under OUT whose best.pt is RUN's best checkpoint with ``changes`` in its config."""
    target = RunFolder(out / name)
    shutil.rmtree(target.root, ignore_errors=True)
    target.checkpoints.mkdir(parents=True)
    config = run.read_config()
    config["options"] = {**config.get("options", {}), **changes}
    config["label"] = f"{config['model']} {name}"
    target.config.write_text(json.dumps(config, indent=2) + "\n")
    state = torch.load(run.model_checkpoint("best"), map_location="cpu", weights_only=True)
    state["config"] = {**state.get("config", {}), **changes}
    torch.save({k: state[k] for k in ("model", "config", "state_dict")}, target.best)
    shutil.copyfile(run.metrics, target.metrics)
    return target.root


def _evaluate(run: Path, split: str, val_split: str) -> dict[str, float]:
    mriad = [sys.executable, "-m", "mriad", "--device", "cpu", "--hide-progress"]
    command = [*mriad, "evaluate", "--run", str(run), "--split", split, "--val-split", val_split, "--no-figures"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    frame = pd.read_csv(RunFolder(run).per_subject(split))
    return {m: float(frame[m].mean()) * 100 for m in ("dice", "auprc", "auroc")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    res = sub.add_parser("residuals")
    res.add_argument("runs", type=Path, nargs="+")
    res.add_argument("--split", default="brats-test")
    res.add_argument("--border-patch", type=int, default=0, help="box grid of the border band (default: own)")
    sweep = sub.add_parser("sweep")
    sweep.add_argument("run", type=Path)
    sweep.add_argument("--split", default="brats-test")
    sweep.add_argument("--val-split", default="brats-val")
    sweep.add_argument("--t-test", default="", help="comma-separated noise levels")
    sweep.add_argument("--patch-size", default="", help="comma-separated test-time box sizes")
    sweep.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "residuals":
        table = pd.DataFrame([residuals(run, args.split, args.border_patch) for run in args.runs])
        print("| " + " | ".join(table.columns) + " |\n|" + "---|" * len(table.columns))
        for row in table.itertuples(index=False):
            print("| " + " | ".join(v if isinstance(v, str) else f"{v:.4f}" for v in row) + " |")
        return 0
    run = RunFolder(args.run)
    variants = [("t_test", int(v)) for v in args.t_test.split(",") if v]
    variants += [("patch_size", int(v)) for v in args.patch_size.split(",") if v]
    lines = ["| setting | Dice [%] | AUPRC [%] | AUROC [%] |", "|---|---|---|---|"]
    for key, value in variants:
        folder = _variant(run, args.out, f"{key}-{value}", {key: value})
        means = _evaluate(folder, args.split, args.val_split)
        lines.append(f"| {key}={value} | {means['dice']:.2f} | {means['auprc']:.2f} | {means['auroc']:.2f} |")
        print(lines[-1], flush=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
