#!/usr/bin/env bash
# The pDDPM family side by side on the synthetic demo data (issue 18's table), at equal training
# budgets: every trained network gets STEPS optimisation steps of BATCH slices.
#
#   STAGE=train  bash bench/family.sh   # pddpm, ddpm, cddpm, ae: the four trained networks
#   STAGE=score  bash bench/family.sh   # the variants, reconstruct + evaluate (timed), compare
#   STAGE=table  bash bench/family.sh   # the markdown table of bench/family_table.py
#   bash bench/family.sh                # all of it
#
# The test-time methods share a trained network instead of training it again (`mriad variant`
# copies the run's checkpoints and changes only test-time options, so the budget is the same by
# construction): pDDPM+Mahalanobis (MHD: N noise draws) and the pDDPM ensemble (patch sizes x t)
# use pDDPM's network, AnoDDPM (iterative partial diffusion) uses DDPM's. cDDPM is trained without
# the optional encoder pretraining (that would be extra budget).
#
# Environment (defaults in brackets): OUT [runs/family], STEPS [150], BATCH [32], CHANNELS [16],
# HEALTHY [16], LESIONS [20], SEED [0], MHD_DRAWS [10], ANODDPM_STEPS [25], PYTHON [python],
# MRIAD ["$PYTHON -m mriad"]. Reconstruction runs through bench/cost.py (the reconstruct stage in
# process, counting network inputs per slice and timing it): OUT/<run>/cost-<split>.json.
set -euo pipefail

OUT=${OUT:-runs/family}
STEPS=${STEPS:-150}
BATCH=${BATCH:-32}
CHANNELS=${CHANNELS:-16}
HEALTHY=${HEALTHY:-16}
LESIONS=${LESIONS:-20}
SEED=${SEED:-0}
MHD_DRAWS=${MHD_DRAWS:-10}
ANODDPM_STEPS=${ANODDPM_STEPS:-25}
PYTHON=${PYTHON:-python}
MRIAD=${MRIAD:-$PYTHON -m mriad}
STAGE=${STAGE:-all}
DATA="$OUT/data/manifest.csv"

common=(--seed "$SEED" --device cpu)
# One step per epoch (batch >= training volumes): --epochs is the number of steps; --max-steps says so.
budget=(--epochs "$STEPS" --max-steps "$STEPS" --batch-size "$BATCH" --lr 1e-3 --val-every "$((STEPS / 5))")
small_unet=(--channels "$CHANNELS" --set num_res_blocks=1)

declare -A TRAIN=(
  [pddpm]="--model pddpm ${small_unet[*]}"
  [ddpm]="--model ddpm ${small_unet[*]}"
  [cddpm]="--model cddpm ${small_unet[*]} --set encoder_widths=16,32,64,128 --set encoder_blocks=1,1,1,1 --set cond_dim=64"
  [ae]="--model ae --set base_channels=$CHANNELS"
)
declare -A VARIANT_OF=([pddpm-mhd]=pddpm [pddpm-ensemble]=pddpm [anoddpm]=ddpm)
declare -A VARIANT=(
  [pddpm-mhd]="--set scoring=mahalanobis --set n_reconstructions=$MHD_DRAWS"
  [pddpm-ensemble]="--set patch_ensemble=32,48,60 --set t_ensemble=250,500,750"
  [anoddpm]="--set sampling=iterative --set t_start=250 --set sampling_steps=$ANODDPM_STEPS"
)
RUNS=(pddpm pddpm-mhd pddpm-ensemble cddpm anoddpm ddpm ae)

if [[ "$STAGE" == all || "$STAGE" == train ]]; then
  mkdir -p "$OUT"
  [[ -f "$DATA" ]] || $MRIAD "${common[@]}" synth "$OUT/data" --preprocessed --healthy "$HEALTHY" \
    --lesions "$LESIONS" --layout brats
  for name in pddpm ddpm cddpm ae; do
    [[ -f "$OUT/$name/checkpoints/best.pt" ]] && continue
    echo "== train $name"
    start=$SECONDS
    # shellcheck disable=SC2086  # option strings are meant to split into words
    $MRIAD "${common[@]}" train ${TRAIN[$name]} --data "$DATA" --fold 0 --out "$OUT/$name" "${budget[@]}"
    echo "   train $name: $((SECONDS - start)) s"
  done
fi

if [[ "$STAGE" == all || "$STAGE" == score ]]; then
  for name in "${!VARIANT_OF[@]}"; do
    [[ -f "$OUT/$name/config.json" ]] && continue
    # shellcheck disable=SC2086
    $MRIAD variant "$OUT/${VARIANT_OF[$name]}" --out "$OUT/$name" ${VARIANT[$name]}
  done
  for name in "${RUNS[@]}"; do
    for split in brats-val brats-test; do
      [[ -f "$OUT/$name/cost-$split.json" ]] || $PYTHON bench/cost.py --run "$OUT/$name" --split "$split" \
        --json "$OUT/$name/cost-$split.json"
    done
    $MRIAD "${common[@]}" evaluate --run "$OUT/$name" --split brats-test --protocol reference --no-figures
  done
  runs=()
  for name in "${RUNS[@]}"; do runs+=("$OUT/$name"); done
  $MRIAD "${common[@]}" compare "${runs[@]}" --split brats-test --baseline "$OUT/pddpm" --out "$OUT/compare"
fi

if [[ "$STAGE" == all || "$STAGE" == score || "$STAGE" == table ]]; then
  $PYTHON bench/family_table.py "$OUT" --split brats-test
fi
