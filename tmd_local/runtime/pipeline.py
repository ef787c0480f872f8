"""The TMD pipeline (Analyzer -> Informant -> Reasoner) and the DRD baseline over llama.cpp modules.

Stages run over a batch of questions: each module is loaded once, used for every question in the
batch, and closed before the next loads. A batch of one is the per-question path; since decoding
is greedy (and seeded when sampling), both give the same traces. A `ModulePool` passed in decides
residency (one module at a time, or kept loaded within a memory budget) and can outlive one run;
`should_stop` is polled between tokens and stages, and raises `Cancelled`; `dropped(index)` lets one
question of a batch go (its client left) while the others carry on. `Events` is how the app, the
server or the benchmark watches a run (stages, tokens, every finished generation) without patching it.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from ..core import prompts
from ..core.errors import TmdError
from ..core.gold import gold_knowledge
from ..core.parsing import parse_answer, parse_subquestions
from ..core.records import Question
from ..core.registry import ModelRef
from ..core.roles import TMD_ROLES
from .generation import (
    Cancelled,
    Generation,
    GenerationSettings,
    StopCheck,
    softmax_over,
)
from .pool import Module, ModulePool, Residency

TMD_STAGES = TMD_ROLES
# tmd-gold-subq and tmd-gold-facts are diagnostic: the dataset's gold subquestions replace the
# Analyzer (and its gold facts the Informant), which shows how much of TMD's error each module causes.
# mc-gold-facts is mc with the gold facts before the question: can the model use perfect knowledge
# when it only has to score the options, without writing a reasoning?
SYSTEM_STAGES = {"tmd": TMD_STAGES, "drd": ("drd",), "mc": ("mc",),
                 "tmd-gold-subq": ("informant", "reasoner"), "tmd-gold-facts": ("reasoner",),
                 "mc-gold-facts": ("mc",)}
SYSTEMS = tuple(SYSTEM_STAGES)
GOLD_SYSTEMS = ("tmd-gold-subq", "tmd-gold-facts", "mc-gold-facts")
GOLD_FACT_SYSTEMS = ("tmd-gold-facts", "mc-gold-facts")
MC_SYSTEMS = tuple(s for s, stages in SYSTEM_STAGES.items() if stages == ("mc",))  # no reasoning


def system_roles(system: str) -> tuple[str, ...]:
    """The bundle roles whose models a system runs (mc scores with DRD's model)."""
    return tuple("drd" if stage == "mc" else stage for stage in SYSTEM_STAGES[system])


@dataclass(frozen=True)
class ModuleSet:
    """Which GGUF plays each role. Zero-shot: the same base file for all of them."""
    analyzer: ModelRef
    informant: ModelRef
    reasoner: ModelRef
    drd: ModelRef
    label: str = ""  # for UIs and reports, e.g. "my-bundle (q8_0)"

    @classmethod
    def single(cls, model: ModelRef) -> "ModuleSet":
        return cls(model, model, model, model, label=f"{model.name} (zero-shot)")

    def for_stage(self, stage: str) -> ModelRef:
        return self.drd if stage == "mc" else getattr(self, stage)  # mc scores with DRD's model


@dataclass
class StageRecord:
    """One stage's work on one question (load/peak figures belong to the module's whole residency)."""
    stage: str
    model: str
    file_type: str
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    load_seconds: float = 0.0
    loaded_by: str = "load"  # load | reuse | swap (LoRA adapter switched on a resident base)
    peak_rss_mb: float = 0.0
    finish_reasons: list[str] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "tokens_per_second": round(self.tokens_per_second, 2)}


@dataclass
class Trace:
    question: Question
    system: str
    subquestions: list[str] = field(default_factory=list)
    knowledge: list[str] = field(default_factory=list)
    reasoning: str = ""
    answer: str | None = None           # the headline answer (scored when the module was scored)
    stated_answer: str | None = None    # the letter the reasoning itself states, if any
    answer_source: str | None = None    # stated (the stated letter is the answer) | scored
    option_probs: dict[str, float] = field(default_factory=dict)
    answer_norm: str | None = None      # mc only: the length-normalized choice
    raw: dict = field(default_factory=dict)
    stages: dict[str, StageRecord] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def correct(self) -> bool | None:
        return None if self.question.answer is None else self.answer == self.question.answer

    @property
    def seconds(self) -> float:
        return sum(s.seconds + s.load_seconds for s in self.stages.values())

    def to_dict(self) -> dict:
        return {"id": self.question.id, "system": self.system, "question": self.question.to_dict(),
                "subquestions": self.subquestions, "knowledge": self.knowledge,
                "reasoning": self.reasoning, "answer": self.answer, "gold": self.question.answer,
                "correct": self.correct, "stated_answer": self.stated_answer,
                "answer_source": self.answer_source,
                "option_probs": {k: round(v, 6) for k, v in self.option_probs.items()},
                **({"answer_norm": self.answer_norm} if self.answer_norm is not None else {}),
                "raw": self.raw, "warnings": self.warnings,
                "stages": {k: v.to_dict() for k, v in self.stages.items()}}


class Events:
    """What a run reports, in this order per stage: stage_started, module_ready, then per question
    (index into the batch) generation_started / text... / generation_finished for each call (the
    informant makes one per subquestion; mc generates nothing) and step_done; last stage_finished.
    Every method is optional to override; they run on the pipeline's thread."""

    def stage_started(self, stage: str, model: ModelRef) -> None: ...
    def module_ready(self, stage: str, residency: Residency) -> None: ...
    def stage_finished(self, stage: str, residency: Residency) -> None: ...
    def generation_started(self, stage: str, index: int, call: int) -> None: ...
    def text(self, stage: str, index: int, piece: str) -> None: ...
    def generation_finished(self, stage: str, index: int, call: int, generation: Generation) -> None:
        """`generation` holds the prompt's token ids as the module saw them, the max_tokens it ran
        under, the text, token counts, seconds and finish reason."""
    def step_done(self, stage: str, index: int, trace: Trace) -> None: ...


def run(system: str, questions: list[Question], modules: ModuleSet,
        settings: GenerationSettings | None = None, events: Events | None = None, *,
        pool: ModulePool | None = None, should_stop: StopCheck | None = None,
        dropped: Dropped | None = None) -> list[Trace]:
    if system not in SYSTEMS:
        raise ValueError(f"system {system!r}: expected one of {SYSTEMS}")
    settings = settings or (pool.settings if pool else GenerationSettings())
    events = events or Events()
    traces = [Trace(q, system) for q in questions]
    stages = SYSTEM_STAGES[system]
    if system in GOLD_SYSTEMS:
        _fill_gold(traces, with_knowledge=system in GOLD_FACT_SYSTEMS)
    own_pool = pool is None
    pool = pool or ModulePool(settings)
    try:
        for stage in stages:
            _check(should_stop)
            _run_stage(stage, traces, modules.for_stage(stage), settings, events, pool, should_stop,
                       dropped or _keep_all)
    finally:
        if own_pool:
            pool.close_all()
    return traces


def _fill_gold(traces: list[Trace], with_knowledge: bool) -> None:
    for trace in traces:
        gold = gold_knowledge(trace.question)
        if gold is None:
            raise TmdError(f"question {trace.question.id}: no gold decomposition and facts "
                           "(the *-gold-* systems need StrategyQA's annotations)")
        trace.subquestions = gold[0]
        if with_knowledge:
            trace.knowledge = gold[1]


Dropped = Callable[[int], bool]  # index of a question in the batch -> stop working on it


def _keep_all(index: int) -> bool:
    return False


def _check(should_stop: StopCheck | None) -> None:
    if should_stop and should_stop():
        raise Cancelled()


def _run_stage(stage: str, traces: list[Trace], model: ModelRef, settings: GenerationSettings,
               events: Events, pool: ModulePool, should_stop: StopCheck | None, dropped: Dropped) -> None:
    work = STAGE_WORK[stage]
    live = [i for i in range(len(traces)) if not dropped(i)]
    if not live or (stage == "informant" and not any(traces[i].subquestions for i in live)):
        return  # nothing to do: don't pay for loading the module
    events.stage_started(stage, model)
    with pool.use(stage, model) as (module, residency):
        events.module_ready(stage, residency)
        for index, trace in enumerate(traces):
            if (stage == "informant" and not trace.subquestions) or dropped(index):
                continue  # as when this question runs alone: no informant stage at all
            _check(should_stop)
            record = trace.stages[stage] = StageRecord(stage, model.name, module.file_type,
                                                       load_seconds=residency.load_seconds,
                                                       loaded_by=residency.how)
            stop = _question_stop(should_stop, dropped, index)
            try:
                work(module, trace, record, settings, _Emitter(events, stage, index, stop, settings))
            except Cancelled:
                if not dropped(index):
                    raise
                continue  # only this question was let go; the batch goes on
            events.step_done(stage, index, trace)
    for trace in traces:
        if stage in trace.stages:
            trace.stages[stage].peak_rss_mb = round(residency.peak_rss_mb, 1)
    events.stage_finished(stage, residency)


def _question_stop(should_stop: StopCheck | None, dropped: Dropped, index: int) -> StopCheck:
    return lambda: bool(should_stop and should_stop()) or dropped(index)


class _Emitter:
    """The token callback handed to a stage's work: forwards text to Events, announces the start
    and end of each generation (the informant makes one per subquestion), carries the stop check."""

    def __init__(self, events: Events, stage: str, index: int, should_stop: StopCheck | None,
                 settings: GenerationSettings):
        self.events, self.stage, self.index, self.should_stop = events, stage, index, should_stop
        self.settings = settings  # sampling for this run; a pooled module may outlive several runs

    def start(self, call: int) -> None:
        self.events.generation_started(self.stage, self.index, call)

    def finish(self, call: int, generation: Generation) -> None:
        self.events.generation_finished(self.stage, self.index, call, generation)

    def __call__(self, piece: str) -> None:
        self.events.text(self.stage, self.index, piece)


def _generate(module: Module, record: StageRecord, messages: list[dict], max_tokens: int,
              emit: _Emitter) -> Generation:
    call = record.calls
    emit.start(call)
    gen = module.generate(messages, max_tokens, on_text=emit, sampling=emit.settings,
                          should_stop=emit.should_stop)
    record.calls += 1
    record.prompt_tokens += gen.prompt_tokens
    record.completion_tokens += gen.completion_tokens
    record.seconds += gen.seconds
    record.finish_reasons.append(gen.finish_reason)
    emit.finish(call, gen)
    return gen


def _analyze(module, trace, record, settings, emit) -> None:
    text = _generate(module, record, prompts.analyzer_messages(trace.question),
                     settings.max_tokens["analyzer"], emit).text
    trace.raw["analyzer"] = text
    trace.subquestions = parse_subquestions(text)


def _inform(module, trace, record, settings, emit) -> None:
    trace.raw["informant"] = []
    for subquestion in trace.subquestions:
        text = _generate(module, record, prompts.informant_messages(subquestion),
                         settings.max_tokens["informant"], emit).text
        trace.raw["informant"].append(text)
        trace.knowledge.append(text)


def _reason(module, trace, record, settings, emit) -> None:
    max_tokens = settings.max_tokens["reasoner"]
    knowledge = _fit_knowledge(module, trace, max_tokens)
    messages = prompts.reasoner_messages(trace.question, trace.subquestions, knowledge)
    gen = _generate(module, record, messages, max_tokens, emit)
    trace.raw["reasoner"] = gen.text
    _answer(module, trace, record, gen)


def _direct(module, trace, record, settings, emit) -> None:
    gen = _generate(module, record, prompts.drd_messages(trace.question), settings.max_tokens["drd"], emit)
    trace.raw["drd"] = gen.text
    _answer(module, trace, record, gen)


def _answer(module: Module, trace: Trace, record: StageRecord, gen) -> None:
    """The stated letter (parsed), and the scored one: the option the module itself finds most
    probable after "Final Answer:" appended to its reasoning, cut at its own first final answer line.
    The scored letter is the answer, so every question lands on an option."""
    options = trace.question.options
    trace.reasoning = gen.text
    trace.stated_answer = parse_answer(gen.text, options)
    started = time.perf_counter()
    trace.option_probs = module.option_probabilities(gen.prompt_ids, reasoning_before_answer(gen.text),
                                                     list(options))
    record.seconds += time.perf_counter() - started
    trace.answer = max(trace.option_probs, key=trace.option_probs.get)
    trace.answer_source = "stated" if trace.stated_answer == trace.answer else "scored"
    # Whether the generated reasoning helps: the same module's answer right after its prompt.
    # After the scored answer, so the KV cache still holds the prompt and only the cue is new.
    started = time.perf_counter()
    before = module.option_probabilities_before_reasoning(gen.prompt_ids, list(options))
    record.seconds += time.perf_counter() - started
    trace.raw["option_probs_before_reasoning"] = {k: round(v, 6) for k, v in before.items()}


def _multiple_choice(module, trace, record, settings, emit) -> None:
    """lm-evaluation-harness's multiple choice: log-likelihood of each option's text after the
    question (and the gold facts, for mc-gold-facts); `answer` is the highest sum (acc), `answer_norm`
    the highest per character (acc_norm)."""
    q = trace.question
    started = time.perf_counter()
    scores = module.continuation_logprobs(prompts.mc_context(q, trace.knowledge),
                                          [f" {text}" for text in q.options.values()])
    record.seconds += time.perf_counter() - started
    record.calls += 1
    letters = list(q.options)
    sums = dict(zip(letters, (total for total, _ in scores)))
    per_char = {k: sums[k] / max(1, len(f" {q.options[k]}")) for k in letters}
    trace.raw["mc"] = {k: {"logprob": round(sums[k], 5), "tokens": n} for k, (_, n) in zip(letters, scores)}
    trace.answer = max(sums, key=sums.get)
    trace.answer_norm = max(per_char, key=per_char.get)
    trace.answer_source = "scored"
    trace.option_probs = softmax_over(sums)


def reasoning_before_answer(text: str) -> str:
    """The reasoning up to its first "Final Answer" line (the answer is read from the model there)."""
    match = _FINAL_LINE.search(text)
    return (text[:match.start()] if match else text).rstrip()


def _fit_knowledge(module: Module, trace: Trace, max_tokens: int) -> list[str]:
    """Shorten the longest knowledge snippet until the Reasoner prompt leaves room to answer."""
    knowledge = list(trace.knowledge)
    while True:
        messages = prompts.reasoner_messages(trace.question, trace.subquestions, knowledge)
        prompt_tokens = len(module.tokenize(module.render(messages)))
        if module.room_for(prompt_tokens) >= max_tokens or not any(knowledge):
            break
        longest = max(range(len(knowledge)), key=lambda i: len(knowledge[i]))
        knowledge[longest] = knowledge[longest][: len(knowledge[longest]) * 2 // 3]
    if knowledge != trace.knowledge:
        trace.warnings.append(
            f"knowledge truncated from {sum(map(len, trace.knowledge))} to "
            f"{sum(map(len, knowledge))} characters to fit the {module.settings.n_ctx}-token context")
    return knowledge


_FINAL_LINE = re.compile(r"final\s+answer", re.I)

STAGE_WORK = {"analyzer": _analyze, "informant": _inform, "reasoner": _reason, "drd": _direct,
              "mc": _multiple_choice}
