#!/usr/bin/env bash
# `tmd train` on CUDA, the trainer's own code as it is in this checkout: a tiny random Llama with the
# real tokenizer (gpu-carry-tiny/, made here: 16 MB, so one device call carries it), 4 steps at each
# precision. The device has torch + transformers + peft; nothing else is needed.
set -uo pipefail
OUT=${OUT:?run me through the device tool}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
TRAIN=(python3 -c "import sys; from trainer.cli import train; sys.exit(train())")
for precision in auto fp32; do
    "${TRAIN[@]}" --module drd --data gpu-carry-tiny/drd.jsonl --base gpu-carry-tiny/tiny-llama \
        --out "/tmp/cuda-$precision" --max-steps 4 --batch-size 4 --grad-accum 1 --device cuda \
        --precision "$precision" --no-progress --fresh 2>&1 | grep -v "it/s" | tail -6 | tee -a "$OUT/cuda.log"
    python3 -c "import json; t=json.load(open('/tmp/cuda-$precision/tmd.json')); m=json.load(open('/tmp/cuda-$precision/metrics.json')); print('$precision ->', t['hyperparameters'].get('precision'), 'resolved:', m.get('precision', t['training'].get('precision')), 'loss', m.get('final_loss'), 'gpu MB', m.get('peak_gpu_memory_mb'))" 2>&1 | tee -a "$OUT/cuda.log"
done
