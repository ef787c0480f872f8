"""Training records (docs/FORMATS.md section 2) and the keep/reject verdict for each trace.

A question yields two traces: the TMD trace (Analyzer -> Informant per subquestion -> Reasoner) and
the DRD trace. A trace is kept when its final answer parses and matches the gold answer (or with
--keep-wrong, whenever it parses); otherwise each of its records goes to rejected.jsonl with the
reason. An Analyzer or Informant record can also be rejected on its own (an empty or broken reply)
while the rest of its trace is kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tmd_local.core.formats import TeacherRecord
from tmd_local.core.parsing import parse_answer
from tmd_local.core.prompts import PROMPT_VERSION
from tmd_local.core.records import Question
from tmd_local.core.roles import ROLES

MODULES = ROLES  # one training set per role
WRONG, UNPARSEABLE, NO_GOLD = "wrong_answer", "answer_unparseable", "no_gold_answer"
_FINAL_LINE = re.compile(r"final\s+answer", re.I)


@dataclass
class Context:
    """What every record of a run carries besides its own content."""
    teacher: str
    dataset: str
    split: str
    keep_wrong: bool = False


@dataclass
class Outcome:
    """One question's records, sorted into kept and rejected (rejected ones carry "reason")."""
    kept: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)

    def add(self, record: dict, reason: str | None) -> None:
        if reason is None:
            self.kept.append(record)
        else:
            self.rejected.append({**record, "reason": reason})


def record(ctx: Context, rid: str, module: str, messages: list[dict], target: str) -> dict:
    return TeacherRecord(id=rid, module=module, messages=messages, target=target, teacher=ctx.teacher,
                         dataset=ctx.dataset, split=ctx.split, prompt_version=PROMPT_VERSION).to_json()


def informant_id(qid: str, index: int) -> str:
    """Subquestions are numbered from 1, as in the Analyzer's list and StrategyQA's "#1"."""
    return f"{qid}#{index}"


def answer_verdict(text: str, q: Question, keep_wrong: bool) -> tuple[str | None, str | None]:
    """(parsed letter, rejection reason or None) for a reasoning text ending in a final answer."""
    letter = parse_answer(text, q.options) if text else None
    if letter is None:
        return None, UNPARSEABLE
    if q.answer is None:
        return letter, None if keep_wrong else NO_GOLD
    if letter != q.answer and not keep_wrong:
        return letter, WRONG
    return letter, None


def with_final_answer(text: str, letter: str) -> str:
    """The reasoning up to its last "Final Answer" line, then one canonical `Final Answer: X`.

    Teachers decorate the line ("**Final Answer:** (B) no") or keep talking after it; the students
    must learn one exact ending the parser reads, so the target is normalized here."""
    body = without_final_answer(text)
    return f"{body}\nFinal Answer: {letter}" if body else f"Final Answer: {letter}"


def without_final_answer(text: str) -> str:
    """Text before the last line mentioning "final answer" (all of it when none does)."""
    lines = text.strip().splitlines()
    last = max((i for i, line in enumerate(lines) if _FINAL_LINE.search(line)), default=None)
    body = lines[:last] if last is not None else lines
    return "\n".join(body).rstrip().rstrip("*#").rstrip()


def numbered_steps(text: str) -> str:
    """Free prose -> `1. ...` steps, one per paragraph (or per sentence for a single paragraph).
    Text that is already a numbered list is left alone."""
    text = text.strip()
    if re.search(r"^\s*1[.)]\s", text, re.M) and re.search(r"^\s*2[.)]\s", text, re.M):
        return text
    parts = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    if len(parts) == 1:
        parts = [s.strip() for s in re.split(r"(?<=[.!?])\s+(?=[A-Z(])", parts[0]) if s.strip()]
    return "\n".join(f"{i}. {' '.join(p.split())}" for i, p in enumerate(parts, start=1))
