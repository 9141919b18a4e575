#!/usr/bin/env bash
# `make bench`: every benchmark on this machine, one table each, in ~10 minutes on 2 shared CPU cores.
#
# Each script measures the paths it compares in ONE process, interleaved, and prints median
# [min-max] and the median of per-round ratios. On a CPU, reconstruction runs twice:
#   1 thread, CPU-time clock  - the work each path does, whatever else the machine runs (robust on a
#                               shared box, where wall times of multi-threaded code swing 2-4x);
#   2 threads, wall clock     - the target's setting ("the same 2 cores"), K = 4 row only.
# OpenMP threads wait passively (OMP_WAIT_POLICY=PASSIVE unless set): on a loaded 2-core box spinning
# workers burn the cores the other threads need and made 2 threads 2-4x slower than 1 in our runs.
# On a GPU machine use bench/gpu_check.sh instead (paper network, bf16, CUDA tests).
#
# Usage: bash bench/run_all.sh            (BENCH_QUICK=1: smoke sizes, ~3 minutes)
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
LIMIT=${BENCH_STEP_TIMEOUT:-600}
failed=0

step() {
    local title=$1
    shift
    echo
    echo "== $title: $*"
    local start=$SECONDS
    if ! timeout "$LIMIT" "$PY" "$@"; then
        echo "!! $title failed or exceeded ${LIMIT}s"
        failed=1
    fi
    echo "   ($((SECONDS - start)) s)"
}

echo "mriad benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC'), nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "commit $(git rev-parse --short HEAD 2>/dev/null)$(test -n "$(git status --porcelain 2>/dev/null)" && echo ' (+ uncommitted changes)')"
echo "OMP_WAIT_POLICY=$OMP_WAIT_POLICY, load $(cut -d' ' -f1-3 /proc/loadavg)"

if [ "${BENCH_QUICK:-0}" = 1 ]; then
    step "reconstruction (smoke)" bench/reconstruct.py --smoke
    step "training throughput (smoke)" bench/train_throughput.py --smoke
    step "evaluation" bench/evaluate.py --volumes 4
    step "memory" bench/memory.py --smoke
    step "scaling (smoke)" bench/scaling.py --smoke
else
    step "reconstruction, 1 thread, CPU time" bench/reconstruct.py --threads 1 --clock cpu --repeats 2
    step "reconstruction, 2 threads, wall clock" bench/reconstruct.py --threads 2 --repeats 2 --variants k4
    step "training throughput" bench/train_throughput.py --steps 6
    step "evaluation" bench/evaluate.py --volumes 20 --repeats 2
    step "memory" bench/memory.py
    step "scaling" bench/scaling.py
    step "simplex noise" bench/simplex.py --repeats 10
fi
echo
echo "total $SECONDS s"
exit $failed
