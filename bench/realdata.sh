#!/usr/bin/env bash
# Real scans end to end: preprocess IXI T1 (raw heads), MSLUB patient07 (MNI, stripped) and BraTS 2018
# (SRI24, stripped), split, train small pDDPM / DDPM / AE, evaluate on BraTS and MSLUB, compare, plot
# learning curves and run the preprocessing QC (bench/realdata_qc.py). Two protocols (PROTOCOLS):
#   t1: train on IXI T1 heads (healthy), test on BraTS T1 (and MSLUB T1);
#   t2: healthy slices from patients: BraTS T2 patients split train / val / test (disjoint); the models
#       train on the lesion-free slices of the train patients (train --healthy-slices-from brats), the
#       threshold comes from the val patient(s), the numbers from the test patients.
# Every model gets the same optimisation budget: STEPS steps of BATCH slices at lr LR (or less with
# PATIENCE, early stopping on the validation loss); compare prints each run's budget.
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
#   BATCH, LR  slices per step and Adam learning rate, the same for every model (32, 1e-3)
#   PATIENCE   early stopping after this many validations without a lower val loss (default: off)
#   CKPT_EVERY keep checkpoints/step-K.pt every N steps and evaluate each (learning curves; default
#              STEPS/4; 0 = off)
#   PROTOCOLS  "t1 t2" (default both)
#   T2_TRAIN, T2_VAL  fractions of the BraTS patients in brats-train / brats-val for t2 (0.375, 0.125:
#              3 / 1 / 4 of the 8 shared cases); SLICE_MARGIN (2), MIN_BRAIN (0.3): which slices count
#              as healthy (train --slice-margin / --min-brain-fraction)
#   MODELS     models to train (default "pddpm ddpm ae")
#   DEVICE     mriad --device (default cpu)
#   EVAL_PROTOCOL  evaluate --protocol (default reference, as the paper's code; brain: inside the brain
#              mask); the compare tables name it
#   STAGES     subset of "preprocess split train eval compare curves qc" (default all)
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
BATCH="${BATCH:-32}"
LR="${LR:-1e-3}"
PATIENCE="${PATIENCE:-}"
CKPT_EVERY="${CKPT_EVERY:-$((STEPS / 4))}"
PROTOCOLS="${PROTOCOLS:-t1 t2}"
T2_TRAIN="${T2_TRAIN:-0.375}"
T2_VAL="${T2_VAL:-0.125}"
SLICE_MARGIN="${SLICE_MARGIN:-2}"
MIN_BRAIN="${MIN_BRAIN:-0.3}"
MODELS="${MODELS:-pddpm ddpm ae}"
DEVICE="${DEVICE:-cpu}"
EVAL_PROTOCOL="${EVAL_PROTOCOL:-reference}"
STAGES="${STAGES:-preprocess split train eval compare curves qc}"

if [[ -x "$REPO/.venv/bin/mriad" ]]; then MRIAD="$REPO/.venv/bin/mriad"; PY="$REPO/.venv/bin/python"
else MRIAD="mriad"; PY="python"; fi
M() { "$MRIAD" --device "$DEVICE" --hide-progress "$@"; }
has() { [[ " $STAGES " == *" $1 "* ]]; }
stamp() { echo "[$(date -u +%H:%M:%S)] $*"; }

DATA="$OUT_DIR/data"          # the T1 workspace: ixi/, mslub/, brats/, manifest.csv
T2="$OUT_DIR/brats_t2"        # BraTS T2 only: the t2 protocol and the "tumour brighter on T2" QC
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
    timed "preprocess brats t2" M preprocess "$REAL/brats18" "$T2" --dataset brats21 --modality t2 \
        --jobs "$JOBS" || true
fi

if has split; then
    # IXI: no healthy test set (12 subjects), 5 folds over train/val; BraTS 3 val / 5 test.
    # MSLUB has one case: --mslub-val 0 puts it in test (its threshold then comes from brats-val).
    if [[ " $PROTOCOLS " == *" t1 "* ]]; then
        timed "split" M split "$DATA/manifest.csv" --test-fraction 0 --folds 5 --brats-val 0.375 --mslub-val 0
        "$PY" - "$DATA/manifest.csv" <<'EOF'
import sys, pandas as pd
m = pd.read_csv(sys.argv[1])
cols = [c for c in m.columns if c in ("dataset", "split", "fold")]
print(m.groupby(cols, dropna=False).size().to_string())
EOF
    fi
    if [[ " $PROTOCOLS " == *" t2 "* ]]; then
        # t2: BraTS patients only; brats-train's lesion-free slices are the training data.
        timed "split t2" M split "$T2/manifest.csv" --test-fraction 0 --brats-val "$T2_VAL" --brats-train "$T2_TRAIN"
    fi
fi

# protocol -> manifest and the train options that pick its training slices
manifest_of() { if [[ "$1" == t2 ]]; then echo "$T2/manifest.csv"; else echo "$DATA/manifest.csv"; fi; }
source_of() {
    if [[ "$1" == t2 ]]; then echo "--healthy-slices-from brats --slice-margin $SLICE_MARGIN --min-brain-fraction $MIN_BRAIN"
    else echo "--dataset ixi --fold 0"; fi
}

# Small networks, about 10 minutes each on 2 CPU cores: base width 16, one block per level, linear
# schedule; one budget for all: STEPS x BATCH at lr LR (the paper's 1e-5 / the reference's 1e-4 need far
# more steps than a CPU gives).
BUDGET=(--max-steps "$STEPS" --batch-size "$BATCH" --lr "$LR" --val-every "$VAL_EVERY")
[[ -n "$PATIENCE" ]] && BUDGET+=(--patience "$PATIENCE")
[[ "$CKPT_EVERY" -gt 0 ]] && BUDGET+=(--checkpoint-every "$CKPT_EVERY")
if has train; then
    for protocol in $PROTOCOLS; do
        for model in $MODELS; do
            case "$model" in
                pddpm|ddpm) extra=(--channels 16 --set num_res_blocks=1) ;;
                ae)    extra=(--channels 16) ;;
                *)     extra=() ;;
            esac
            # shellcheck disable=SC2046  # source_of's words are separate options
            timed "train $protocol $model" M train --model "$model" --data "$(manifest_of "$protocol")" \
                $(source_of "$protocol") --out "$RUNS/$protocol/$model" --force "${BUDGET[@]}" "${extra[@]}" || true
        done
    done
fi

if has eval; then
    for protocol in $PROTOCOLS; do
        splits=(brats-test); [[ "$protocol" == t1 ]] && splits+=(mslub-test)
        for model in $MODELS; do
            run="$RUNS/$protocol/$model"
            [[ -f "$run/config.json" ]] || { stamp "no run $run; skipping its evaluation"; continue; }
            for split in "${splits[@]}"; do
                timed "evaluate $protocol $model $split" M evaluate --run "$run" --split "$split" --val-split brats-val \
                    --protocol "$EVAL_PROTOCOL" || true
            done
            # Learning curves: every kept step-K checkpoint, evaluated in the run's checkpoint-views/.
            for ckpt in "$run"/checkpoints/step-*.pt; do
                [[ -f "$ckpt" ]] || continue
                which="$(basename "$ckpt" .pt)"
                timed "evaluate $protocol $model brats-test $which" M evaluate --run "$run" --split brats-test \
                    --val-split brats-val --checkpoint "$which" --protocol "$EVAL_PROTOCOL" --no-figures || true
            done
        done
    done
fi

if has compare; then
    for protocol in $PROTOCOLS; do
        splits=(brats-test); [[ "$protocol" == t1 ]] && splits+=(mslub-test)
        baseline=()
        [[ -f "$RUNS/$protocol/ddpm/config.json" ]] && baseline=(--baseline "$RUNS/$protocol/ddpm")
        for split in "${splits[@]}"; do
            timed "compare $protocol $split" M compare "$RUNS/$protocol" --split "$split" "${baseline[@]}" \
                --out "$OUT_DIR/compare-$protocol-$split" | tee "$OUT_DIR/compare_${protocol}_$split.txt" || true
        done
    done
fi

if has curves; then
    for protocol in $PROTOCOLS; do
        "$PY" "$REPO/bench/learning_curves.py" "$RUNS/$protocol" --split brats-test \
            --title "$protocol protocol, brats-test" --out "$OUT_DIR/curves-$protocol.png" \
            | tee "$OUT_DIR/curves_$protocol.md" || true
    done
fi

if has qc; then
    "$PY" "$REPO/bench/realdata_qc.py" --data "$DATA" --t2 "$T2" | tee "$OUT_DIR/qc.txt"
fi

stamp "done; stage times in $TIMES"
cat "$TIMES"
