#!/usr/bin/env bash
# The README's measured figures, from nothing: gold teacher -> LoRA students -> GGUF bundle ->
# TMD vs DRD vs zero-shot on StrategyQA test, every quant, one module quantized at a time -> report.
#
#   make reproduce                       # or: scripts/reproduce_strategyqa.sh
#   TRAIN=50 TEST=200 THREADS=1 scripts/reproduce_strategyqa.sh
#
# Every step resumes where a killed run stopped (teacher journal, training checkpoints, finished
# export files, results JSONL keyed by configuration), so rerunning after a kill or after adding
# questions redoes nothing already done. Each step's wall time goes to logs/reproduce-times.txt.
# On 2 CPU cores: training ~30 min, export ~10 min, evaluation ~4 h (TEST=200,
# SENS=100, OTHER=100): a fine-tuned TMD question is 10-20 s on one thread.
set -euo pipefail
cd "$(dirname "$0")/.."

TRAIN=${TRAIN:-50}          # StrategyQA train questions the gold teacher answers
TEST=${TEST:-200}           # first N StrategyQA test questions evaluated
SENS=${SENS:-100}           # first N test questions for one-module-at-a-time quantization and Table 3
OTHER=${OTHER:-100}         # first N OBQA and MedQA test questions, zero-shot
THREADS=${THREADS:-1}       # llama.cpp threads per eval (answers do not depend on it)
NAME=sqa${TRAIN}
TMD=${TMD:-.venv/bin/tmd}
EVAL=(--dataset strategyqa --split test --limit "$TEST" --threads "$THREADS" --batch-size 50)
mkdir -p logs

STEP_LOG=logs/reproduce-times.txt
source scripts/steps.sh

step teach "$TMD" teach --dataset strategyqa --split train --limit "$TRAIN" --teacher gold --out "runs/$NAME/teacher"
step train "$TMD" train --all --data "runs/$NAME/teacher" --base smollm2-135m-instruct --out "runs/$NAME/adapters"
step export "$TMD" export --adapters "runs/$NAME/adapters" --quant f16,q8_0,q4_k_m --out "models/$NAME"

for quant in f16 q8_0 q4_k_m; do
    step "eval-$quant" "$TMD" eval "${EVAL[@]}" --system tmd --system drd --bundle "models/$NAME" --quant "$quant" \
        --out "results/$NAME-strategyqa-$quant.jsonl"
done
for role in reasoner analyzer informant; do  # one module at a time in q4_k_m, the others f16
    step "eval-f16-$role-q4_k_m" "$TMD" eval --dataset strategyqa --split test --limit "$SENS" \
        --threads "$THREADS" --batch-size 50 --system tmd --bundle "models/$NAME" \
        --quant "f16,$role=q4_k_m" --out "results/$NAME-strategyqa-sensitivity.jsonl"
done
# Table 3 analog: only some modules fine-tuned, the others played by the base model (mode base).
for ablation in "reasoner-only reasoner,drd analyzer,informant" "no-reasoner analyzer,informant reasoner,drd"; do
    read -r label tuned zero_shot <<< "$ablation"
    step "export-$label" "$TMD" export --adapters "runs/$NAME/adapters" --modules "$tuned" --zero-shot "$zero_shot" \
        --quant q8_0 --out "models/$NAME-$label"
    step "eval-$label" "$TMD" eval --dataset strategyqa --split test --limit "$SENS" --threads "$THREADS" \
        --batch-size 50 --system tmd --bundle "models/$NAME-$label" --quant q8_0 \
        --out "results/$NAME-$label-strategyqa.jsonl"
done
for system in tmd drd; do  # zero-shot: the embedded model itself in every role
    step "eval-zero-shot-$system" "$TMD" eval "${EVAL[@]}" --system "$system" --out "results/zs-strategyqa-$system.jsonl"
    for dataset in obqa medqa; do  # the other benchmarks, zero-shot only (no gold decompositions to train on)
        step "eval-zero-shot-$dataset-$system" "$TMD" eval --dataset "$dataset" --split test --limit "$OTHER" \
            --threads "$THREADS" --batch-size 50 --system "$system" --out "results/zs-$dataset-$system.jsonl"
    done
done

# The report covers every results file present (the OBQA/MedQA zero-shot ones too, when made), and
# rewrites the README's marked figures section from it.
step report "$TMD" report results/*.jsonl --out reports/report.md --results-doc docs/RESULTS.md --publish
