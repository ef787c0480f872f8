"""Counts and random examples of the OBQA gold teacher's Analyzer/Informant targets, for docs/TEACHER.md.
usage: .venv/bin/python scripts/teacher_stats.py [dataset] [seed]"""

import json
import random
import re
import sys
from collections import Counter

from teacher.gold import rationale_answer
from teacher.rationale_kb import decompose, restates_answer, sentences
from tmd_local.core.datasets import load_questions

LEAK = re.compile(r"\b(?:option|correct|incorrect|answer|question)\b|\([A-E]\)", re.I)

dataset = sys.argv[1] if len(sys.argv) > 1 else "obqa"
questions, _ = load_questions(dataset, "train")
dropped, subq, facts, leaks, restated = Counter(), Counter(), Counter(), 0, 0
found = {}
for q in questions:
    rationales = [r for r in (q.extra.get("teacher") or {}).get("rationales") or [] if isinstance(r, str)]
    agreeing = [r for r in rationales if rationale_answer(r, q.options) in (q.answer, None)]
    d = decompose(q.question, q.options, q.answer, agreeing)
    found[q.id] = d
    dropped.update(d.dropped)
    subq[len(d.subquestions)] += 1
    for kn in d.knowledge:
        facts[len(sentences(kn))] += 1
        leaks += bool(LEAK.search(kn))
        restated += any(restates_answer(s, q.question, q.options[q.answer]) for s in sentences(kn))
print(json.dumps({"questions": len(questions), "subquestions_per_question": dict(sorted(subq.items())),
                  "facts_per_knowledge": dict(sorted(facts.items())), "sentences_dropped": dict(dropped.most_common()),
                  "leak_check_hits": leaks, "restated_answer_hits": restated}, indent=1))
rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
for q in rng.sample(questions, 10):
    d = found[q.id]
    print(f"\n- **{q.question}** (gold: {q.options[q.answer]})")
    print(f"  - Analyzer: {d.subquestions[0] if d.subquestions else 'No decomposition'}")
    print(f"  - Informant: {d.knowledge[0] if d.knowledge else '-'}")
