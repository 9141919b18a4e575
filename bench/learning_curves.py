"""Learning curves: Dice, AUPRC and AUROC against optimisation steps for the runs in a folder.

Reads what `mriad evaluate --checkpoint step-K` wrote for every kept checkpoint of every run
(``RUN/checkpoint-views/step-K/eval/SPLIT/per_subject.csv``) and, marked separately, the run's own
evaluation of its best checkpoint (``RUN/eval/SPLIT``, at the step of the lowest validation loss).
Prints a markdown table and writes a PNG with one panel per metric, one line per run.

Usage: ``python bench/learning_curves.py RUNS_FOLDER --split brats-test --out curves.png [--title T]``
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from mriad.contracts.run_folder import VIEWS, RunFolder, step_of

METRICS = ("dice", "auprc", "auroc")
TITLES = {"dice": "Dice [%]", "auprc": "AUPRC [%]", "auroc": "AUROC [%]"}


def _means(per_subject: Path) -> dict[str, float] | None:
    if not per_subject.is_file():
        return None
    frame = pd.read_csv(per_subject)
    return {m: float(frame[m].mean()) * 100 for m in METRICS if m in frame}


def best_step(run: RunFolder) -> int | None:
    """The step of the lowest validation loss in metrics.csv (first of equals, as train keeps it)."""
    if not run.metrics.is_file():
        return None
    with open(run.metrics, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("val_loss")]
    return int(min(rows, key=lambda r: float(r["val_loss"]))["step"]) if rows else None


def collect(runs_folder: Path, split: str) -> pd.DataFrame:
    """One row per (run, step): the mean over subjects of each metric; ``best`` marks best.pt."""
    rows = []
    for root in sorted(p for p in runs_folder.iterdir() if (p / "config.json").is_file()):
        run = RunFolder(root)
        views = sorted((step_of(p.name), p) for p in (root / VIEWS).glob("step-*") if step_of(p.name) is not None)
        for step, view in views:
            means = _means(RunFolder(view).per_subject(split))
            if means:
                rows.append({"run": root.name, "step": step, "best": False, **means})
        means = _means(run.per_subject(split))
        step = best_step(run)
        if means and step is not None:
            rows.append({"run": root.name, "step": step, "best": True, **means})
    return pd.DataFrame(rows, columns=["run", "step", "best", *METRICS])


def plot(table: pd.DataFrame, out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.4), constrained_layout=True)
    for ax, metric in zip(axes, METRICS, strict=True):
        for i, (name, rows) in enumerate(table.groupby("run", sort=True)):
            colour = f"C{i}"
            curve = rows[~rows["best"]].sort_values("step")
            ax.plot(curve["step"], curve[metric], "o-", color=colour, label=name)
            best = rows[rows["best"]]
            ax.plot(best["step"], best[metric], "*", color=colour, markersize=12, markeredgecolor="k")
        ax.set_xlabel("optimisation steps")
        ax.set_title(TITLES[metric])
        ax.grid(alpha=0.3)
    axes[0].legend(title="line: step-K; star: best.pt", fontsize=8, title_fontsize=8)
    fig.suptitle(title)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def markdown(table: pd.DataFrame) -> str:
    lines = ["| run | step | checkpoint | Dice [%] | AUPRC [%] | AUROC [%] |", "|---|---|---|---|---|---|"]
    for row in table.sort_values(["run", "best", "step"]).itertuples(index=False):
        cells = [f"{getattr(row, m):.2f}" if np.isfinite(getattr(row, m)) else "-" for m in METRICS]
        kind = "best.pt" if row.best else f"step-{row.step}"
        lines.append(f"| {row.run} | {row.step} | {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="folder whose sub-folders are run folders")
    parser.add_argument("--split", default="brats-test")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    table = collect(args.runs, args.split)
    if table.empty:
        print(f"{args.runs}: no evaluation on {args.split} found", file=sys.stderr)
        return 1
    plot(table, args.out, args.title or f"{args.runs.name}, {args.split}")
    print(markdown(table))
    print(f"\nfigure: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
