#!/usr/bin/env bash
# OpenBookQA distillation, end to end, resuming whatever is done (the README's OBQA figures):
#
#   scripts/distill_obqa.sh                 # everything
#   PHASE=train scripts/distill_obqa.sh     # teach + train (days on 2 cores; minutes on a GPU)
#   PHASE=eval  scripts/distill_obqa.sh     # export + evaluate what is trained
#
# Teachers (docs/TEACHER.md): `gold` (Analyzer/Informant from the recorded rationales' topic and
# agreed facts, Reasoner/DRD = a recorded rationale) and `gold:answer` (Reasoner/DRD targets are the
# bare "Final Answer: X": DRD is then the answer-only floor, the Reasoner answers from knowledge).
# Students: SmolLM2-135M-Instruct, LoRA r16, lr 1e-3, 3 epochs, batch 16 x 1, alpha chosen on the
# validation questions (scripts/gpu/validate_answer.py). Two Informants trained on the two halves of
# train write out-of-fold knowledge for the other half; the Reasoners train on that (the kind of
# knowledge they get at test). The same steps run on a lent GPU in minutes: scripts/gpu/train_obqa.sh
# (then scripts/gpu/unpack.sh puts the adapters where this script looks, and training is skipped).
set -euo pipefail
cd "$(dirname "$0")/.."

RUN=${RUN:-runs/obqa-e3-lr1e-3}
BUNDLE=${BUNDLE:-models/obqa-e3-lr1e-3}
EPOCHS=${EPOCHS:-3}
LR=${LR:-1e-3}
ALPHA=${ALPHA:-32}               # chosen on validation (runs/.../gpu/logs/validation.json)
BATCH=${BATCH:-16}
TEST=${TEST:-500}
PHASE=${PHASE:-all}
TMD=${TMD:-.venv/bin/tmd}
mkdir -p logs results
STEP_LOG=logs/distill-times.txt
source scripts/steps.sh

trained() { [[ -f $1/tmd.json ]]; }

train_one() {  # adapter folder, module, data [extra]
    local out=$1 module=$2 data=$3
    shift 3
    trained "$out" && return 0
    step "train-$(basename "$(dirname "$(dirname "$out")")")-$module" "$TMD" train --module "$module" \
        --data "$data" --out "$out" --epochs "$EPOCHS" --lr "$LR" --lora-alpha "$ALPHA" --batch-size "$BATCH" \
        --grad-accum 1 --no-progress "$@"
}

if [[ $PHASE == train || $PHASE == all ]]; then
    step teach-gold "$TMD" teach --dataset obqa --split train --teacher gold --out "$RUN/teacher"
    step teach-answer "$TMD" teach --dataset obqa --split train --teacher gold:answer --out "$RUN-answer/teacher"
    train_one "$RUN-answer/adapters/drd" drd "$RUN-answer/teacher"
    train_one "$RUN/adapters/drd" drd "$RUN/teacher"
    train_one "$RUN/adapters/analyzer" analyzer "$RUN/teacher"
    train_one "$RUN/adapters/informant" informant "$RUN/teacher"
    if ! trained "$RUN/adapters/reasoner" || ! trained "$RUN-answer/adapters/reasoner"; then
        scripts/gpu/carry.sh >/dev/null  # the same folds the GPU run uses (gpu-carry/teacher.tgz)
        mkdir -p "$RUN/oof-data" && tar xzf gpu-carry/teacher.tgz -C "$RUN/oof-data"
        for k in 1 2; do
            train_one "$RUN/folds/informant-fold$k" informant "$RUN/oof-data/folds/fold$k/informant.jsonl"
        done
        mkdir -p "$RUN/oof-runs"
        for k in 1 2; do ln -sfn "$(realpath "$RUN/folds/informant-fold$k")" "$RUN/oof-runs/informant-fold$k"; done
        [[ -f $RUN/oof-data/oof/answer/reasoner.jsonl ]] ||
            step oof-knowledge .venv/bin/python scripts/gpu/oof_knowledge.py "$RUN/oof-runs" "$RUN/oof-data" "$RUN/oof-data/oof"
        train_one "$RUN/adapters/reasoner" reasoner "$RUN/oof-data/oof/gold/reasoner.jsonl" --max-length 768
        train_one "$RUN-answer/adapters/reasoner" reasoner "$RUN/oof-data/oof/answer/reasoner.jsonl" --max-length 768
    fi
    for m in analyzer informant; do
        [[ -e $RUN-answer/adapters/$m ]] || ln -sfn "$(realpath "$RUN/adapters/$m")" "$RUN-answer/adapters/$m"
    done
fi
[[ $PHASE == train ]] && exit 0

# --- export: q8_0 merged GGUFs for evaluation; the shipped bundle is the LoRA GGUFs (ship_obqa.sh) --
step export "$TMD" export --adapters "$RUN/adapters" --quant q8_0 --no-keep-merged --out "$BUNDLE"
if trained "$RUN-answer/adapters/reasoner"; then
    step export-answer "$TMD" export --adapters "$RUN-answer/adapters" --quant q8_0 --no-keep-merged --out "$BUNDLE-answer"
else  # the answer-only DRD alone (the out-of-fold Reasoners were not trained)
    step export-answer "$TMD" export --adapters "$RUN-answer/adapters" --modules drd \
        --zero-shot analyzer,informant,reasoner --quant q8_0 --no-keep-merged --out "$BUNDLE-answer"
fi

# --- test: every system once on the 500 test questions, two one-thread evaluations at a time, each
# writing its own results file (two processes never append to one file) ---------------------------
EVAL=(--dataset obqa --split test --limit "$TEST" --threads 1 --batch-size 50)
finetuned() {
    step test-finetuned "$TMD" eval "${EVAL[@]}" --system tmd --bundle "$BUNDLE" --quant q8_0 \
        --out results/obqa-finetuned.jsonl
    if trained "$RUN-answer/adapters/reasoner"; then
        step test-tmd-answer "$TMD" eval "${EVAL[@]}" --system tmd --bundle "$BUNDLE-answer" --quant q8_0 \
            --out results/obqa-finetuned.jsonl
    fi
}
floors() {
    step test-finetuned-drd "$TMD" eval "${EVAL[@]}" --system drd --bundle "$BUNDLE" --quant q8_0 \
        --out results/obqa-finetuned-drd.jsonl
    step test-answer-only "$TMD" eval "${EVAL[@]}" --system drd --bundle "$BUNDLE-answer" --quant q8_0 \
        --out results/obqa-answer-only.jsonl
    step test-mc "$TMD" eval "${EVAL[@]}" --system mc --out results/obqa-zero-shot.jsonl
    step test-zero-shot "$TMD" eval "${EVAL[@]}" --system drd --system tmd --out results/obqa-zero-shot.jsonl
}
finetuned > logs/obqa-eval-finetuned.log 2>&1 &
floors > logs/obqa-eval-floors.log 2>&1 &
wait
