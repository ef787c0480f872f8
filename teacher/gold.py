"""The `gold` teacher: training targets from dataset supervision, no model involved.

StrategyQA (human annotations, plus ChatGPT rationales recorded by KARD):
- Analyzer: the human decomposition, "#k" rewritten as "the answer to subquestion k" so each line
  reads on its own, and a "?" added where the annotator left it off (the parser splits on "?").
- Informant: the human facts, each assigned to one retrieval subquestion (see assign_facts); a
  subquestion's target is its facts joined by spaces. Subquestions that got no fact (typically the
  final comparison step, "Is #1 before #2?") have no Informant record.
- Reasoner: input = question + subquestions + their facts. Target (`gold:rationale`, the default):
  the same recorded rationale DRD learns (KARD's setup, so TMD and DRD learn the same reasoning and
  TMD additionally gets decomposition and knowledge); no matching rationale -> rejected, as for DRD.
  `gold:facts`: the facts as numbered steps, a closing step naming the gold option, then
  "Final Answer: <gold letter>".
- DRD: the first recorded rationale whose answer is the gold one, split into numbered steps,
  ending with "Final Answer: <gold letter>". None matches -> rejected (no_matching_rationale).
  A rationale's answer is tmd_local.core.parsing.parse_answer's, or, when that finds none, the one
  option it calls correct ("Option (D) is the correct answer"): most OBQA rationales argue option by
  option and never write "the answer is".
OBQA / MedQA have no human decomposition or facts: Analyzer and Informant targets come from the
recorded rationales themselves (teacher/rationale_kb.py: the topic they name, asked as a question,
and the fact sentences they agree on), the Reasoner reasons from those; a question whose rationales
give no topic or fact gets "No decomposition".
`gold:answer` makes every Reasoner and DRD target the bare "Final Answer: <gold letter>": DRD is then
the answer-only fine-tune (the floor a distilled student must beat) and the Reasoner answers straight
from subquestions and knowledge.
"""

from __future__ import annotations

import re

from tmd_local.core import prompts
from tmd_local.core.gold import gold_knowledge, readable_subquestions
from tmd_local.core.parsing import parse_answer
from tmd_local.core.records import Question

from .rationale_kb import decompose
from .traces import (Context, Outcome, informant_id, numbered_steps, record, with_final_answer,
                     without_final_answer)

NO_DECOMPOSITION_DATA = "no_gold_decomposition"
NO_RATIONALE, NO_MATCH = "no_recorded_rationale", "no_matching_rationale"
_STATED = re.compile(
    r"\b(?:option|choice|answer)\s*\(?([A-Z])\)?(?:,[^,.]{0,80},)?\s+(?:is|would be|seems to be)\s+"
    r"(?:the\s+)?(?:correct|right|best|most\s+(?:accurate|appropriate|suitable|likely|logical|reasonable))\b",
    re.I)


def supports_decomposition(q: Question) -> bool:
    return bool(q.extra.get("decomposition")) and bool(q.extra.get("facts"))


def gold_outcome(q: Question, ctx: Context) -> Outcome:
    out = Outcome()
    if ctx.dataset == "strategyqa":
        _add_tmd_from_annotations(q, ctx, out)
    else:
        _add_tmd_from_rationales(q, ctx, out)
    out.add(*_drd_record(q, ctx))
    return out


# --- StrategyQA: Analyzer / Informant / Reasoner from the human annotations --------------------

def _add_tmd_from_annotations(q: Question, ctx: Context, out: Outcome) -> None:
    subquestions = readable_subquestions(q.extra.get("decomposition") or [])
    analyzer = record(ctx, q.id, "analyzer", prompts.analyzer_messages(q),
                      prompts.format_subquestions(subquestions))
    gold = gold_knowledge(q)
    if gold is None or q.answer is None:
        out.add(analyzer, NO_DECOMPOSITION_DATA)
        return
    subquestions, knowledge = gold
    out.add(analyzer, None)
    for i, (sq, kn) in enumerate(zip(subquestions, knowledge), start=1):
        if kn:
            out.add(record(ctx, informant_id(q.id, i), "informant", prompts.informant_messages(sq), kn),
                    None)
    messages = prompts.reasoner_messages(q, subquestions, knowledge)
    if reasoner_target_kind(ctx) == "answer":
        out.add(record(ctx, q.id, "reasoner", messages, answer_only(q.answer)), None)
        return
    if reasoner_target_kind(ctx) == "facts":
        out.add(record(ctx, q.id, "reasoner", messages, facts_reasoning(q, knowledge)), None)
        return
    text, reason = matching_rationale(q)
    out.add(record(ctx, q.id, "reasoner", messages, rationale_target(text, q.answer) if text else ""), reason)


def reasoner_target_kind(ctx: Context) -> str:
    """'rationale', 'facts' or 'answer', from the resolved teacher label ('gold:facts')."""
    return ctx.teacher.partition(":")[2] or "rationale"


def facts_reasoning(q: Question, knowledge: list[str]) -> str:
    """Numbered steps: each subquestion's facts, then the gold option; ends in the final answer."""
    steps = [kn for kn in knowledge if kn]
    steps.append(f"So the answer to \"{q.question.strip()}\" is {q.options[q.answer]}.")
    body = "\n".join(f"{i}. {s}" for i, s in enumerate(steps, start=1))
    return f"{body}\nFinal Answer: {q.answer}"


# --- Recorded rationales: DRD (all datasets) and Reasoner (OBQA / MedQA) -------------------------

def matching_rationale(q: Question) -> tuple[str | None, str | None]:
    """(the first recorded rationale that answers the gold option, rejection reason if none)."""
    rationales = (q.extra.get("teacher") or {}).get("rationales") or []
    if not rationales or q.answer is None:
        return None, NO_RATIONALE
    for text in rationales:
        if isinstance(text, str) and rationale_answer(text, q.options) == q.answer:
            return text, None
    return None, NO_MATCH


def rationale_answer(text: str, options: dict[str, str]) -> str | None:
    parsed = parse_answer(text, options)
    if parsed is not None:
        return parsed
    stated = {m.upper() for m in _STATED.findall(text)} & set(options)
    return stated.pop() if len(stated) == 1 else None  # several "correct" options: no answer


def rationale_target(text: str, letter: str) -> str:
    return with_final_answer(numbered_steps(without_final_answer(text)), letter)


def answer_only(letter: str) -> str:
    return f"Final Answer: {letter}"


def _drd_record(q: Question, ctx: Context) -> tuple[dict, str | None]:
    if reasoner_target_kind(ctx) == "answer" and q.answer is not None:
        return record(ctx, q.id, "drd", prompts.drd_messages(q), answer_only(q.answer)), None
    text, reason = matching_rationale(q)
    target = rationale_target(text, q.answer) if text else ""
    return record(ctx, q.id, "drd", prompts.drd_messages(q), target), reason


def _add_tmd_from_rationales(q: Question, ctx: Context, out: Outcome) -> None:
    """Analyzer/Informant from the rationales that answer the gold option, Reasoner from those
    (the same rationale DRD learns), every module fed what the earlier ones produce."""
    rationales = [r for r in (q.extra.get("teacher") or {}).get("rationales") or [] if isinstance(r, str)]
    if not rationales or q.answer is None:
        out.add(record(ctx, q.id, "reasoner", prompts.reasoner_messages(q, [], []), ""), NO_RATIONALE)
        return
    agreeing = [r for r in rationales if rationale_answer(r, q.options) in (q.answer, None)]
    found = decompose(q.question, q.options, q.answer, agreeing)
    out.add(record(ctx, q.id, "analyzer", prompts.analyzer_messages(q),
                   prompts.format_subquestions(found.subquestions)), None)
    for i, (sq, kn) in enumerate(zip(found.subquestions, found.knowledge), start=1):
        out.add(record(ctx, informant_id(q.id, i), "informant", prompts.informant_messages(sq), kn), None)
    messages = prompts.reasoner_messages(q, found.subquestions, found.knowledge)
    if reasoner_target_kind(ctx) == "answer":
        out.add(record(ctx, q.id, "reasoner", messages, answer_only(q.answer)), None)
        return
    text, reason = matching_rationale(q)
    out.add(record(ctx, q.id, "reasoner", messages, rationale_target(text, q.answer) if text else ""), reason)
