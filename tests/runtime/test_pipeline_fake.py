"""The pipeline's logic on the scripted fake module (tmd_local.runtime.fake): the exact prompts each stage
builds, how answers are read and scored, batching, events, cancellation and the prefix cache.
No GGUF is loaded; test_pipeline_real.py runs the same chain on the real model."""

import pytest

from tmd_local.core import prompts
from tmd_local.core.errors import TmdError
from tmd_local.runtime.fake import FakeLoader, ScriptExhausted
from tmd_local.runtime.generation import Cancelled, GenerationSettings, ModuleRef
from tmd_local.runtime.pipeline import Events, ModuleSet, Trace, run
from tmd_local.core.records import Question

PLANTS = Question("plants", "Which of these do plants need to make their own food?",
                  {"A": "moonlight", "B": "sunlight", "C": "sand", "D": "salt water"}, "B")
PENGUIN = Question("penguin", "Could a penguin survive a day in the Sahara?", {"A": "yes", "B": "no"}, "B")
SQA = Question("sqa", "Is the sun a star?", {"A": "yes", "B": "no"}, "A",
               extra={"decomposition": ["What is the sun?", "Is #1 a star?"],
                      "facts": ["The sun is a star.", "Stars are balls of plasma."]})
ANALYZER_REPLY = "1. What do plants use to make food?\n2. Where does that come from?"


def settings(**max_tokens) -> GenerationSettings:
    s = GenerationSettings(n_ctx=2048, n_threads=1)
    s.max_tokens = {**s.max_tokens, **max_tokens}
    return s


def by_role(**replies):
    """A reply function answering each role's prompts from its own list, in order."""
    queues = {role: list(texts) for role, texts in replies.items()}
    return lambda prompt: queues[prompt.model].pop(0)


def test_tmd_sends_each_stage_the_prompt_built_from_the_previous_one():
    loader = FakeLoader(by_role(analyzer=[ANALYZER_REPLY], informant=["Sunlight.", "The sun."],
                                reasoner=["1. Plants use sunlight.\nFinal Answer: B"]),
                        option_probs=[{"A": 0.1, "B": 0.6, "C": 0.2, "D": 0.1}])
    trace = run("tmd", [PLANTS], loader.module_set(), settings(), pool=loader.pool())[0]

    assert [p.model for p in loader.prompts] == ["analyzer", "informant", "informant", "reasoner"]
    assert loader.prompts[0].messages == prompts.analyzer_messages(PLANTS)
    subquestions = ["What do plants use to make food?", "Where does that come from?"]
    assert trace.subquestions == subquestions
    assert [p.messages for p in loader.prompts_for("informant")] == [prompts.informant_messages(s)
                                                                     for s in subquestions]
    assert trace.knowledge == ["Sunlight.", "The sun."]
    assert loader.prompts[3].messages == prompts.reasoner_messages(PLANTS, subquestions, trace.knowledge)
    assert "1. What do plants use to make food?\nKnowledge: Sunlight." in loader.prompts[3].text
    assert (trace.stated_answer, trace.answer, trace.answer_source, trace.correct) == ("B", "B", "stated", True)
    assert trace.raw == {"analyzer": ANALYZER_REPLY, "informant": ["Sunlight.", "The sun."],
                         "reasoner": "1. Plants use sunlight.\nFinal Answer: B",
                         "option_probs_before_reasoning": {"A": 0.25, "B": 0.25, "C": 0.25, "D": 0.25}}
    assert loader.loads == ["analyzer", "informant", "reasoner"] and loader.open_modules == []


def test_the_answer_is_scored_on_the_reasoning_before_its_final_answer_line():
    loader = FakeLoader(["Plants need light.\nFinal Answer: A\nmore text"],
                        option_probs=[{"A": 0.2, "B": 0.5, "C": 0.2, "D": 0.1}])
    trace = run("drd", [PLANTS], loader.module_set(), settings(), pool=loader.pool())[0]
    scoring = loader.scorings[0]
    assert (scoring.model, scoring.kind, scoring.context) == ("drd", "options", "Plants need light.")
    assert scoring.choices == ["A", "B", "C", "D"]
    # the stated letter loses to the scored one, which is the headline answer
    assert (trace.stated_answer, trace.answer, trace.answer_source) == ("A", "B", "scored")
    assert trace.option_probs == {"A": 0.2, "B": 0.5, "C": 0.2, "D": 0.1}
    assert loader.prompts[0].messages == prompts.drd_messages(PLANTS)


def test_the_answer_before_reasoning_is_recorded_beside_the_scored_one():
    loader = FakeLoader(["Plants need light.\nFinal Answer: B"], option_probs=[{"A": 0.2, "B": 0.8}],
                        probs_before_reasoning=[{"A": 0.7, "B": 0.3}])
    trace = run("drd", [PENGUIN], loader.module_set(), settings(), pool=loader.pool())[0]
    assert trace.answer == "B" and trace.raw["option_probs_before_reasoning"] == {"A": 0.7, "B": 0.3}


def test_reasoning_without_an_answer_line_still_lands_on_an_option():
    loader = FakeLoader(["I am not sure."], option_probs=[{"A": 0.3, "B": 0.7}])
    trace = run("drd", [PENGUIN], loader.module_set(), settings(), pool=loader.pool())[0]
    assert trace.stated_answer is None and (trace.answer, trace.answer_source) == ("B", "scored")
    assert trace.to_dict()["correct"] is True


def test_no_decomposition_skips_the_informant_without_loading_it():
    loader = FakeLoader(["No decomposition", "Final Answer: B"])
    trace = run("tmd", [PENGUIN], loader.module_set(), settings(), pool=loader.pool())[0]
    assert trace.subquestions == [] and list(trace.stages) == ["analyzer", "reasoner"]
    assert loader.loads == ["analyzer", "reasoner"]
    assert "None (the question needs no decomposition)." in loader.prompts[1].text


def test_mc_scores_each_options_text_after_the_plain_context():
    # sums: A -2, B -1.2; per character of " yes" / " no": A -0.5, B -0.4
    loader = FakeLoader(logprobs=[[(-2.0, 1), (-1.2, 1)]])
    trace = run("mc", [PENGUIN], loader.module_set(), settings(), pool=loader.pool())[0]
    scoring = loader.scorings[0]
    assert (scoring.model, scoring.kind) == ("drd", "continuations")  # mc scores with DRD's model
    assert scoring.context == prompts.mc_context(PENGUIN) and scoring.choices == [" yes", " no"]
    assert loader.prompts == []  # nothing generated
    assert (trace.answer, trace.answer_norm, trace.answer_source) == ("B", "B", "scored")
    assert trace.raw["mc"] == {"A": {"logprob": -2.0, "tokens": 1}, "B": {"logprob": -1.2, "tokens": 1}}
    assert trace.option_probs["B"] > trace.option_probs["A"]
    assert trace.stages["mc"].calls == 1


def test_mc_length_normalized_choice_can_differ_from_the_sum():
    q = Question("long", "Pick one.", {"A": "a very long option text", "B": "no"}, "A")
    loader = FakeLoader(logprobs=[[(-6.0, 5), (-2.0, 1)]])
    trace = run("mc", [q], loader.module_set(), settings(), pool=loader.pool())[0]
    assert (trace.answer, trace.answer_norm) == ("B", "A")  # -6/24 per char beats -2/3


def test_gold_subquestions_replace_the_analyzer():
    loader = FakeLoader(by_role(informant=["Sun facts.", "Star facts."], reasoner=["Final Answer: A"]))
    trace = run("tmd-gold-subq", [SQA], loader.module_set(), settings(), pool=loader.pool())[0]
    assert loader.loads == ["informant", "reasoner"]
    assert trace.subquestions == ["What is the sun?", "Is the answer to subquestion 1 a star?"]
    assert [p.messages for p in loader.prompts_for("informant")] == [
        prompts.informant_messages(s) for s in trace.subquestions]
    assert trace.knowledge == ["Sun facts.", "Star facts."] and trace.answer == "A"


def test_gold_facts_replace_analyzer_and_informant():
    loader = FakeLoader(["1. The sun is a star.\nFinal Answer: A"])
    trace = run("tmd-gold-facts", [SQA], loader.module_set(), settings(), pool=loader.pool())[0]
    assert loader.loads == ["reasoner"] and list(trace.stages) == ["reasoner"]
    assert "The sun is a star." in " ".join(trace.knowledge)
    assert loader.prompts[0].messages == prompts.reasoner_messages(SQA, trace.subquestions, trace.knowledge)


def test_mc_gold_facts_scores_the_options_after_the_gold_facts():
    loader = FakeLoader(logprobs=[[(-0.5, 1), (-3.0, 1)]])
    trace = run("mc-gold-facts", [SQA], loader.module_set(), settings(), pool=loader.pool())[0]
    context = loader.scorings[0].context
    assert context.startswith("Facts: The sun is a star.") and "Stars are balls of plasma." in context
    assert context.endswith(prompts.mc_context(SQA)) and loader.prompts == []
    assert (trace.answer, trace.answer_norm) == ("A", "A") and trace.knowledge
    assert prompts.mc_context(SQA, ["  ", ""]) == prompts.mc_context(SQA)  # no facts, no Facts line


def test_gold_systems_refuse_questions_without_annotations():
    loader = FakeLoader()
    with pytest.raises(TmdError, match="no gold decomposition"):
        run("tmd-gold-subq", [PENGUIN], loader.module_set(), settings(), pool=loader.pool())
    assert loader.loads == []


def test_unknown_system_is_refused():
    with pytest.raises(ValueError, match="expected one of"):
        run("cot", [PENGUIN], FakeLoader.module_set(), settings(), pool=FakeLoader().pool())


TIMING = ("seconds", "peak_rss_mb", "tokens_per_second")


def comparable(trace: Trace) -> dict:
    d = trace.to_dict()
    d["stages"] = {k: {f: v for f, v in s.items() if f not in TIMING} for k, s in d["stages"].items()}
    return d


def test_a_batch_loads_each_module_once_and_matches_question_by_question():
    def reply(prompt):
        if prompt.model == "analyzer":
            return "1. Is it hot?" if "Sahara" in prompt.text else "No decomposition"
        return "It is hot." if prompt.model == "informant" else "Final Answer: B"

    questions = [PENGUIN, PLANTS]
    batched_loader, single_loader = FakeLoader(reply), FakeLoader(reply)
    batched = run("tmd", questions, batched_loader.module_set(), settings(), pool=batched_loader.pool())
    single = [run("tmd", [q], single_loader.module_set(), settings(), pool=single_loader.pool())[0]
              for q in questions]
    assert [comparable(t) for t in batched] == [comparable(t) for t in single]
    assert batched_loader.loads == ["analyzer", "informant", "reasoner"]
    assert single_loader.loads == ["analyzer", "informant", "reasoner", "analyzer", "reasoner"]
    assert [p.model for p in batched_loader.prompts] == ["analyzer", "analyzer", "informant",
                                                         "reasoner", "reasoner"]


def test_stage_records_count_calls_tokens_and_fake_seconds():
    loader = FakeLoader(["1. One?\n2. Two?", "a b c", "d e", "w x y z\nFinal Answer: A"],
                        seconds_per_token=0.5)
    trace = run("tmd", [PENGUIN], loader.module_set(), settings(), pool=loader.pool())[0]
    informant = trace.stages["informant"]
    assert (informant.calls, informant.completion_tokens, informant.seconds) == (2, 5, 2.5)
    assert informant.prompt_tokens == sum(len(p.prompt_ids) for p in loader.prompts_for("informant"))
    assert informant.finish_reasons == ["stop", "stop"] and informant.tokens_per_second == 2.0
    assert (informant.file_type, informant.loaded_by) == ("fake", "load")


def test_max_tokens_cuts_the_reply_and_says_length():
    loader = FakeLoader(["one two three four five six"])
    trace = run("drd", [PENGUIN], loader.module_set(), settings(drd=3), pool=loader.pool())[0]
    assert trace.reasoning == "one two three"
    assert trace.stages["drd"].finish_reasons == ["length"] and trace.stages["drd"].completion_tokens == 3
    assert loader.prompts[0].max_tokens == 3


def test_a_prompt_that_leaves_no_room_is_an_error():
    loader = FakeLoader(["never sent"])
    small = GenerationSettings(n_ctx=64, n_threads=1)
    with pytest.raises(TmdError, match="does not fit the context"):
        run("drd", [PENGUIN], loader.module_set(), small, pool=loader.pool(small))


def test_long_knowledge_is_cut_to_fit_the_reasoner_context():
    long = "word " * 600
    loader = FakeLoader(by_role(analyzer=["1. Why?"], informant=[long], reasoner=["Final Answer: A"]))
    s = GenerationSettings(n_ctx=512, n_threads=1)
    trace = run("tmd", [PENGUIN], loader.module_set(), s, pool=loader.pool(s))[0]
    sent = loader.prompts_for("reasoner")[0]
    assert len(sent.prompt_ids) + s.max_tokens["reasoner"] <= s.n_ctx
    assert trace.knowledge == [" ".join(["word"] * 128)]  # what the informant said, cut at its max_tokens
    assert trace.warnings and "knowledge truncated" in trace.warnings[0]


def test_the_prefix_cache_reuses_the_shared_start_of_a_roles_prompts():
    questions = [PENGUIN, Question("q2", "Could a camel survive a day in the Sahara?", {"A": "yes", "B": "no"})]
    for cache in (True, False):
        s = settings()
        s.prefix_cache = cache
        loader = FakeLoader(["Final Answer: A"] * 2)
        run("drd", questions, loader.module_set(), s, pool=loader.pool(s))
        first, second = loader.prompts
        assert first.reused_tokens == 0
        if cache:
            assert 50 < second.reused_tokens < len(second.prompt_ids)  # the instructions, not the question
        else:
            assert second.reused_tokens == 0


def test_too_many_calls_fail_loudly():
    loader = FakeLoader(["1. One?\n2. Two?", "only one informant reply"])
    with pytest.raises(ScriptExhausted, match="no scripted reply left"):
        run("tmd", [PENGUIN], loader.module_set(), settings(), pool=loader.pool())
    assert loader.open_modules == []  # the pool closed the module on the way out


class Recorder(Events):
    def __init__(self):
        self.log = []

    def stage_started(self, stage, model):
        self.log.append(("started", stage, model.name))

    def module_ready(self, stage, residency):
        self.log.append(("ready", stage, residency.how))

    def generation_started(self, stage, index, call):
        self.log.append(("generation", stage, index, call))

    def text(self, stage, index, piece):
        self.log.append(("text", stage, piece))

    def generation_finished(self, stage, index, call, generation):
        self.log.append(("generated", stage, index, call, generation.text, generation.max_tokens))

    def step_done(self, stage, index, trace):
        self.log.append(("done", stage, index))

    def stage_finished(self, stage, residency):
        self.log.append(("finished", stage))


def test_events_report_stages_tokens_and_finished_generations_in_order():
    loader = FakeLoader(by_role(analyzer=["1. Hot?\n2. Dry?"], informant=["Yes.", "Very."],
                                reasoner=["Too hot.\nFinal Answer: B"]))
    events = Recorder()
    run("tmd", [PENGUIN], loader.module_set(), settings(), events, pool=loader.pool())
    log = events.log
    assert log[:4] == [("started", "analyzer", "analyzer"), ("ready", "analyzer", "load"),
                       ("generation", "analyzer", 0, 0), ("text", "analyzer", "1.")]
    assert ("generated", "informant", 0, 1, "Very.", 128) in log
    informant = [e for e in log if e[1] == "informant" and e[0] in ("generation", "generated", "done")]
    assert informant == [("generation", "informant", 0, 0), ("generated", "informant", 0, 0, "Yes.", 128),
                         ("generation", "informant", 0, 1), ("generated", "informant", 0, 1, "Very.", 128),
                         ("done", "informant", 0)]
    texts = "".join(e[2] for e in log if e[:2] == ("text", "reasoner"))
    assert texts == "Too hot.\nFinal Answer: B"
    assert log[-2:] == [("done", "reasoner", 0), ("finished", "reasoner")]


def test_generation_finished_carries_what_a_benchmark_needs_to_replay_the_call():
    seen = []

    class Calls(Events):
        def generation_finished(self, stage, index, call, generation):
            seen.append((stage, generation))

    loader = FakeLoader(["a b c d"])
    run("drd", [PENGUIN], loader.module_set(), settings(drd=2), Calls(), pool=loader.pool())
    (stage, gen), = seen
    assert stage == "drd" and gen.prompt_ids == loader.prompts[0].prompt_ids
    assert (gen.max_tokens, gen.completion_tokens, gen.finish_reason, gen.text) == (2, 2, "length", "a b")


def test_stop_between_tokens_raises_cancelled_and_closes_the_module():
    loader = FakeLoader(["one two three four five"])
    pieces = []

    class StopAfterTwo(Events):
        def text(self, stage, index, piece):
            pieces.append(piece)

    with pytest.raises(Cancelled):
        run("drd", [PENGUIN], loader.module_set(), settings(), StopAfterTwo(), pool=loader.pool(),
            should_stop=lambda: len(pieces) >= 2)
    assert pieces == ["one", " two"] and loader.open_modules == []


def test_stop_between_stages_loads_nothing_more():
    loader = FakeLoader(["1. Hot?", "Yes."])
    events = Recorder()
    with pytest.raises(Cancelled):
        run("tmd", [PENGUIN], loader.module_set(), settings(), events, pool=loader.pool(),
            should_stop=lambda: ("finished", "analyzer") in events.log)
    assert loader.loads == ["analyzer"]


def test_a_dropped_question_leaves_the_rest_of_the_batch_running():
    loader = FakeLoader(["Final Answer: B"])
    traces = run("drd", [PENGUIN, PLANTS], loader.module_set(), settings(), pool=loader.pool(),
                 dropped=lambda index: index == 0)
    assert traces[0].stages == {} and traces[1].stated_answer == "B"
    assert len(loader.prompts) == 1 and "plants" in loader.prompts[0].text


def test_keep_loaded_reuses_one_file_and_swaps_adapters(tmp_path):
    base = tmp_path / "base.gguf"
    refs = {role: ModuleRef(base, role, adapter=tmp_path / f"{role}.lora.gguf" if role != "reasoner" else None)
            for role in ("analyzer", "informant", "reasoner", "drd")}
    loader = FakeLoader(["1. Hot?", "Yes.", "Final Answer: B"])
    with loader.pool(keep_loaded=True, verify=False) as pool:
        run("tmd", [PENGUIN], ModuleSet(**refs), settings(), pool=pool)
        assert [r.how for r in pool.history] == ["load", "swap", "swap"] and len(loader.open_modules) == 1
        assert {p.model for p in loader.prompts} == {"analyzer"}  # one module: the first role's load
    assert [p.adapter for p in loader.prompts] == ["analyzer.lora.gguf", "informant.lora.gguf", None]
    assert loader.open_modules == []


def test_a_module_over_the_memory_budget_is_refused_before_loading():
    from tmd_local.core.memory import MemoryBudget

    loader = FakeLoader(footprint_bytes=64 * 2**30)
    with pytest.raises(TmdError, match="drd"):
        run("drd", [PENGUIN], loader.module_set(), settings(),
            pool=loader.pool(budget=MemoryBudget.parse("1GB")))
    assert loader.loads == []


def test_trace_json_has_every_field_a_result_line_needs():
    loader = FakeLoader(["Final Answer: B"], option_probs=[{"A": 0.25, "B": 0.75}])
    record = run("drd", [PENGUIN], loader.module_set(), settings(), pool=loader.pool())[0].to_dict()
    assert record["answer"] == "B" and record["gold"] == "B" and record["correct"] is True
    assert record["option_probs"] == {"A": 0.25, "B": 0.75}
    assert record["stages"]["drd"]["model"] == "drd" and "answer_norm" not in record
    assert isinstance(Trace(PENGUIN, "drd").to_dict()["stages"], dict)
