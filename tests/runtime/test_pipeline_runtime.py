"""The pipeline over a module pool on the real embedded model: stage batching gives the same
traces as question-by-question, events arrive in order, and a stop between stages is clean."""

import pytest

from runtime_helpers import small_settings
from tmd_local.core.demo import DEMO_QUESTIONS
from tmd_local.runtime.generation import Cancelled, ModuleRef
from tmd_local.runtime.pipeline import Events, ModuleSet, run
from tmd_local.runtime.pool import ModulePool

pytestmark = pytest.mark.slow
TIMING = ("seconds", "load_seconds", "peak_rss_mb", "tokens_per_second", "loaded_by")


def comparable(trace) -> dict:
    d = trace.to_dict()
    d["stages"] = {k: {f: v for f, v in s.items() if f not in TIMING} for k, s in d["stages"].items()}
    return d


def test_stage_batched_traces_equal_per_question_traces(embedded_model):
    settings = small_settings()
    modules = ModuleSet.single(embedded_model)
    batched_pool, single_pool = ModulePool(settings), ModulePool(settings)
    batched = run("tmd", DEMO_QUESTIONS, modules, settings, pool=batched_pool)
    per_question = [run("tmd", [q], modules, settings, pool=single_pool)[0] for q in DEMO_QUESTIONS]
    assert [comparable(t) for t in batched] == [comparable(t) for t in per_question]
    assert any(t.subquestions for t in batched) and all(t.reasoning for t in batched)
    # one load per stage for the batch; one per stage per question otherwise
    assert len(batched_pool.history) == len(batched[0].stages) if batched[0].subquestions else True
    assert len(batched_pool.history) < len(single_pool.history)


class Recorder(Events):
    def __init__(self, stop_after: str | None = None):
        self.log, self.stop_after, self.stop = [], stop_after, False

    def stage_started(self, stage, model):
        self.log.append(("started", stage))

    def module_ready(self, stage, residency):
        self.log.append(("ready", stage, residency.how))

    def generation_started(self, stage, index, call):
        self.log.append(("generation", stage, call))

    def text(self, stage, index, piece):
        if self.log[-1] != ("text", stage):
            self.log.append(("text", stage))

    def step_done(self, stage, index, trace):
        self.log.append(("done", stage))

    def stage_finished(self, stage, residency):
        self.log.append(("finished", stage))
        self.stop = stage == self.stop_after


def test_adapter_bundle_runs_with_swaps_and_ordered_events(embedded_model, loras):
    refs = {role: ModuleRef(embedded_model.path, role, adapter=loras["zero"] if role != "reasoner" else None)
            for role in ("analyzer", "informant", "reasoner", "drd")}
    events = Recorder()
    with ModulePool(small_settings(), keep_loaded=True) as pool:
        trace = run("tmd", [DEMO_QUESTIONS[2]], ModuleSet(**refs), events=events, pool=pool)[0]
    assert trace.reasoning and trace.answer in (None, *DEMO_QUESTIONS[2].options)
    hows = [r.how for r in pool.history]
    assert hows[0] == "load" and hows[-1] == "swap"  # reasoner: adapter cleared on the resident base
    assert events.log[:4] == [("started", "analyzer"), ("ready", "analyzer", "load"),
                              ("generation", "analyzer", 0), ("text", "analyzer")]
    assert events.log[-2:] == [("done", "reasoner"), ("finished", "reasoner")]
    informant_calls = [e for e in events.log if e[:2] == ("generation", "informant")]
    assert [e[2] for e in informant_calls] == list(range(len(trace.subquestions)))


def test_stop_between_stages_loads_nothing_more(embedded_model):
    events = Recorder(stop_after="analyzer")
    pool = ModulePool(small_settings())
    with pytest.raises(Cancelled):
        run("tmd", [DEMO_QUESTIONS[0]], ModuleSet.single(embedded_model), events=events, pool=pool,
            should_stop=lambda: events.stop)
    assert [r.stage for r in pool.history] == ["analyzer"] and pool.resident == []
