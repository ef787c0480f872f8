"""StrategyQA's human supervision, readable by the modules: the gold subquestions and each one's facts.

Shared by the `gold` teacher (training targets) and the error analysis (the Reasoner given gold
subquestions and facts; Analyzer and Informant outputs scored against them).
"""

from __future__ import annotations

import itertools
import re

from .records import Question

_STOPWORDS = frozenset(
    "the a an of in on at to for from by with and or is are was were be been did does do what which "
    "who whom whose when where why how that this these those it its as than then there their they he "
    "she his her have has had can could would will not any all some many much most more into about "
    "over under one".split())


def gold_knowledge(q: Question) -> tuple[list[str], list[str]] | None:
    """(subquestions, knowledge per subquestion) from the question's annotations, None without them."""
    subquestions = readable_subquestions(q.extra.get("decomposition") or [])
    facts = [f.strip() for f in q.extra.get("facts") or [] if isinstance(f, str) and f.strip()]
    if not subquestions or not facts:
        return None
    return subquestions, assign_facts(subquestions, facts, retrieval_steps(q, len(subquestions)))


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


# --- scoring module outputs against the gold annotations ---------------------------------------

def _tokens(text: str) -> list[str]:
    """SQuAD's answer normalization: lowercase, no punctuation or articles, split on whitespace."""
    text = re.sub(r"\b(a|an|the)\b", " ", re.sub(r"[^\w\s]", " ", text.lower()))
    return text.split()


def token_f1(prediction: str, reference: str) -> float:
    """Token-overlap F1 of two texts (SQuAD's metric)."""
    pred, ref = _tokens(prediction), _tokens(reference)
    common = sum(min(pred.count(t), ref.count(t)) for t in set(pred) & set(ref))
    if not pred or not ref or not common:
        return float(pred == ref)
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def subquestion_overlap(predicted: list[str], gold: list[str]) -> float:
    """Content-word F1 between all predicted subquestions and all gold ones (0 when either is empty)."""
    pred = set().union(*map(_content_words, predicted)) if predicted else set()
    ref = set().union(*map(_content_words, gold)) if gold else set()
    common = len(pred & ref)
    if not common:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)
