#!/usr/bin/env bash
# Reproduce the model comparison of Behrendt et al. (MIDL 2023), Table 1, with mriad.
#
# Every model of the table is trained with the same engine on the same data, folds and seed,
# evaluated on the same splits under the `reference` protocol (what the paper's code computes:
# whole-volume AUROC/AUPRC, docs/evaluation.md), and summarised in one comparison table (pDDPM
# fixed / L_p is the baseline of the paired tests):
#   pDDPM x {fixed, random patch sampling} x {L_p (loss on the patch), L_rec (whole image)},
#   DDPM, DAE, AE, VAE, SVAE, f-AnoGAN, Thresh.
# The later methods of the pDDPM family (issue 18) are extra run names, not in the default list:
#   pddpm-mhd (Mahalanobis over 10 noise draws, MHD), pddpm-ensemble (patch sizes 32/48/60 x
#   t 250/500/750, maps averaged), cddpm (conditioned DDPM, noise ensemble 250/500/750), anoddpm
#   (DDPM with iterative partial diffusion from t 250):
#   MODELS="pddpm-fixed-lp pddpm-mhd pddpm-ensemble cddpm anoddpm ddpm ae" bash bench/table1.sh
#
# Small by default (a synthetic preprocessed data set, tiny widths, 2 epochs): a CPU smoke run of
# the whole table, about 10 minutes on 2 cores (most of it pDDPM's box-by-box reconstruction). Paper scale on a GPU (see docs/baselines.md):
#   DATA=prep/manifest.csv SCALE=paper EPOCHS=1600 FOLDS="0 1 2 3 4" DEVICE=cuda \
#   SPLITS="brats-test mslub-test ixi-test" bash bench/table1.sh
#
# Environment (defaults in brackets):
#   DATA      manifest CSV of preprocessed data [empty: synthesise one into $OUT/data with `mriad synth`]
#   HEALTHY   synthetic healthy subjects [10]   LESIONS  synthetic lesion subjects [4]
#   OUT       output root [runs/table1]         DEVICE   auto|cpu|cuda[:N] [auto]
#   FOLDS     IXI cross-validation folds [0]    SEED     one seed for data, training, evaluation [0]
#   EPOCHS    training epochs for every model [2]
#   SCALE     small|paper: network widths [small]; paper = each model's published defaults
#   SPLITS    evaluated splits [brats-test]     MODELS   subset of the run names below [all]
#   MRIAD     how to call mriad ["python -m mriad"]
#   EXTRA     extra `mriad train` arguments for every run (e.g. "--set batch_size=16") [empty]
#   BASELINE  run name the others are tested against [the first of MODELS: pddpm-fixed-lp]
set -euo pipefail

OUT=${OUT:-runs/table1}
DEVICE=${DEVICE:-auto}
FOLDS=${FOLDS:-0}
SEED=${SEED:-0}
EPOCHS=${EPOCHS:-2}
SCALE=${SCALE:-small}
SPLITS=${SPLITS:-brats-test}
HEALTHY=${HEALTHY:-10}
LESIONS=${LESIONS:-4}
MRIAD=${MRIAD:-python -m mriad}
EXTRA=${EXTRA:-}

# run name -> model and the options that make the variant (identical for both scales).
declare -A MODEL_OF=(
  [pddpm-fixed-lp]=pddpm [pddpm-fixed-lrec]=pddpm [pddpm-random-lp]=pddpm [pddpm-random-lrec]=pddpm
  [ddpm]=ddpm [dae]=dae [ae]=ae [vae]=vae [svae]=svae [fanogan]=fanogan [thresh]=thresh
  [pddpm-mhd]=pddpm [pddpm-ensemble]=pddpm [cddpm]=cddpm [anoddpm]=ddpm
)
declare -A VARIANT=(
  [pddpm-fixed-lrec]="--set loss=full"
  [pddpm-random-lp]="--set patch_sampling=random"
  [pddpm-random-lrec]="--set patch_sampling=random --set loss=full"
  [pddpm-mhd]="--set scoring=mahalanobis --set n_reconstructions=10"
  [pddpm-ensemble]="--set patch_ensemble=32,48,60 --set t_ensemble=250,500,750"
  [anoddpm]="--set sampling=iterative --set t_start=250"
)
ORDER=(pddpm-fixed-lp pddpm-fixed-lrec pddpm-random-lp pddpm-random-lrec ddpm dae ae vae svae fanogan thresh)
MODELS=${MODELS:-${ORDER[*]}}

# Small widths for CPU smoke runs; SCALE=paper uses every model's published defaults.
small_options() {
  case "$1" in
    pddpm | ddpm) echo "--set base_channels=8 --set groups=4 --set head_channels=16 --set num_res_blocks=1 --set batch_size=8" ;;
    cddpm) echo "--set base_channels=8 --set groups=4 --set head_channels=16 --set num_res_blocks=1 --set batch_size=8 --set encoder_widths=8,16,32,64 --set encoder_blocks=1,1,1,1 --set cond_dim=32" ;;
    dae) echo "--set base_channels=8 --set batch_size=16" ;;
    ae | vae) echo "--set base_channels=8 --set latent_dim=32 --set batch_size=16" ;;
    svae) echo "--set base_channels=8 --set latent_dim=32 --set transformer_ff=64 --set batch_size=2" ;;
    fanogan) echo "--set base_channels=8 --set latent_dim=32 --set batch_size=16" ;;
    *) echo "" ;;
  esac
}

mkdir -p "$OUT"
if [[ -z "${DATA:-}" ]]; then
  DATA="$OUT/data/manifest.csv"
  if [[ ! -f "$DATA" ]]; then
    echo "== synthesising a preprocessed data set into $OUT/data"
    $MRIAD --seed "$SEED" synth "$OUT/data" --preprocessed --healthy "$HEALTHY" --lesions "$LESIONS"
  fi
fi

start_all=$SECONDS
for name in $MODELS; do
  model=${MODEL_OF[$name]:?"unknown run name $name (known: ${ORDER[*]})"}
  size=""
  [[ "$SCALE" == small ]] && size=$(small_options "$model")
  # AnoDDPM costs sampling_steps network calls per slice (250 at paper scale): 10 in the smoke run.
  [[ "$SCALE" == small && "$name" == anoddpm ]] && size="$size --set sampling_steps=10"
  for fold in $FOLDS; do
    run="$OUT/$name-fold$fold"
    echo "== $name fold $fold -> $run"
    start=$SECONDS
    # shellcheck disable=SC2086  # option strings are meant to split into words
    $MRIAD --device "$DEVICE" --seed "$SEED" train --model "$model" --data "$DATA" --fold "$fold" \
      --out "$run" --epochs "$EPOCHS" ${VARIANT[$name]:-} $size $EXTRA
    for split in $SPLITS; do
      $MRIAD --device "$DEVICE" --seed "$SEED" reconstruct --run "$run" --split "$split"
      $MRIAD --device "$DEVICE" --seed "$SEED" evaluate --run "$run" --split "$split" --protocol reference \
        --no-figures
    done
    echo "   $name fold $fold: $((SECONDS - start)) s"
  done
done

first_fold=${FOLDS%% *}
read -r -a chosen <<<"$MODELS"
baseline=${BASELINE:-${chosen[0]}}  # pddpm-fixed-lp when all models run
for split in $SPLITS; do
  echo "== comparison on $split"
  $MRIAD --seed "$SEED" compare "$OUT"/*-fold* --split "$split" \
    --baseline "$OUT/$baseline-fold$first_fold" --out "$OUT/compare-$split"
done
echo "== table 1 done in $((SECONDS - start_all)) s: $OUT/compare-*"
