"""The table of bench/family.sh: metrics with bootstrap CIs, training budget and cost, per run.

Reads what the chain wrote: each run's eval/<split>/per_subject.csv (per-volume Dice, AUPRC, AUROC;
95 % percentile bootstrap CI of the mean, 10,000 resamples, seeded), summary.json (pooled AUPRC),
metrics.csv (the optimisation steps the network was trained for), config.json (batch size; a
variant's source) and the cost-<split>.json files of bench/cost.py. Prints one markdown table.

    python bench/family_table.py runs/family --split brats-test
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

RUNS = ("pddpm", "pddpm-mhd", "pddpm-ensemble", "cddpm", "anoddpm", "ddpm", "ae")
METRICS = ("dice", "auprc", "auroc")


def bootstrap(values: np.ndarray, resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _steps(run: Path) -> int:
    with open(run / "metrics.csv", newline="") as handle:
        return max(int(row["step"]) for row in csv.DictReader(handle))


def row(run: Path, split: str) -> str:
    config = json.loads((run / "config.json").read_text())
    with open(run / "eval" / split / "per_subject.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    cells = []
    for metric in METRICS:
        values = np.array([float(r[metric]) for r in rows if r[metric] not in ("", "nan")])
        low, high = bootstrap(values)
        cells.append(f"{100 * values.mean():.1f} [{100 * low:.1f}-{100 * high:.1f}]")
    summary = json.loads((run / "eval" / split / "summary.json").read_text())
    cost = json.loads((run / f"cost-{split}.json").read_text())
    calls = " + ".join(f"{v:g} {k}" for k, v in cost["inputs_per_slice"].items())
    source = config.get("variant_of", {}).get("run")
    network = f"= {Path(source).name}'s" if source else "trained"
    budget = f"{_steps(run)} x {config['options']['batch_size']} ({network})"
    return (
        f"| {run.name} | {' | '.join(cells)} | {100 * summary['pooled_auprc']:.1f} | {budget} | {calls} | "
        f"{cost['wall_s_per_volume']:.1f} / {cost['cpu_s_per_volume']:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="bench/family.sh's OUT")
    parser.add_argument("--split", default="brats-test")
    args = parser.parse_args()
    print(
        "| run | Dice % [95 % CI] | AUPRC % [95 % CI] | AUROC % [95 % CI] | pooled AUPRC % | steps x batch | "
        "network inputs per slice | s / volume (wall / CPU) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in RUNS:
        if (args.out / name / "eval" / args.split / "per_subject.csv").is_file():
            print(row(args.out / name, args.split))


if __name__ == "__main__":
    main()
