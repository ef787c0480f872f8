#!/usr/bin/env bash
# What the device calls brought back (<folder>/*.tar, meta.tgz) -> adapter folders where
# scripts/distill_obqa.sh looks for them (so it skips their training), tensors restored to fp32
# from the fp16 they travelled in, each tmd.json noting the GPU:
#   answer -> $RUN-answer/adapters/drd (the answer-only floor); drd, analyzer, informant, reasoner ->
#   $RUN/adapters/; informant-fold{1,2} -> $RUN/folds/; reasoner-oof -> $RUN/adapters/reasoner and the
#   teacher-knowledge one -> $RUN-teacherkn/adapters/reasoner, when the out-of-fold phase ran.
set -euo pipefail
cd "$(dirname "$0")/../.."
FROM=${1:?usage: unpack.sh <folder holding the returned tars>}
RUN=${RUN:-runs/obqa-e3-lr1e-3}
STAGE=$RUN/gpu
mkdir -p "$STAGE"
tar xzf "$FROM/meta.tgz" -C "$STAGE"
device=$(grep -ho 'NVIDIA [^,]*' "$STAGE/logs/gpu.log" | head -1)
place() {  # returned name -> adapter folder, when it came back
    [[ -f $FROM/$1.tar ]] || return 0
    tar xf "$FROM/$1.tar" -C "$STAGE"
    .venv/bin/python scripts/gpu/restore.py "$STAGE/$1" "$device"
    rm -rf "$2" && mkdir -p "$(dirname "$2")" && mv "$STAGE/$1" "$2"
}
place answer "$RUN-answer/adapters/drd"
for m in drd analyzer informant; do place "$m" "$RUN/adapters/$m"; done
for k in 1 2; do place "informant-fold$k" "$RUN/folds/informant-fold$k"; done
if [[ -f $FROM/reasoner-oof.tar ]]; then
    place reasoner "$RUN-teacherkn/adapters/reasoner"
    place reasoner-oof "$RUN/adapters/reasoner"
    place reasoner-answer-oof "$RUN-answer/adapters/reasoner"
else
    place reasoner "$RUN/adapters/reasoner"
fi
ls -l "$RUN/adapters" "$RUN-answer/adapters"
