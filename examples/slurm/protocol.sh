#!/bin/bash
# The paper's whole protocol on a Slurm cluster, as one chain of jobs (docs/cluster.md):
#
#   preprocess arrays (one per data set) -> merges -> split -> train arrays (one per model, a task per
#   fold, multi-node) -> reconstruct arrays (one per run, a task per shard) -> evaluate arrays (one
#   per run, a task per shard; the first calibrates the threshold) -> their merges -> compare
#
# Every job waits for the ones it needs (sbatch --dependency); this script only submits and prints
# the job ids. Settings come from the environment:
#
#   OUT            preprocessed data folder (required)           DATA     manifest (default OUT/manifest.csv)
#   DATASETS       data sets to preprocess (default "ixi brats21"); each needs RAW_<name> and may have
#                  OPTS_<name> (e.g. OPTS_ixi="--demographics /data/IXI.xls")
#   RUNS           run folders (default ./runs)                   MODELS   (default: the paper's eight)
#   FOLDS          (default "0 1 2 3 4")                          NODES, GPUS_PER_NODE  (default 2, 4)
#   PREP_SHARDS    (default 16)                                   RECON_SHARDS  (default 8)
#   EVAL_SHARDS    (default 4; 1: one unsharded evaluate job per run)
#   SPLITS         splits to reconstruct (default "brats-val brats-test ixi-test")
#   EVAL_SPLITS    splits to evaluate (default "brats-test ixi-test")
#   TRAIN_OPTS, TRAIN_OPTS_<model>, RECON_OPTS, EVAL_OPTS, SPLIT_OPTS  extra options of those commands
#   (exported: every job sees the environment of this script)
#   STAGES         which stages to submit (default "preprocess split train reconstruct evaluate compare")
#   PYTHON         the python of mriad's environment (default: python)
#
#   OUT=/data/prep RAW_ixi=/data/IXI OPTS_ixi="--demographics /data/IXI.xls" RAW_brats21=/data/BraTS2021 \
#       bash examples/slurm/protocol.sh
#
# Without a cluster, the stand-ins in local/ run the same chain on this machine:
#   PATH=$PWD/examples/slurm/local:$PATH OUT=... bash examples/slurm/protocol.sh
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${OUT:?set OUT, the preprocessed data folder}"
OUT=$(realpath -m "$OUT")
export OUT PYTHON=${PYTHON:-python}
export DATA=${DATA:-$OUT/manifest.csv}
export RUNS=$(realpath -m "${RUNS:-runs}")
MODELS=${MODELS:-"pddpm ddpm ae vae svae dae fanogan thresh"}
FOLDS=${FOLDS:-"0 1 2 3 4"}
DATASETS=${DATASETS:-"ixi brats21"}
PREP_SHARDS=${PREP_SHARDS:-16}
RECON_SHARDS=${RECON_SHARDS:-8}
EVAL_SHARDS=${EVAL_SHARDS:-4}
STAGES=" ${STAGES:-preprocess split train reconstruct evaluate compare} "
export SPLITS=${SPLITS:-"brats-val brats-test ixi-test"} EVAL_SPLITS=${EVAL_SPLITS:-"brats-test ixi-test"}
SINGLE_PROCESS=" fanogan thresh "  # models that train in one process (no DDP)
mkdir -p logs "$RUNS"

wanted() { [[ $STAGES == *" $1 "* ]]; }
# sbatch, printing "<what>: <job id>" on stderr and the id on stdout; $1: the dependency ("" for none).
submit() {
    local dependency=$1 what=$2
    shift 2
    local id
    id=$(sbatch --parsable ${dependency:+--dependency=$dependency} "$@")
    id=${id%%;*}  # --parsable prints "id" or "id;cluster"
    echo "$what: $id" >&2
    echo "$id"
}
ids() { local IFS=:; echo "$*"; }  # job ids joined for --dependency

merged=()
if wanted preprocess; then
    for dataset in $DATASETS; do
        raw_var=RAW_$dataset
        : "${!raw_var:?set $raw_var, the raw $dataset folder}"
        export_vars="ALL,DATASET=$dataset,RAW=${!raw_var},SHARDS=$PREP_SHARDS"  # OPTS_<dataset> travels in the environment
        shards=$(submit "" "preprocess $dataset" --array=0-$((PREP_SHARDS - 1)) --export="$export_vars" \
            "$here/preprocess.sbatch")
        merged+=("$(submit "afterany:$shards" "merge $dataset" --export="$export_vars" "$here/preprocess-merge.sbatch")")
    done
fi
split=""
if wanted split; then
    split=$(submit "${merged[*]:+afterany:$(ids "${merged[@]}")}" "split" --export=ALL "$here/split.sbatch")
fi
evaluated=()
for model in $MODELS; do
    train=""
    if wanted train; then
        nodes=${NODES:-2} gpus=${GPUS_PER_NODE:-4}
        [[ $SINGLE_PROCESS == *" $model "* ]] && nodes=1 gpus=1
        train=$(submit "${split:+afterok:$split}" "train $model" --array="$(echo "$FOLDS" | tr ' ' ,)" \
            --nodes="$nodes" --export="ALL,MODEL=$model,GPUS_PER_NODE=$gpus" \
            "$here/train.sbatch")
    fi
    for fold in $FOLDS; do
        run=$RUNS/$model-fold$fold recon=""
        if wanted reconstruct; then
            recon=$(submit "${train:+afterok:${train}_$fold}" "reconstruct $model fold $fold" \
                --array=0-$((RECON_SHARDS - 1)) --export="ALL,RUN=$run,SHARDS=$RECON_SHARDS" "$here/reconstruct.sbatch")
        fi
        if wanted evaluate && ((EVAL_SHARDS > 1)); then
            scored=$(submit "${recon:+afterany:$recon}" "evaluate $model fold $fold" --array=0-$((EVAL_SHARDS - 1)) \
                --export="ALL,RUN=$run,SHARDS=$EVAL_SHARDS" "$here/evaluate.sbatch")
            evaluated+=("$(submit "afterany:$scored" "merge evaluation $model fold $fold" --export="ALL,RUN=$run" \
                "$here/evaluate-merge.sbatch")")
        elif wanted evaluate; then
            evaluated+=("$(submit "${recon:+afterany:$recon}" "evaluate $model fold $fold" --export="ALL,RUN=$run" \
                "$here/evaluate.sbatch")")
        fi
    done
done
if wanted compare; then
    submit "${evaluated[*]:+afterany:$(ids "${evaluated[@]}")}" "compare" --export=ALL "$here/compare.sbatch" >/dev/null
fi
