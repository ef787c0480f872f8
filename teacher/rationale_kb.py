"""Analyzer and Informant targets taken from recorded rationales (OBQA, MedQA): no model involved.

KARD's ChatGPT rationales carry no subquestions, but most open with the topic they draw on ("This
question requires some basic knowledge about <topic>.") and then state the facts the answer rests
on before arguing option by option. From the rationales that answer the gold option:
- the subquestion is the topic most of them name, asked as "What is known about <topic>?": a question
  a student can ask before knowing which option is right, since the topic names the question's
  subject, not its answer;
- its knowledge is up to two fact sentences the rationales agree on most (each sentence scored by how
  closely the other rationales repeat it), keeping only sentences that read as general facts.
A sentence is never knowledge when it names an option or its letter, judges an answer ("correct",
"incorrect", "the answer"), speaks about "the question", restates the question together with the
correct option (the answer in other words), or leans on an earlier sentence ("This", "It", "They"...).
Everything here is deterministic; docs/TEACHER.md gives the counts and examples.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

MAX_FACTS = 2
MIN_WORDS, MAX_WORDS = 5, 45
SIMILAR = 0.5            # content-word Jaccard at which two sentences say the same thing
DISTINCT = 0.2           # a second fact must share less than this with the first (no paraphrases)

_TOPIC = re.compile(r"\b(?:knowledge|understanding)\s+(?:about|of|on|regarding|in)\s+([^.]+?)\s*(?:\.|$)", re.I)
_TOPIC_TAIL = re.compile(r"\s+(?:is|are)\s+(?:necessary|required|needed|helpful|useful|important)\b.*$", re.I)
_TOPIC_TAIL2 = re.compile(r",?\s+(?:and|to)\s+(?:the\s+)?(?:reasoning|answer|choose|determine|find|identify|solve)\b.*$", re.I)
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'])")
_JUDGING = re.compile(
    r"\b(?:option|options|choice|choices|answer|answers|correct|incorrect|wrong|question|questions|"
    r"identical|repeat|repeated|previous|above|mentioned|statement|therefore|thus|hence)\b", re.I)
_LETTER = re.compile(r"\(([A-E])\)|\b[A-E]\)")
_ANAPHORIC_START = re.compile(r"^(?:this|that|these|those|it|its|they|their|them|he|she|such|so|also|"
                              r"however|in\s+this|in\s+that|for\s+this|additionally|furthermore|"
                              r"moreover|overall|in\s+conclusion|in\s+summary|based\s+on)\b", re.I)
_FILLER_START = re.compile(r"^(?:we\s|to\s+answer|let's|let\s+us|one\s+(?:needs|must|should)|"
                           r"step\s+\d|explanation)", re.I)
_WORD = re.compile(r"[a-z][a-z'-]+")
STOPWORDS = frozenset("""a an the of to in on at by for from with and or but if then than as is are was were be
been being it its this that these those there their they them which who whom what when where why how
can could would should will may might must do does did not no so such into onto over under about
more most less least very also only just some any each every all both other another one two our
your you we he she his her i""".split())


@dataclass(frozen=True)
class Decomposition:
    subquestions: list[str]   # [] when no topic or no usable fact: the Analyzer says "No decomposition"
    knowledge: list[str]      # one text per subquestion (its facts, joined by spaces)
    dropped: Counter          # why candidate sentences were left out


def decompose(question: str, options: dict[str, str], answer: str, rationales: list[str]) -> Decomposition:
    """Subquestion and knowledge for one question from the rationales that answer the gold option."""
    dropped: Counter = Counter()
    topic = common_topic(rationales)
    if topic is None:
        dropped["no_topic"] += 1
        return Decomposition([], [], dropped)
    facts = consensus_facts(question, options[answer], rationales, dropped)
    if not facts:
        dropped["no_fact"] += 1
        return Decomposition([], [], dropped)
    return Decomposition([topic_question(topic)], [" ".join(facts)], dropped)


def common_topic(rationales: list[str]) -> str | None:
    """The topic phrase most rationales name in their opening ("knowledge about <topic>")."""
    topics = [t for r in rationales if (t := rationale_topic(r))]
    if not topics:
        return None
    counts = Counter(t.lower() for t in topics)
    best = max(counts.values())
    return next(t for t in topics if counts[t.lower()] == best)  # ties: the earliest rationale's


def rationale_topic(text: str) -> str | None:
    match = _TOPIC.search(text[:400])
    if not match:
        return None
    topic = _TOPIC_TAIL2.sub("", _TOPIC_TAIL.sub("", " ".join(match.group(1).split()))).strip(" ,;:")
    if not 1 <= len(topic.split()) <= 14 or _JUDGING.search(topic) or _LETTER.search(topic):
        return None
    return topic


def topic_question(topic: str) -> str:
    return f"What is known about {topic}?"


def consensus_facts(question: str, correct: str, rationales: list[str], dropped: Counter) -> list[str]:
    """Up to MAX_FACTS distinct fact sentences, most repeated across the rationales first."""
    per_rationale = [[(s, content_words(s)) for s in sentences(r) if usable(s, question, correct, dropped)]
                     for r in rationales]
    scored = []
    for i, candidates in enumerate(per_rationale):
        for s, words in candidates:
            support = sum(any(jaccard(words, o) >= SIMILAR for _, o in other)
                          for j, other in enumerate(per_rationale) if j != i)
            scored.append((support, -i, s, words))
    chosen: list[tuple[str, frozenset]] = []
    for support, _, s, words in sorted(scored, key=lambda t: t[:2], reverse=True):
        if support == 0 and chosen:
            break
        if all(jaccard(words, c) < DISTINCT for _, c in chosen):
            chosen.append((s, words))
        if len(chosen) == MAX_FACTS:
            break
    return [s for s, _ in chosen]


def sentences(text: str) -> list[str]:
    flat = " ".join(text.split())
    return [s.strip() for s in _SENTENCE_SPLIT.split(flat) if s.strip()]


def usable(sentence: str, question: str, correct: str, dropped: Counter) -> bool:
    """A general fact sentence: see the module docstring for what is left out and why."""
    n = len(sentence.split())
    reason = None
    if not MIN_WORDS <= n <= MAX_WORDS:
        reason = "length"
    elif _LETTER.search(sentence) or _JUDGING.search(sentence):
        reason = "names_option_or_judges"
    elif _ANAPHORIC_START.match(sentence) or _FILLER_START.match(sentence):
        reason = "leans_on_context"
    elif restates_answer(sentence, question, correct):
        reason = "restates_question_and_answer"
    if reason:
        dropped[reason] += 1
        return False
    return True


def restates_answer(sentence: str, question: str, correct: str) -> bool:
    """The question and its correct option said again: most of both sets of content words."""
    words, q_words, a_words = content_words(sentence), content_words(question), content_words(correct)
    if not a_words:
        return False
    answer_share = len(words & a_words) / len(a_words)
    question_share = len(words & q_words) / len(q_words) if q_words else 1.0
    return answer_share >= 0.8 and question_share >= 0.5


def content_words(text: str) -> frozenset[str]:
    words = (w.strip("'-") for w in _WORD.findall(text.lower()) if w not in STOPWORDS and len(w) > 2)
    return frozenset(w[:-1] if w.endswith("s") and len(w) > 3 else w for w in words)  # plural = singular


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0
