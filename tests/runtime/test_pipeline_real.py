"""The whole zero-shot chain on the real embedded GGUF (llama.cpp, no mocks)."""

import pytest

from tmd_local.core.demo import DEMO_QUESTIONS
from tmd_local.runtime.generation import GenerationSettings
from tmd_local.runtime.pipeline import ModuleSet, _fit_knowledge, run
from tmd_local.core.records import Question
from tmd_local.runtime.runner import LoadedModule

pytestmark = pytest.mark.slow


def by_id(qid):
    return next(q for q in DEMO_QUESTIONS if q.id == qid)


def test_tmd_chain_has_every_part(embedded_model):
    question = by_id("demo-plants")  # greedy decoding decomposes this one into subquestions
    trace = run("tmd", [question], ModuleSet.single(embedded_model))[0]

    assert trace.raw["analyzer"] and trace.subquestions
    assert len(trace.knowledge) == len(trace.subquestions) == len(trace.raw["informant"])
    assert all(k.strip() for k in trace.knowledge)
    assert trace.reasoning.strip() and trace.answer in question.options
    assert list(trace.stages) == ["analyzer", "informant", "reasoner"]
    for stage in trace.stages.values():
        assert stage.calls >= 1 and stage.prompt_tokens > 50 and stage.completion_tokens > 0
        assert stage.file_type == "q4_1" and stage.peak_rss_mb > 50 and stage.load_seconds > 0
    assert trace.stages["informant"].calls == len(trace.subquestions)
    assert trace.to_dict()["correct"] in (True, False)


def test_drd_runs_one_module(embedded_model):
    question = by_id("demo-penguin")
    trace = run("drd", [question], ModuleSet.single(embedded_model))[0]
    assert list(trace.stages) == ["drd"] and trace.reasoning.strip()
    assert trace.answer in (None, "A", "B")


def test_reasoner_knowledge_is_truncated_to_fit_a_small_context(embedded_model):
    from tmd_local.runtime.pipeline import Trace

    settings = GenerationSettings(n_ctx=512)
    question = Question("long", "Is fog likely near a marsh?", {"A": "yes", "B": "no"}, "A")
    trace = Trace(question, "tmd", subquestions=["What is fog?", "What is a marsh?"],
                  knowledge=["Fog is water droplets. " * 150, "A marsh is wet land. " * 40])
    module = LoadedModule(embedded_model, settings)
    try:
        knowledge = _fit_knowledge(module, trace, max_tokens=200)
    finally:
        module.close()
    assert sum(map(len, knowledge)) < sum(map(len, trace.knowledge))
    assert trace.warnings and "knowledge truncated" in trace.warnings[0]


def test_module_is_closed_after_each_stage(embedded_model):
    """RSS after closing a module falls back near where it was before loading it."""
    from tmd_local.runtime.pool import load_module

    with load_module("analyzer", embedded_model, GenerationSettings()) as (module, residency):
        module.generate([{"role": "user", "content": "Say hi."}], max_tokens=8)
    assert residency.peak_rss_mb - residency.rss_after_close_mb > 40  # the weights really went away
