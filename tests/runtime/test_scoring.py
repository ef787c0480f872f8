"""Answers read from the model on the real embedded GGUF: the scored option after the reasoning, the
mc baseline's log-likelihoods, the prefix cache (same tokens, fewer evaluated), the thread settings."""

import math
import os

import pytest

from runtime_helpers import small_settings
from tmd_local.core.demo import DEMO_QUESTIONS
from tmd_local.runtime.pipeline import ModuleSet, run
from tmd_local.runtime.pool import ModulePool
from tmd_local.runtime.runner import ANSWER_CUE, LoadedModule

pytestmark = pytest.mark.slow


def test_every_reasoning_answer_lands_on_an_option_with_probabilities(embedded_model):
    traces = run("drd", DEMO_QUESTIONS, ModuleSet.single(embedded_model), small_settings(drd=48))
    for trace in traces:
        probs = trace.option_probs
        assert set(probs) == set(trace.question.options) and math.isclose(sum(probs.values()), 1, rel_tol=1e-6)
        assert trace.answer == max(probs, key=probs.get)
        assert trace.answer_source == ("stated" if trace.stated_answer == trace.answer else "scored")
        record = trace.to_dict()
        assert record["option_probs"] and record["answer_source"] in ("stated", "scored")
        assert "stated_answer" in record


def test_scoring_reuses_the_kv_cache_of_prompt_and_reasoning(embedded_model):
    """Only the appended answer line is evaluated, not the prompt again; and the probabilities equal
    those of a module that evaluates everything from scratch (same logits up to float noise)."""
    q = DEMO_QUESTIONS[0]
    settings = small_settings(drd=40)
    module = LoadedModule(embedded_model, settings)
    evaluated = []
    original = module._llm.eval
    module._llm.eval = lambda tokens: (evaluated.append(len(tokens)), original(tokens))[1]
    try:
        from tmd_local.core import prompts

        gen = module.generate(prompts.drd_messages(q), 40)
        evaluated.clear()
        probs = module.option_probabilities(gen.prompt_ids, gen.text, list(q.options))
        assert sum(evaluated) <= len(module.tokenize(ANSWER_CUE)) + 3  # the cue (+ a retokenized edge)
        module._llm.reset()
        cold = module.option_probabilities(gen.prompt_ids, gen.text, list(q.options))
    finally:
        module.close()
    assert max(probs, key=probs.get) == max(cold, key=cold.get)
    assert all(abs(probs[k] - cold[k]) < 0.05 for k in probs)


def test_answer_before_reasoning_reads_the_cached_prompt_only(embedded_model):
    """The diagnostic answer (right after the prompt, no reasoning) evaluates only the cue after the
    reasoning's scoring, equals a from-scratch pass, and lands in the trace's raw record."""
    from tmd_local.core import prompts

    q = DEMO_QUESTIONS[2]
    module = LoadedModule(embedded_model, small_settings(drd=40))
    evaluated = []
    original = module._llm.eval
    module._llm.eval = lambda tokens: (evaluated.append(len(tokens)), original(tokens))[1]
    try:
        gen = module.generate(prompts.drd_messages(q), 40)
        module.option_probabilities(gen.prompt_ids, gen.text, list(q.options))
        evaluated.clear()
        before = module.option_probabilities_before_reasoning(gen.prompt_ids, list(q.options))
        assert sum(evaluated) <= len(module.tokenize(ANSWER_CUE)) + 1
        module._llm.reset()
        cold = module.option_probabilities_before_reasoning(gen.prompt_ids, list(q.options))
    finally:
        module.close()
    assert all(abs(before[k] - cold[k]) < 0.05 for k in before)
    trace = run("drd", [q], ModuleSet.single(embedded_model), small_settings(drd=40))[0]
    recorded = trace.to_dict()["raw"]["option_probs_before_reasoning"]
    assert set(recorded) == set(q.options) and math.isclose(sum(recorded.values()), 1, rel_tol=1e-4)
    assert all(abs(recorded[k] - cold[k]) < 0.05 for k in recorded)


def test_mc_log_likelihoods_match_a_full_teacher_forced_pass(embedded_model):
    """The mc system's per-option sums equal log-softmax sums read from one pass with all logits."""
    import numpy as np
    from llama_cpp import Llama

    q = DEMO_QUESTIONS[1]
    trace = run("mc", [q], ModuleSet.single(embedded_model), small_settings())[0]
    assert trace.answer in q.options and trace.answer_norm in q.options and trace.answer_source == "scored"
    llm = Llama(model_path=str(embedded_model.path), n_ctx=512, logits_all=True, verbose=False)
    try:
        context = f"Question: {q.question.strip()}\nAnswer:"
        n_context = len(llm.tokenize(context.encode(), add_bos=True, special=False))
        for letter, text in q.options.items():
            tokens = llm.tokenize((context + " " + text).encode(), add_bos=True, special=False)
            llm.reset()
            llm.eval(tokens)
            logits = np.array(llm.scores[:len(tokens)])
            logp = logits - logits.max(axis=1, keepdims=True)
            logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
            expected = sum(logp[i - 1, tokens[i]] for i in range(n_context, len(tokens)))
            assert trace.raw["mc"][letter]["logprob"] == pytest.approx(expected, abs=0.05)
            assert trace.raw["mc"][letter]["tokens"] == len(tokens) - n_context
    finally:
        llm.close()


def test_a_base_model_without_chat_template_runs_mc_and_refuses_prompts(embedded_model, tmp_path):
    """lm-evaluation-harness scores base models that have no chat template: so does mc; a system
    that needs prompts stops at its first one with a one-line error."""
    import subprocess
    import sys

    from tmd_local.core.errors import TmdError
    from tmd_local.runtime.generation import ModuleRef

    plain = tmp_path / "no-template.gguf"
    subprocess.run([sys.executable, "-m", "gguf.scripts.gguf_new_metadata", "--force", "--remove-metadata",
                    "tokenizer.chat_template", str(embedded_model.path), str(plain)], check=True,
                   capture_output=True)
    base = ModuleSet.single(ModuleRef(plain, "no-template"))
    with_template = run("mc", DEMO_QUESTIONS[:1], ModuleSet.single(embedded_model), small_settings())[0]
    without = run("mc", DEMO_QUESTIONS[:1], base, small_settings())[0]
    assert without.raw["mc"] == with_template.raw["mc"]  # the template plays no part in mc
    with pytest.raises(TmdError, match="no tokenizer.chat_template.*only mc and mc-gold-facts"):
        run("drd", DEMO_QUESTIONS[:1], base, small_settings())


@pytest.mark.parametrize("system", ["drd", "tmd"])
def test_prefix_cache_gives_identical_tokens_on_30_questions(embedded_model, data_dir, system):
    """Keeping each resident module's KV cache across questions changes no generated token."""
    from tmd_local.core.datasets import load_questions

    questions, _ = load_questions("strategyqa", "test", data_dir=data_dir, limit=30)
    modules = ModuleSet.single(embedded_model)
    outputs = {}
    for cache in (True, False):
        settings = small_settings(analyzer=24, informant=16, reasoner=16, drd=16)
        settings.prefix_cache = cache
        traces = run(system, questions, modules, settings, pool=ModulePool(settings))
        outputs[cache] = [(t.raw, t.subquestions, t.stated_answer) for t in traces]
    assert outputs[True] == outputs[False]


def test_threads_follow_the_setting_and_openmp_threads_sleep(embedded_model):
    import tmd_local  # noqa: F401  (sets the wait policy before llama.cpp loads)

    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    settings = small_settings()
    settings.n_threads = 1
    module = LoadedModule(embedded_model, settings)
    try:
        assert module._llm.context_params.n_threads == 1
        assert module._llm.context_params.n_threads_batch == 1  # not one per core
    finally:
        module.close()
