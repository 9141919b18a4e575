"""QC of preprocessed real scans (bench/realdata.sh): one row per scan, pass/fail per check.

Checks
- every scan: image finite and in [0, 1]; shape = the final grid (96x96x50);
  brain mask Dice against the atlas brain mask (mriad.atlas.load_template("brain_mask")
  resampled onto the scan's grid through the affines, nearest neighbour) >= --min-dice (0.85).
- BraTS T2 (--t2 workspace): mean intensity inside the tumour (seg > 0) above the brain mean.
Also prints the per-step preprocessing times from each subject's timings.json.

Usage: python bench/realdata_qc.py --data OUT/data [--t2 OUT/brats_t2] [--markdown FILE]
Exit code 1 when any check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy.ndimage import map_coordinates

from mriad import atlas


def atlas_mask_on(shape: tuple[int, ...], affine: np.ndarray, template) -> np.ndarray:
    """The atlas brain mask sampled at the voxel centres of a grid (shape, affine)."""
    ijk = np.indices(shape).reshape(3, -1)
    world = affine[:3, :3] @ ijk + affine[:3, 3:4]
    inv = np.linalg.inv(template.affine)
    vox = inv[:3, :3] @ world + inv[:3, 3:4]
    values = map_coordinates(np.asarray(template.data, dtype=np.float32), vox, order=1, mode="constant", cval=0.0)
    return values.reshape(shape) > 0.5


def markdown(frame: pd.DataFrame, index: bool = False) -> str:
    """A GitHub table without the optional ``tabulate`` dependency."""
    if index:
        frame = frame.reset_index()
    head = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for values in frame.itertuples(index=False):
        lines.append("| " + " | ".join("" if v is None else str(v) for v in values) + " |")
    return "\n".join(lines)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return float(2.0 * np.logical_and(a, b).sum() / total) if total else 1.0


def load(path: str) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(path)
    return np.asarray(img.dataobj, dtype=np.float32), img.affine


def read_rows(workspace: Path) -> pd.DataFrame:
    manifest = workspace / "manifest.csv"
    if not manifest.is_file():
        return pd.DataFrame()
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    for column in ("image", "mask", "seg"):
        frame[column] = [str(workspace / p) if p and not Path(p).is_absolute() else p for p in frame[column]]
    return frame


def timings(folder: Path) -> dict[str, float]:
    path = folder / "timings.json"
    if not path.is_file():
        return {}
    raw = json.loads(path.read_text())
    if isinstance(raw, dict) and "steps" in raw and isinstance(raw["steps"], dict):
        raw = raw["steps"]
    return {k: float(v) for k, v in raw.items() if isinstance(v, (int, float))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="T1 workspace (manifest.csv)")
    parser.add_argument("--t2", type=Path, help="BraTS T2 workspace for the tumour-brightness check")
    parser.add_argument("--min-dice", type=float, default=0.85)
    parser.add_argument("--markdown", type=Path, help="also write the tables here")
    args = parser.parse_args()

    template = atlas.load_template("brain_mask")
    grid = atlas.final_grid()
    rows = []
    times = []
    frame = read_rows(args.data)
    failures_csv = args.data / "failures.csv"
    for r in frame.itertuples(index=False):
        img, aff = load(r.image)
        ok_range = bool(np.isfinite(img).all() and img.min() >= -1e-6 and img.max() <= 1 + 1e-6)
        if r.mask:
            mask = load(r.mask)[0] > 0.5
        else:
            mask = img > 0
        ref = atlas_mask_on(img.shape, aff, template)
        d = dice(mask, ref)
        rows.append(
            dict(
                dataset=r.dataset,
                subject=r.subject_id,
                split=r.split,
                shape="x".join(map(str, img.shape)),
                range_ok=ok_range,
                dice_atlas=round(d, 3),
                dice_ok=d >= args.min_dice,
                t2_tumour_brighter="",
            )
        )
        t = timings(Path(r.image).parent)
        if t:
            times.append(dict(dataset=r.dataset, subject=r.subject_id, **{k: round(v, 1) for k, v in t.items()}))

    if args.t2 is not None:
        t2 = read_rows(args.t2)
        by_subject = {(row["dataset"], row["subject"]): row for row in rows}
        for r in t2.itertuples(index=False):
            if not r.seg:
                continue
            img = load(r.image)[0]
            seg = load(r.seg)[0] > 0
            brain = (load(r.mask)[0] > 0.5) if r.mask else img > 0
            if seg.sum() == 0:
                verdict = "no tumour in kept slices"
            else:
                tumour, mean = float(img[seg].mean()), float(img[brain].mean())
                verdict = f"{tumour > mean} ({tumour:.2f} vs {mean:.2f})"
            row = by_subject.get((r.dataset, r.subject_id))
            if row is None:
                row = dict(
                    dataset=r.dataset,
                    subject=r.subject_id,
                    split="",
                    shape="",
                    range_ok="",
                    dice_atlas="",
                    dice_ok="",
                    t2_tumour_brighter="",
                )
                rows.append(row)
            row["t2_tumour_brighter"] = verdict

    table = pd.DataFrame(rows)
    failed = False
    if table.empty:
        print("no preprocessed scans found")
        failed = True
    else:

        def row_pass(row) -> bool:
            ok = (
                row["range_ok"] is not False
                and row["dice_ok"] is not False
                and row["shape"] in ("", "x".join(map(str, grid.shape)))
            )
            return bool(ok and not str(row["t2_tumour_brighter"]).startswith("False"))

        table["pass"] = table.apply(row_pass, axis=1)
        failed = not table["pass"].all()
    text = ["## QC per scan", "", markdown(table) if not table.empty else "(none)", ""]
    if times:
        tt = pd.DataFrame(times)
        text += ["## Preprocessing time per step (s, from timings.json)", "", markdown(tt), ""]
        numeric = tt.drop(columns=["subject"]).groupby("dataset").mean().round(1)
        text += ["Mean per data set:", "", markdown(numeric, index=True), ""]
    if failures_csv.is_file():
        text += ["## failures.csv", "", failures_csv.read_text(), ""]
    out = "\n".join(text)
    print(out)
    if args.markdown:
        args.markdown.write_text(out)
    if not table.empty:
        print(f"QC: {int(table['pass'].sum())}/{len(table)} scans pass")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
