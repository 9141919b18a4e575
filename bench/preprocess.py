"""Benchmark `mriad preprocess`: seconds per subject per step, and the speed-up of ``--jobs 2``.

Runs on synthetic raw IXI-like heads (with skull, non-RAS, anisotropic; made by ``mriad.synth``) and,
when the shared real samples are present, on real IXI T1 heads. Skull stripping is ``atlas`` by
default (the <= 60 s per raw subject target is without HD-BET); ``--hd-bet`` adds an HD-BET run on one
real head. Prints markdown tables; ``--json FILE`` also saves the numbers.

    python bench/preprocess.py                 # 4 synthetic + 2 real heads, jobs 1 vs 2
    python bench/preprocess.py --synthetic 2 --real 0
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
STEPS = (
    "read",
    "reorient",
    "resample",
    "skull_strip",
    "register",
    "crop",
    "n4",
    "downsample",
    "normalise",
    "write",
    "qc",
    "total",
)


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the --jobs workers)."""
    import resource

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def _run(raw: Path, out: Path, **kwargs: Any) -> tuple[float, float, dict[str, dict[str, float]], list[str]]:
    """Wall and CPU seconds of one batch; CPU time is what other load on the machine cannot inflate."""
    from mriad.preprocess import preprocess

    start, cpu = time.perf_counter(), _cpu_seconds()
    result = preprocess(raw, out, force=True, **kwargs)
    wall = time.perf_counter() - start
    return wall, _cpu_seconds() - cpu, result.timings, [p.reason for p in result.failures]


def _mean_steps(timings: dict[str, dict[str, float]]) -> dict[str, float]:
    values: dict[str, list[float]] = {}
    for subject in timings.values():
        for step, seconds in subject.items():
            values.setdefault(step, []).append(seconds)
    return {step: sum(v) / len(v) for step, v in values.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--synthetic", type=int, default=4, help="synthetic raw IXI-like subjects")
    parser.add_argument("--real", type=int, default=2, help="real IXI T1 heads (if ../shared/realdata exists)")
    parser.add_argument("--skull-strip", default="atlas", help="skull strip method for the timed runs")
    parser.add_argument("--hd-bet", action="store_true", help="also time HD-BET (CPU fast mode) on one real head")
    parser.add_argument("--workdir", type=Path, default=None, help="keep inputs/outputs here (default: temporary)")
    parser.add_argument("--json", type=Path, default=None, help="write the numbers to this JSON file")
    args = parser.parse_args(argv)

    from mriad.preprocess.threads import available_cores

    work = args.workdir or Path(tempfile.mkdtemp(prefix="mriad-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    sets: dict[str, tuple[Path, dict[str, Any]]] = {}
    if args.synthetic:
        from mriad.synth import synthesize

        raw = work / "synthetic"
        if not (raw / "IXI").is_dir():
            synthesize(raw, args.synthetic, 0, layout="ixi", seed=11)
        sets["synthetic IXI (T2)"] = (raw / "IXI", {"dataset": "ixi", "modality": "t2"})
    real_files = sorted((REALDATA / "ixi_t1").glob("IXI*_T1.nii.gz"))[: args.real]
    if real_files:
        raw = work / "real_ixi"
        raw.mkdir(exist_ok=True)
        for path in real_files:
            if not (raw / path.name).exists():
                (raw / path.name).symlink_to(path)
        sets["real IXI (T1, 2 mm)"] = (raw, {"dataset": "ixi", "modality": "t1"})

    results: dict[str, Any] = {"cores": available_cores(), "load_before": os.getloadavg(), "sets": {}}
    for name, (raw, kwargs) in sets.items():
        entry: dict[str, Any] = {}
        for jobs in (1, 2):
            wall, cpu, timings, failures = _run(
                raw, work / f"out_{jobs}" / name.split()[0], jobs=jobs, skull_strip=args.skull_strip, **kwargs
            )
            entry[f"jobs{jobs}"] = {
                "wall_s": wall,
                "cpu_s": cpu,
                "subjects": len(timings),
                "steps": _mean_steps(timings),
                "failures": failures,
            }
        entry["speedup"] = entry["jobs1"]["wall_s"] / max(entry["jobs2"]["wall_s"], 1e-9)
        results["sets"][name] = entry
    if args.hd_bet and real_files:
        one = work / "hdbet_raw"
        one.mkdir(exist_ok=True)
        if not (one / real_files[0].name).exists():
            (one / real_files[0].name).symlink_to(real_files[0])
        wall, cpu, timings, failures = _run(one, work / "out_hdbet", dataset="ixi", modality="t1", skull_strip="hd-bet")
        results["hd_bet"] = {"wall_s": wall, "cpu_s": cpu, "steps": _mean_steps(timings), "failures": failures}
    results["load_after"] = os.getloadavg()
    _print(results, args.skull_strip)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _print(results: dict[str, Any], strip: str) -> None:
    sets = results["sets"]
    print(
        f"\n### mriad preprocess, {results['cores']} cores, skull strip `{strip}` "
        f"(load average before {results['load_before'][0]:.1f}, after {results['load_after'][0]:.1f})\n"
    )
    header = "| step (s / subject, jobs 1) | " + " | ".join(sets) + (" | HD-BET run |" if "hd_bet" in results else " |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for step in STEPS:
        cells = [f"{sets[n]['jobs1']['steps'].get(step, 0.0):.1f}" for n in sets]
        if "hd_bet" in results:
            cells.append(f"{results['hd_bet']['steps'].get(step, 0.0):.1f}")
        print(f"| {step} | " + " | ".join(cells) + " |")
    print(
        "\n| data | subjects | wall jobs 1 (s) | wall jobs 2 (s) | s / subject (jobs 2) | speed-up "
        "| CPU s / subject (jobs 1 / jobs 2) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, entry in sets.items():
        n = max(entry["jobs1"]["subjects"], 1)
        print(
            f"| {name} | {n} | {entry['jobs1']['wall_s']:.1f} | {entry['jobs2']['wall_s']:.1f} | "
            f"{entry['jobs2']['wall_s'] / n:.1f} | {entry['speedup']:.2f}x | "
            f"{entry['jobs1']['cpu_s'] / n:.1f} / {entry['jobs2']['cpu_s'] / n:.1f} |"
        )
    if "hd_bet" in results:
        print(
            f"\nHD-BET run (1 real head): wall {results['hd_bet']['wall_s']:.1f} s, "
            f"CPU {results['hd_bet']['cpu_s']:.1f} s"
        )
    print("\nWall times include other load on the machine (see the load averages); CPU seconds do not.")
    for name, entry in sets.items():
        for jobs in ("jobs1", "jobs2"):
            for reason in entry[jobs]["failures"]:
                print(f"failure ({name}, {jobs}): {reason}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
