#!/usr/bin/env bash
# The adapters the device call brought back (<files_at>/*.tar, meta.tgz) -> runs/<RUN>/adapters/<module>,
# tensors restored to fp32 from the fp16 they travelled in, and each adapter's tmd.json noting that
# it was trained on a GPU. answer -> runs/<RUN>-answer/adapters/drd (the answer-only floor).
set -euo pipefail
cd "$(dirname "$0")/../.."
FROM=${1:?usage: unpack.sh <folder holding the returned tars>}
RUN=${RUN:-runs/obqa-e3-lr1e-3}
mkdir -p "$RUN/gpu" "$RUN/adapters"
tar xzf "$FROM/meta.tgz" -C "$RUN/gpu"
for tarball in "$FROM"/*.tar; do
    name=$(basename "$tarball" .tar)
    tar xf "$tarball" -C "$RUN/gpu"
    .venv/bin/python scripts/gpu/restore.py "$RUN/gpu/$name" "$(cat "$RUN/gpu/logs/gpu.log" | grep -o 'NVIDIA [^,]*' | head -1)"
done
place() {  # returned name -> adapter folder
    rm -rf "$2"; mkdir -p "$(dirname "$2")"; cp -r "$RUN/gpu/$1" "$2"
}
place answer "$RUN-answer/adapters/drd"
for m in drd analyzer informant; do place "$m" "$RUN/adapters/$m"; done
place reasoner "$RUN-teacherkn/adapters/reasoner"          # Reasoner trained on the teacher's knowledge
place reasoner-oof "$RUN/adapters/reasoner"                # ... on the Informant's out-of-fold knowledge
place reasoner-answer-oof "$RUN-answer/adapters/reasoner"  # answers straight from subquestions + knowledge
for m in analyzer informant; do
    ln -sfn "$(realpath "$RUN/adapters/$m")" "$RUN-answer/adapters/$m"
done
mkdir -p "$RUN-teacherkn/adapters"
for m in analyzer informant drd; do ln -sfn "$(realpath "$RUN/adapters/$m")" "$RUN-teacherkn/adapters/$m"; done
ls -l "$RUN/adapters" "$RUN-answer/adapters" "$RUN-teacherkn/adapters"
