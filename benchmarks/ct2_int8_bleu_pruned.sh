#!/usr/bin/env bash
# int8 vs float32 BLEU on a trained, pruned IWSLT'14 de->en model: the question
# a user shipping a pruned int8 model asks ("what does int8 cost on top of pruning?").
#
#   TEACHER=<trained transformer_small de->en checkpoint> WORK=/tmp/int8bleu \
#   OUTPUT_ROOT=<pet paths.output_root holding data/iwslt14_shared> SHARED=<folder with data/iwslt14> \
#       nice bash benchmarks/ct2_int8_bleu_pruned.sh
#
# Chain (one `python -m pet` process per stage, 1 thread, seed 1; a stage whose
# result.json exists is skipped, so a stopped run resumes):
#   two-stage SRP to rate 0.5 (geometric shrinking, PERIOD updates per stage,
#   KD from the teacher) -> finetune FINETUNE updates -> benchmarks/ct2_int8_bleu.py
#   (pet, CTranslate2 float32, int8, int8 weights computed in float32, on the
#   test set: all of it, or the first SENTENCES).
set -euo pipefail
: "${TEACHER:?set TEACHER= to a trained de->en checkpoint}"
: "${WORK:?set WORK= to a folder for the runs}"
: "${OUTPUT_ROOT:?set OUTPUT_ROOT= to a pet output root (its data/iwslt14_shared is used or prepared)}"
# Paths as given, relative to where the script was started; then run from the repository root.
TEACHER=$(realpath -m "$TEACHER"); WORK=$(realpath -m "$WORK"); OUTPUT_ROOT=$(realpath -m "$OUTPUT_ROOT")
SHARED=$(realpath -m "${SHARED:-$(dirname "$0")/../../shared}")
cd "$(dirname "$0")/.."
PERIOD="${PERIOD:-150}"
FINETUNE="${FINETUNE:-400}"
PY="${PYTHON:-python}"
test -f "$TEACHER" || { echo "no checkpoint at TEACHER=$TEACHER"; exit 1; }
test -d "$SHARED/data/iwslt14" || { echo "no IWSLT data under SHARED=$SHARED/data/iwslt14"; exit 1; }
mkdir -p "$WORK"

common=(tracking=none trainer.device=cpu trainer.num_threads=1 trainer.progress_bar=none trainer.seed=1
        "paths.output_root=$OUTPUT_ROOT" "paths.shared_data=$SHARED/data" data=iwslt14_shared trainer.max_tokens=4096)
prune=(stage=prune pruning.compression_rate=0.5 shrink=geometric "pruning.period_updates=$PERIOD"
       pruning.report_latency=false pruning.report_bleu=false)

step() {  # step <run folder> <overrides...>: run a stage unless its result.json exists
    local dir="$1"; shift
    [ -f "$dir/result.json" ] && { echo "[skip] $dir"; return; }
    echo "[run ] $dir"
    "$PY" -m pet "${common[@]}" "$@" "paths.run_dir=$dir"
}
step "$WORK/stage1" "${prune[@]}" pruning=two_stage_1 "init_from=$TEACHER"
step "$WORK/stage2" "${prune[@]}" pruning=two_stage_2 "init_from=$WORK/stage1/checkpoint_pruned.pt"
step "$WORK/finetune" stage=finetune "trainer.max_update=$FINETUNE" "init_from=$WORK/stage2/checkpoint_pruned.pt"
"$PY" benchmarks/ct2_int8_bleu.py --checkpoint "$WORK/finetune/checkpoint_best.pt" \
    --source "$OUTPUT_ROOT/data/iwslt14_shared/raw/test.de" --work "$WORK/bleu" --threads 1 \
    ${SENTENCES:+--sentences "$SENTENCES"} -- tracking=none "paths.output_root=$OUTPUT_ROOT" "paths.shared_data=$SHARED/data"
