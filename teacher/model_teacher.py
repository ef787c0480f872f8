"""One question through a model teacher: Analyzer -> Informant per subquestion -> Reasoner, and DRD.

Every call goes through the journal: a call already answered in an earlier (possibly killed) run is
replayed from it, so rerunning the same command only asks the teacher for what is missing.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

from tmd_local.core import prompts
from tmd_local.core.parsing import parse_subquestions
from tmd_local.core.records import Question

from .backends import Reply, complete_safely
from .journal import Journal, Key
from .traces import Context, Outcome, answer_verdict, informant_id, record, with_final_answer

DEFAULT_MAX_TOKENS = {"analyzer": 256, "informant": 256, "reasoner": 512, "drd": 512}
UNPARSEABLE_SUBQUESTIONS = "subquestions_unparseable"
_NO_DECOMP = re.compile(r"no\s+decomposition", re.I)


class NotInJournal(Exception):
    """Replay-only mode met a call that has not been made yet."""


class Stopped(Exception):
    """Another worker hit a fatal error; this one stops before its next call."""


@dataclass
class Caller:
    """Answers a call from the journal, else from the teacher (then journals it)."""
    journal: Journal
    backend: object | None  # None = replay only
    max_tokens: dict[str, int]
    stop: threading.Event = field(default_factory=threading.Event)
    calls_made: int = 0
    _count_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __call__(self, key: Key, messages: list[dict]) -> Reply:
        stored = self.journal.get(key, messages)
        if stored is not None:
            return stored
        if self.backend is None:
            raise NotInJournal(key)
        if self.stop.is_set():
            raise Stopped()
        try:
            reply = complete_safely(self.backend, messages, self.max_tokens[key[1]])
        except BaseException:
            self.stop.set()  # fatal (bad key, server gone, Ctrl-C): other workers send nothing more
            raise
        with self._count_lock:
            self.calls_made += 1
        return self.journal.add(key, messages, reply)


@dataclass
class QuestionRun:
    """Everything the teacher said about one question."""
    question: Question
    analyzer: Reply
    subquestions: list[str]
    informants: list[Reply]
    reasoner: Reply
    drd: Reply

    def replies(self) -> list[Reply]:
        return [self.analyzer, *self.informants, self.reasoner, self.drd]


def teach_question(q: Question, call: Caller) -> QuestionRun:
    analyzer = call((q.id, "analyzer", 0), prompts.analyzer_messages(q))
    subquestions = parse_subquestions(analyzer.text) if analyzer.problem is None else []
    informants = [call((q.id, "informant", i), prompts.informant_messages(sq))
                  for i, sq in enumerate(subquestions, start=1)]
    knowledge = [r.text for r in informants]
    reasoner = call((q.id, "reasoner", 0), prompts.reasoner_messages(q, subquestions, knowledge))
    drd = call((q.id, "drd", 0), prompts.drd_messages(q))
    return QuestionRun(q, analyzer, subquestions, informants, reasoner, drd)


def replay(q: Question, journal: Journal) -> QuestionRun | None:
    """The question's run from the journal alone, or None when some call is still missing."""
    try:
        return teach_question(q, Caller(journal, None, DEFAULT_MAX_TOKENS))
    except NotInJournal:
        return None


def outcome(run: QuestionRun, ctx: Context) -> Outcome:
    """Sort one question's records into kept and rejected. Kept targets are normalized (the parsed
    subquestion list, one canonical final-answer line); rejected ones keep the teacher's raw text,
    so rejected.jsonl shows what went wrong."""
    q, out = run.question, Outcome()
    tmd_reason, tmd_letter = _trace_verdict(run.reasoner, q, ctx)
    analyzer_reason = run.analyzer.problem or _subquestion_problem(run) or tmd_reason
    _add(out, record(ctx, q.id, "analyzer", prompts.analyzer_messages(q),
                     prompts.format_subquestions(run.subquestions)), run.analyzer.text, analyzer_reason)
    for i, (sq, reply) in enumerate(zip(run.subquestions, run.informants), start=1):
        _add(out, record(ctx, informant_id(q.id, i), "informant", prompts.informant_messages(sq),
                         reply.text), reply.text, reply.problem or tmd_reason)
    knowledge = [r.text for r in run.informants]
    messages = prompts.reasoner_messages(q, run.subquestions, knowledge)
    _add(out, record(ctx, q.id, "reasoner", messages, _normalized(run.reasoner.text, tmd_letter)),
         run.reasoner.text, tmd_reason)
    drd_reason, drd_letter = _trace_verdict(run.drd, q, ctx)
    _add(out, record(ctx, q.id, "drd", prompts.drd_messages(q), _normalized(run.drd.text, drd_letter)),
         run.drd.text, drd_reason)
    return out


def _add(out: Outcome, rec: dict, raw_text: str, reason: str | None) -> None:
    out.add(rec if reason is None else {**rec, "target": raw_text}, reason)


def _trace_verdict(final: Reply, q: Question, ctx: Context) -> tuple[str | None, str | None]:
    if final.problem:
        return final.problem, None
    letter, reason = answer_verdict(final.text, q, ctx.keep_wrong)
    return reason, letter


def _subquestion_problem(run: QuestionRun) -> str | None:
    """No subquestions is fine when the teacher said 'No decomposition', not when it said nothing usable."""
    if run.subquestions or _NO_DECOMP.search(run.analyzer.text):
        return None
    return UNPARSEABLE_SUBQUESTIONS


def _normalized(text: str, letter: str | None) -> str:
    return with_final_answer(text, letter) if letter else text
