#!/usr/bin/env bash
# One-shot GPU check: CUDA tests, a CUDA smoke of the whole chain, and every benchmark, in < 8 minutes.
#
#   bash bench/gpu_check.sh                      # on a CUDA machine, from anywhere in the repo
#   bash bench/gpu_check.sh --device cpu --smoke # dry run of the same steps on a CPU (small sizes)
#
# Needs NOTHING installed beyond a Python with torch (CUDA build), numpy, scipy, nibabel, pandas,
# typer and rich: it runs from the repo root with PYTHONPATH=. (no venv, no pip). Optional pieces
# (pytest, scikit-learn for the reference evaluation loop) are skipped when missing. Each step has
# its own time limit, steps run in priority order, and steps that no longer fit the overall budget
# (GPU_CHECK_BUDGET seconds, default 470) are reported as skipped. Tables and logs go to $OUT when
# set, else bench/gpu_results/; summary.txt lists every step with its status and seconds.
set -u
cd "$(dirname "$0")/.."
DEVICE=cuda
SMOKE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE=$2; shift 2 ;;
        --smoke) SMOKE=1; shift ;;
        *) echo "usage: $0 [--device cuda|cpu] [--smoke]" >&2; exit 2 ;;
    esac
done
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export MRIAD_WORKSPACE=${MRIAD_WORKSPACE:-$(mktemp -d)}
RESULTS=${OUT:-bench/gpu_results}
mkdir -p "$RESULTS"
# A CPU dry run does the same steps far slower: its limits are 5x the GPU ones.
SCALE=1
if [ "$DEVICE" = cpu ]; then
    SCALE=5
    export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}  # as run_all.sh: shared CPUs, no spinning threads
fi
BUDGET=${GPU_CHECK_BUDGET:-$((470 * SCALE))}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
SUMMARY="$RESULTS/summary.txt"
: > "$SUMMARY"
failed=0

note() { echo "$*" | tee -a "$SUMMARY"; }

# step NAME LIMIT CMD...: runs CMD with a timeout (capped by what is left of the budget), output to NAME.txt
step() {
    local name=$1 limit=$(($2 * SCALE))
    shift 2
    local left=$((BUDGET - SECONDS))
    if [ "$left" -lt 20 ]; then
        note "SKIPPED  $name (time budget spent)"
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    local start=$SECONDS
    echo "== $name (limit ${limit}s): $*"
    if timeout "$limit" "$@" > "$RESULTS/$name.txt" 2>&1; then
        note "ok       $name ($((SECONDS - start)) s)"
    else
        note "FAILED   $name ($((SECONDS - start)) s, exit $?; see $RESULTS/$name.txt)"
        failed=1
    fi
    tail -n 25 "$RESULTS/$name.txt"
}

has() { "$PY" -c "import $1" > /dev/null 2>&1; }

note "gpu_check $(date -u '+%Y-%m-%d %H:%M UTC'), device $DEVICE, smoke $SMOKE, commit $(git rev-parse --short HEAD 2>/dev/null)"
{
    "$PY" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available()); print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"
    command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    echo "nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
} > "$RESULTS/environment.txt" 2>&1
cat "$RESULTS/environment.txt"
if [ "$DEVICE" != cpu ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    note "FAILED   no CUDA device visible to $PY (use --device cpu --smoke for a dry run)"
    exit 1
fi
for module in torch numpy scipy nibabel pandas typer rich; do
    has "$module" || { note "FAILED   python module $module is missing"; exit 1; }
done

if [ "$SMOKE" = 1 ]; then
    R=(--smoke); RC=(--smoke); T=(--smoke); E=(--volumes 4); BIG=(--volumes 8 --distinct 4); M=(--smoke); S=(--smoke)
    NET="base_channels=8 num_res_blocks=1 groups=4 head_channels=16"
else
    R=(--repeats 3); RC=(--repeats 2); T=(--steps 8); E=(--volumes 20); BIG=(--volumes 1151 --distinct 64); M=()
    S=(--config paper)
    NET="base_channels=32 num_res_blocks=1 groups=8 head_channels=32"
fi
BASELINE=()
has sklearn || BASELINE=(--skip-baseline)

# 1. CUDA tests (pytest -k cuda; skipped tests mean no CUDA device)
if has pytest; then
    step cuda_tests 240 "$PY" -m pytest -q -rs -p no:cacheprovider -k cuda tests/reconstruct
else
    note "SKIPPED  cuda_tests (pytest is not installed)"
fi

# 2. CUDA smoke of the chain: synthetic data -> train pDDPM (bf16 on CUDA) -> reconstruct -> evaluate
smoke_chain() {
    local data=$WORK/synth run=$WORK/run
    "$PY" -m mriad --seed 0 synth "$data" --preprocessed --healthy 7 --lesions 4 &&
        "$PY" -m mriad --device "$DEVICE" --hide-progress train --model pddpm --data "$data/manifest.csv" \
            --out "$run" --epochs 20 --val-every 10 --batch-size 8 $(printf -- '--set %s ' $NET) &&
        "$PY" -m mriad --device "$DEVICE" --hide-progress reconstruct --run "$run" --split brats-test &&
        "$PY" -m mriad --device "$DEVICE" --hide-progress evaluate --run "$run" --split brats-test --no-figures &&
        "$PY" -c "import json,sys; s=json.load(open(sys.argv[1])); print('smoke metrics', s['metrics'])" \
            "$run/eval/brats-test/summary.json"
}
export -f smoke_chain
export WORK DEVICE PY NET
step smoke_chain 150 bash -c smoke_chain

# 3. benchmarks, most important first (reconstruct: fp32, bf16, channels_last, bf16+channels_last side by side)
step bench_reconstruct 150 "$PY" bench/reconstruct.py --device "$DEVICE" "${R[@]}"
step bench_train 90 "$PY" bench/train_throughput.py --device "$DEVICE" "${T[@]}"
# training options side by side: fp32 / bf16 autocast / gradient checkpointing (speed and loss after N steps)
step bench_train_options 90 "$PY" bench/train_throughput.py --device "$DEVICE" --compare-options --loss-steps 40 "${T[@]}"
step bench_evaluate_1151 100 "$PY" bench/evaluate.py --devices "$DEVICE" --skip-baseline "${BIG[@]}"
step bench_evaluate 60 "$PY" bench/evaluate.py --devices "cpu,$DEVICE" "${BASELINE[@]}" "${E[@]}"
step bench_memory 40 "$PY" bench/memory.py --device "$DEVICE" "${M[@]}"
step bench_scaling 60 "$PY" bench/scaling.py --device "$DEVICE" "${S[@]}"
step bench_simplex 20 "$PY" bench/simplex.py --repeats 5
# torch.compile with CUDA graphs (mode reduce-overhead): fused kernels and graph replay of the fixed-shape calls
step bench_reconstruct_compile 150 "$PY" bench/reconstruct.py --device "$DEVICE" --variants k4 --compile \
    --compile-mode reduce-overhead "${RC[@]}"

note "total $SECONDS s; results in $RESULTS"
exit $failed
