"""The `gold` teacher: training targets from dataset supervision, no model involved.

StrategyQA (human annotations, plus ChatGPT rationales recorded by KARD):
- Analyzer: the human decomposition, "#k" rewritten as "the answer to subquestion k" so each line
  reads on its own, and a "?" added where the annotator left it off (the parser splits on "?").
- Informant: the human facts, each assigned to one retrieval subquestion (see assign_facts); a
  subquestion's target is its facts joined by spaces. Subquestions that got no fact (typically the
  final comparison step, "Is #1 before #2?") have no Informant record.
- Reasoner: input = question + subquestions + their facts; target = the facts as numbered steps,
  a closing step naming the gold option, then "Final Answer: <gold letter>".
- DRD: the first recorded rationale whose answer is the gold one, split into numbered steps,
  ending with "Final Answer: <gold letter>". None matches -> rejected (no_matching_rationale).
  A rationale's answer is tmd_local.parsing.parse_answer's, or, when that finds none, the one
  option it calls correct ("Option (D) is the correct answer"): most OBQA rationales argue option by
  option and never write "the answer is".
OBQA / MedQA have no human decomposition or facts: only DRD and Reasoner (with "no decomposition"
in its input) are produced, both from the recorded rationales; Analyzer/Informant are counted as
skipped in the summary.
"""

from __future__ import annotations

import itertools
import re

from tmd_local import prompts
from tmd_local.parsing import parse_answer
from tmd_local.records import Question

from .traces import (Context, Outcome, informant_id, numbered_steps, record, with_final_answer,
                     without_final_answer)

NO_DECOMPOSITION_DATA = "no_gold_decomposition"
NO_RATIONALE, NO_MATCH = "no_recorded_rationale", "no_matching_rationale"
_STATED = re.compile(
    r"\b(?:option|choice|answer)\s*\(?([A-Z])\)?(?:,[^,.]{0,80},)?\s+(?:is|would be|seems to be)\s+"
    r"(?:the\s+)?(?:correct|right|best|most\s+(?:accurate|appropriate|suitable|likely|logical|reasonable))\b",
    re.I)
_STOPWORDS = frozenset(
    "the a an of in on at to for from by with and or is are was were be been did does do what which "
    "who whom whose when where why how that this these those it its as than then there their they he "
    "she his her have has had can could would will not any all some many much most more into about "
    "over under one".split())


def supports_decomposition(q: Question) -> bool:
    return bool(q.extra.get("decomposition")) and bool(q.extra.get("facts"))


def gold_outcome(q: Question, ctx: Context) -> Outcome:
    out = Outcome()
    if ctx.dataset == "strategyqa":
        _add_tmd_from_annotations(q, ctx, out)
    else:
        _add_reasoner_from_rationale(q, ctx, out)
    out.add(*_drd_record(q, ctx))
    return out


# --- StrategyQA: Analyzer / Informant / Reasoner from the human annotations --------------------

def _add_tmd_from_annotations(q: Question, ctx: Context, out: Outcome) -> None:
    subquestions = readable_subquestions(q.extra.get("decomposition") or [])
    facts = [f.strip() for f in q.extra.get("facts") or [] if f and f.strip()]
    analyzer = record(ctx, q.id, "analyzer", prompts.analyzer_messages(q),
                      prompts.format_subquestions(subquestions))
    if not subquestions or not facts or q.answer is None:
        out.add(analyzer, NO_DECOMPOSITION_DATA)
        return
    knowledge = assign_facts(subquestions, facts, retrieval_steps(q, len(subquestions)))
    out.add(analyzer, None)
    for i, (sq, kn) in enumerate(zip(subquestions, knowledge), start=1):
        if kn:
            out.add(record(ctx, informant_id(q.id, i), "informant", prompts.informant_messages(sq), kn),
                    None)
    out.add(record(ctx, q.id, "reasoner", prompts.reasoner_messages(q, subquestions, knowledge),
                   facts_reasoning(q, knowledge)), None)


def readable_subquestions(decomposition: list[str]) -> list[str]:
    out = []
    for sq in decomposition:
        sq = re.sub(r"#(\d+)", r"the answer to subquestion \1", " ".join(str(sq).split()))
        if sq:
            out.append(sq[0].upper() + sq[1:] + ("" if sq.endswith("?") else "?"))
    return out


def retrieval_steps(q: Question, n: int) -> list[int]:
    """Indices of the subquestions answered by looking something up, as opposed to "operation"
    steps that only combine earlier answers. StrategyQA's evidence marks them per annotator: a step
    is retrieval when any annotator cited a paragraph for it. Without evidence, every step counts."""
    evidence = q.extra.get("evidence") or []
    steps = [i for i in range(n)
             if any(i < len(ann) and any(isinstance(item, list) for item in ann[i]) for ann in evidence
                    if isinstance(ann, list))]
    return steps or list(range(n))


def assign_facts(subquestions: list[str], facts: list[str], steps: list[int]) -> list[str]:
    """Knowledge per subquestion: each fact goes to one retrieval step. Steps and facts are first
    matched one-to-one maximizing shared content words (ties keep the annotators' order), then any
    leftover fact joins the step it shares most words with."""
    words = [_content_words(sq) for sq in subquestions]
    score = lambda f, s: len(_content_words(facts[f]) & words[s]) + (0.1 if f == steps.index(s) else 0)
    pairs = _best_matching(len(facts), steps, score)
    for f in range(len(facts)):
        if f not in pairs:
            pairs[f] = max(steps, key=lambda s: (score(f, s), -s))
    knowledge = [[] for _ in subquestions]
    for f in sorted(pairs):
        knowledge[pairs[f]].append(facts[f])
    return [" ".join(k) for k in knowledge]


def _best_matching(n_facts: int, steps: list[int], score) -> dict[int, int]:
    """fact -> step, one-to-one over min(facts, steps) pairs, by brute force (both are <= 5 here)."""
    best, best_total = {}, -1.0
    if n_facts >= len(steps):
        candidates = ((dict(zip(perm, steps))) for perm in itertools.permutations(range(n_facts), len(steps)))
    else:
        candidates = (dict(zip(range(n_facts), perm)) for perm in itertools.permutations(steps, n_facts))
    for pairs in itertools.islice(candidates, 50_000):  # a bound for unusual records
        total = sum(score(f, s) for f, s in pairs.items())
        if total > best_total:
            best, best_total = pairs, total
    return best


def _content_words(text: str) -> set[str]:
    tokens = re.findall(r"[a-z0-9]+", text.lower())
    return {t[:-1] if len(t) > 3 and t.endswith("s") else t
            for t in tokens if len(t) > 2 and t not in _STOPWORDS}


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


def _drd_record(q: Question, ctx: Context) -> tuple[dict, str | None]:
    text, reason = matching_rationale(q)
    target = rationale_target(text, q.answer) if text else ""
    return record(ctx, q.id, "drd", prompts.drd_messages(q), target), reason


def _add_reasoner_from_rationale(q: Question, ctx: Context, out: Outcome) -> None:
    text, reason = matching_rationale(q)
    target = rationale_target(text, q.answer) if text else ""
    out.add(record(ctx, q.id, "reasoner", prompts.reasoner_messages(q, [], []), target), reason)
