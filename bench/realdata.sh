#!/usr/bin/env bash
# Real scans end to end: preprocess IXI T1 (raw heads), MSLUB patient07 (MNI, stripped) and BraTS 2018
# (SRI24, stripped), split, train small pDDPM / DDPM / AE on IXI T1, evaluate on BraTS and MSLUB,
# compare, and run the preprocessing QC (bench/realdata_qc.py).
#
# Needs ../shared/realdata (relative to the repo root); skips with exit 0 when it is absent.
# Nothing from the shared folder is copied into the repository: all outputs go to $OUT_DIR.
#
# Knobs (environment):
#   OUT_DIR    workspace (default /tmp/mriad-realdata)
#   N_HDBET    IXI subjects stripped with HD-BET (the rest: --skull-strip atlas); default 2, "all" = 12
#   JOBS       preprocess --jobs (default 2)
#   REG        IXI/MSLUB registration to SRI24 (default affine-fast; "affine" is the slower full one)
#   STEPS      optimisation steps per model (default 300); VAL_EVERY epochs between validations (25)
#   MODELS     models to train (default "pddpm ddpm ae")
#   DEVICE     mriad --device (default cpu)
#   STAGES     subset of "preprocess split train eval compare qc" (default all)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REAL="$REPO/../shared/realdata"
if [[ ! -d "$REAL" ]]; then
    echo "realdata.sh: $REAL is absent; skipping (nothing to do)."
    exit 0
fi
REAL="$(cd "$REAL" && pwd)"

OUT_DIR="${OUT_DIR:-/tmp/mriad-realdata}"
N_HDBET="${N_HDBET:-2}"
JOBS="${JOBS:-2}"
REG="${REG:-affine-fast}"
STEPS="${STEPS:-300}"
VAL_EVERY="${VAL_EVERY:-25}"
MODELS="${MODELS:-pddpm ddpm ae}"
DEVICE="${DEVICE:-cpu}"
STAGES="${STAGES:-preprocess split train eval compare qc}"

if [[ -x "$REPO/.venv/bin/mriad" ]]; then MRIAD="$REPO/.venv/bin/mriad"; PY="$REPO/.venv/bin/python"
else MRIAD="mriad"; PY="python"; fi
M() { "$MRIAD" --device "$DEVICE" --hide-progress "$@"; }
has() { [[ " $STAGES " == *" $1 "* ]]; }
stamp() { echo "[$(date -u +%H:%M:%S)] $*"; }

DATA="$OUT_DIR/data"          # the T1 workspace: ixi/, mslub/, brats/, manifest.csv
T2="$OUT_DIR/brats_t2"        # BraTS T2 only, for the "tumour brighter on T2" QC
RAW="$OUT_DIR/raw"            # symlinked subsets of the shared IXI folder (no copies)
RUNS="$OUT_DIR/runs"
mkdir -p "$OUT_DIR" "$RAW" "$RUNS"
TIMES="$OUT_DIR/stage_times.tsv"
: > "$TIMES"
timed() {  # timed LABEL cmd...: run, record wall seconds
    local label="$1"; shift
    local t0; t0=$(date +%s)
    local rc=0
    "$@" || rc=$?
    printf '%s\t%s\t%s\n' "$label" "$(( $(date +%s) - t0 ))" "$rc" >> "$TIMES"
    stamp "$label: $(( $(date +%s) - t0 )) s (exit $rc)"
    return $rc
}

if has preprocess; then
    # IXI: HD-BET on the first N_HDBET heads, atlas-based stripping on the rest (HD-BET on CPU is slow).
    rm -rf "$RAW/ixi_hdbet" "$RAW/ixi_atlas"; mkdir -p "$RAW/ixi_hdbet" "$RAW/ixi_atlas"
    i=0
    for f in "$REAL"/ixi_t1/*_T1.nii.gz; do
        if [[ "$N_HDBET" == all || $i -lt $N_HDBET ]]; then ln -s "$f" "$RAW/ixi_hdbet/"; else ln -s "$f" "$RAW/ixi_atlas/"; fi
        i=$((i + 1))
    done
    # Preprocess exits 1 when a subject fails (it goes to failures.csv); carry on and let QC say so.
    if compgen -G "$RAW/ixi_hdbet/*" > /dev/null; then
        timed "preprocess ixi t1 hd-bet" M preprocess "$RAW/ixi_hdbet" "$DATA" --dataset ixi --modality t1 \
            --skull-strip hd-bet --registration "$REG" --jobs "$JOBS" || true
    fi
    if compgen -G "$RAW/ixi_atlas/*" > /dev/null; then
        timed "preprocess ixi t1 atlas" M preprocess "$RAW/ixi_atlas" "$DATA" --dataset ixi --modality t1 \
            --skull-strip atlas --registration "$REG" --jobs "$JOBS" || true
    fi
    timed "preprocess mslub t1" M preprocess "$REAL/mslub" "$DATA" --dataset mslub --modality t1 \
        --skull-strip none --registration "$REG" --jobs 1 || true
    timed "preprocess brats t1" M preprocess "$REAL/brats18" "$DATA" --dataset brats21 --modality t1 \
        --jobs "$JOBS" || true
    timed "preprocess brats t2 (QC only)" M preprocess "$REAL/brats18" "$T2" --dataset brats21 --modality t2 \
        --jobs "$JOBS" || true
fi

if has split; then
    # IXI: no healthy test set (12 subjects), 5 folds over train/val; BraTS 3 val / 5 test.
    # MSLUB has one case: --mslub-val 0 puts it in test (its threshold then comes from brats-val).
    timed "split" M split "$DATA/manifest.csv" --test-fraction 0 --folds 5 --brats-val 0.375 --mslub-val 0
    "$PY" - "$DATA/manifest.csv" <<'EOF'
import sys, pandas as pd
m = pd.read_csv(sys.argv[1])
cols = [c for c in m.columns if c in ("dataset", "split", "fold")]
print(m.groupby(cols, dropna=False).size().to_string())
EOF
fi

# Small networks, about 10 minutes each on 2 CPU cores: base width 16, one block per level, batch 32,
# lr 1e-3 (the paper's 1e-5 / the reference's 1e-4 need far more steps than a CPU gives), linear schedule.
SMALL_DIFF=(--channels 16 --set num_res_blocks=1 --batch-size 32 --lr 1e-3)
if has train; then
    for model in $MODELS; do
        case "$model" in
            pddpm|ddpm) extra=("${SMALL_DIFF[@]}") ;;
            ae)    extra=(--channels 16 --batch-size 32) ;;
            *)     extra=() ;;
        esac
        timed "train $model" M train --model "$model" --data "$DATA/manifest.csv" --fold 0 \
            --out "$RUNS/$model-fold0" --force --max-steps "$STEPS" --val-every "$VAL_EVERY" "${extra[@]}" || true
    done
fi

if has eval; then
    for model in $MODELS; do
        run="$RUNS/$model-fold0"
        [[ -f "$run/config.json" ]] || { stamp "no run $run; skipping its evaluation"; continue; }
        timed "evaluate $model brats-test" M evaluate --run "$run" --split brats-test --val-split brats-val || true
        timed "evaluate $model mslub-test" M evaluate --run "$run" --split mslub-test --val-split brats-val || true
    done
fi

if has compare; then
    baseline=()
    [[ -f "$RUNS/ddpm-fold0/config.json" ]] && baseline=(--baseline "$RUNS/ddpm-fold0")
    timed "compare brats-test" M compare "$RUNS" --split brats-test "${baseline[@]}" --out "$OUT_DIR/compare-brats-test" | tee "$OUT_DIR/compare_brats.txt" || true
    timed "compare mslub-test" M compare "$RUNS" --split mslub-test "${baseline[@]}" --out "$OUT_DIR/compare-mslub-test" | tee "$OUT_DIR/compare_mslub.txt" || true
fi

if has qc; then
    "$PY" "$REPO/bench/realdata_qc.py" --data "$DATA" --t2 "$T2" | tee "$OUT_DIR/qc.txt"
fi

stamp "done; stage times in $TIMES"
cat "$TIMES"
