"""The answer-only student's accuracy on OBQA validation for each LoRA scale trained (runs/a<alpha>/answer),
read as tmd's runtime reads an answer: P(letter | prompt + "\nFinal Answer:"), argmax over the options.
Prints JSON: {"accuracy": {alpha: acc}, "best_alpha": alpha, "n": 500}.
usage: validate_answer.py <runs folder> <validation.jsonl>"""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import left_padded, load, prompt_ids  # noqa: E402

from tmd_local.core.prompts import drd_messages  # noqa: E402
from tmd_local.core.records import Question  # noqa: E402

CUE = "\nFinal Answer:"


def accuracy(adapter, questions):
    model, tok = load(adapter)
    cue = tok(CUE, add_special_tokens=False)["input_ids"]
    letters = list(questions[0].options)
    letter_ids = [tok(f"{CUE} {x}", add_special_tokens=False)["input_ids"][len(cue)] for x in letters]
    rows = [p + cue for p in prompt_ids(tok, [drd_messages(q) for q in questions])]
    right = 0
    with torch.no_grad():
        for start in range(0, len(rows), 64):
            ids, mask = left_padded(rows[start:start + 64], tok.pad_token_id or 0)
            logits = model(input_ids=ids, attention_mask=mask).logits[:, -1, letter_ids]
            for q, best in zip(questions[start:start + 64], logits.argmax(-1).tolist()):
                right += letters[best] == q.answer
    return right / len(questions)


def main():
    runs, data = Path(sys.argv[1]), Path(sys.argv[2])
    questions = [Question(id=r["id"], question=r["question"], options=r["options"], answer=r["answer"])
                 for r in map(json.loads, data.read_text().splitlines())]
    scores = {run.name[1:]: accuracy(run / "answer", questions)
              for run in sorted(runs.glob("a*")) if (run / "answer" / "tmd.json").is_file()}
    best = max(scores, key=lambda a: (scores[a], -float(a)))  # ties: the smaller scale
    print(json.dumps({"accuracy": scores, "best_alpha": best, "n": len(questions),
                      "read": "P(letter | DRD prompt + '\\nFinal Answer:'), bf16, transformers"}))


if __name__ == "__main__":
    main()
