"""Out-of-fold knowledge for the Reasoner's training set: the Informant trained on one half of the
train questions answers the other half's subquestions (greedy, at most 128 tokens, as tmd's runtime
runs the Informant), and that text replaces the teacher's knowledge in the Reasoner prompts, so the
Reasoner learns from knowledge of the quality it will get at test.
usage: oof_knowledge.py <runs/a<alpha>> <data root with gold/ answer/ folds/> <out folder>"""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import left_padded, load, prompt_ids  # noqa: E402

MAX_NEW, BATCH = 128, 128


def generate(adapter, records):
    model, tok = load(adapter)
    rows = prompt_ids(tok, [r["messages"] for r in records])
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # similar lengths share a batch
    texts = {}
    with torch.no_grad():
        for start in range(0, len(order), BATCH):
            chunk = order[start:start + BATCH]
            ids, mask = left_padded([rows[i] for i in chunk], tok.pad_token_id or 0)
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=MAX_NEW, do_sample=False,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id or 0)
            for i, seq in zip(chunk, out[:, ids.shape[1]:]):
                texts[records[i]["id"]] = tok.decode(seq, skip_special_tokens=True).strip()
    return texts


def read(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def main():
    runs, data, out = map(Path, sys.argv[1:4])
    generated, teacher = {}, {}
    for k, other in ((1, 2), (2, 1)):
        records = read(data / "folds" / f"fold{other}" / "informant.jsonl")
        teacher.update({r["id"]: r["target"] for r in records})
        generated.update(generate(runs / f"informant-fold{k}", records))
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "knowledge.jsonl", "w") as f:
        for rid in sorted(generated):
            f.write(json.dumps({"id": rid, "teacher": teacher[rid], "informant_oof": generated[rid]}) + "\n")
    for kind in ("gold", "answer"):
        replaced = 0
        (out / kind).mkdir(exist_ok=True)
        with open(out / kind / "reasoner.jsonl", "w") as f:
            for rec in read(data / kind / "reasoner.jsonl"):
                content = rec["messages"][0]["content"]
                i = 1
                while f"{rec['id']}#{i}" in generated:
                    rid = f"{rec['id']}#{i}"
                    old, new = f"Knowledge: {teacher[rid].strip()}", f"Knowledge: {generated[rid]}"
                    if old in content:
                        content, replaced = content.replace(old, new, 1), replaced + 1
                    i += 1
                rec["messages"] = [{**rec["messages"][0], "content": content}]
                f.write(json.dumps(rec) + "\n")
        print(f"oof {kind}: replaced {replaced} knowledge blocks of {len(generated)}", flush=True)


if __name__ == "__main__":
    main()
