"""`tmd eval`'s logic on the scripted fake module: results written question by question, resume
after a crash or a finished run, which settings start a new configuration, and how accuracy,
stated accuracy, mc's normalized accuracy and unscored questions are counted."""

import json

import pytest

from tmd_local.core.errors import TmdError
from tmd_local.evaluation.evaluate import config_key, evaluate, run_config
from tmd_local.runtime.fake import FakeLoader
from tmd_local.runtime.generation import GenerationSettings
from tmd_local.runtime.pipeline import Events, ModuleSet
from tmd_local.core.prompts import PROMPT_VERSION
from tmd_local.core.records import Question


def questions(n: int, gold: str | None = "A") -> list[Question]:
    return [Question(f"q{i}", f"Is {i} even?", {"A": "yes", "B": "no"}, gold) for i in range(n)]


def settings(**changes) -> GenerationSettings:
    s = GenerationSettings(n_threads=1)
    for name, value in changes.items():
        setattr(s, name, value)
    return s


def config(system: str = "drd", s: GenerationSettings | None = None) -> dict:
    """What run_config writes, with the fake roles' names standing in for their files' sha256."""
    roles = ("drd",) if system in ("drd", "mc") else ("analyzer", "informant", "reasoner")
    return {"system": system, "dataset": "obqa", "split": "test", "teacher": "none",
            "models": {role: {"name": role, "sha256": role} for role in roles},
            "settings": (s or settings()).to_dict(), "prompt_version": PROMPT_VERSION, "tmd_version": "test"}


def answers(*letters):
    """DRD replies stating these letters, scored the same way."""
    return ([f"Reasoning.\nFinal Answer: {x}" for x in letters],
            [{"A": 0.9, "B": 0.1} if x == "A" else {"A": 0.1, "B": 0.9} for x in letters])


def evaluate_fake(loader, qs, out, system="drd", s=None, **kw):
    s = s or settings()
    return evaluate(qs, system, loader.module_set(), s, config(system, s), out, pool=loader.pool(s), **kw)


def lines(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_results_are_written_one_line_per_question_with_the_config(tmp_path):
    replies, probs = answers("A", "B", "A")
    loader = FakeLoader(replies, option_probs=probs)
    seen = []
    summary = evaluate_fake(loader, questions(3), tmp_path / "r.jsonl", on_question=seen.append)
    records = lines(tmp_path / "r.jsonl")
    assert [r["id"] for r in records] == ["q0", "q1", "q2"] == [t.question.id for t in seen]
    assert {r["config_key"] for r in records} == {config_key(config())}
    assert [r["answer"] for r in records] == ["A", "B", "A"]
    assert [r["correct"] for r in records] == [True, False, True]
    assert all(r["wall_seconds"] >= 0 and r["stages"]["drd"]["calls"] == 1 for r in records)
    assert (summary.n, summary.correct, summary.unparsed, summary.stated_correct) == (3, 2, 0, 2)
    d = summary.to_dict()
    assert d["accuracy"] == round(2 / 3, 4) and d["ci95"][0] < d["accuracy"] < d["ci95"][1]
    assert d["results"] == str(tmp_path / "r.jsonl") and "accuracy_norm" not in d


def test_a_finished_run_resumes_without_asking_anything(tmp_path):
    replies, probs = answers("A", "B")
    first = evaluate_fake(FakeLoader(replies, option_probs=probs), questions(2), tmp_path / "r.jsonl")
    idle = FakeLoader()  # any generation would fail: its script is empty
    again = evaluate_fake(idle, questions(2), tmp_path / "r.jsonl")
    assert idle.loads == [] and len(lines(tmp_path / "r.jsonl")) == 2
    assert again.to_dict() == first.to_dict()


def test_a_crash_mid_run_resumes_where_it_stopped(tmp_path):
    out = tmp_path / "r.jsonl"

    def crash_on_q2(prompt):
        if "Is 2 even?" in prompt.text:
            raise RuntimeError("power cut")
        return "Final Answer: A"

    with pytest.raises(RuntimeError, match="power cut"):
        evaluate_fake(FakeLoader(crash_on_q2), questions(4), out, batch_size=1)
    assert [r["id"] for r in lines(out)] == ["q0", "q1"]

    loader = FakeLoader(["Final Answer: A"] * 2)
    summary = evaluate_fake(loader, questions(4), out, batch_size=1)
    assert [p.text.count("Is 2 even?") + p.text.count("Is 3 even?") for p in loader.prompts] == [1, 1]
    assert [r["id"] for r in lines(out)] == ["q0", "q1", "q2", "q3"] and summary.n == 4


def test_a_half_written_last_line_is_repaired_on_resume(tmp_path):
    out = tmp_path / "r.jsonl"
    evaluate_fake(FakeLoader(["Final Answer: A"]), questions(1), out)
    with out.open("a") as f:
        f.write('{"config_key": "abc", "id": "q1", "conf')  # killed while writing q1
    loader = FakeLoader(["Final Answer: B"])
    summary = evaluate_fake(loader, questions(2), out)
    assert len(loader.prompts) == 1 and "Is 1 even?" in loader.prompts[0].text
    assert [r["id"] for r in lines(out)] == ["q0", "q1"] and summary.n == 2


def test_speed_only_settings_reuse_results_and_answer_settings_do_not(tmp_path):
    out = tmp_path / "r.jsonl"
    evaluate_fake(FakeLoader(["Final Answer: A"]), questions(1), out)
    faster = FakeLoader()
    evaluate_fake(faster, questions(1), out, s=settings(n_threads=2, prefix_cache=False))
    assert faster.loads == []  # threads and the prefix cache change speed, not tokens
    other = FakeLoader(["Final Answer: B"])
    evaluate_fake(other, questions(1), out, s=settings(temperature=0.7, seed=1))
    assert len(other.prompts) == 1 and len(lines(out)) == 2
    assert len({r["config_key"] for r in lines(out)}) == 2


def test_batches_load_each_module_once_per_batch(tmp_path):
    loader = FakeLoader(["Final Answer: A"] * 5)
    evaluate_fake(loader, questions(5), tmp_path / "r.jsonl", batch_size=2)
    assert loader.loads == ["drd"] * 3


def test_stated_and_scored_answers_are_counted_apart(tmp_path):
    # q0: states A, scored A; q1: states B, scored A; q2: states nothing, scored A; q3: states A, scored B
    loader = FakeLoader(["Final Answer: A", "Final Answer: B", "I cannot tell.", "Final Answer: A"],
                        option_probs=[{"A": 0.8, "B": 0.2}] * 3 + [{"A": 0.3, "B": 0.7}])
    summary = evaluate_fake(loader, questions(4), tmp_path / "r.jsonl")
    records = lines(tmp_path / "r.jsonl")
    assert [r["answer_source"] for r in records] == ["stated", "scored", "scored", "scored"]
    assert [r["stated_answer"] for r in records] == ["A", "B", None, "A"]
    assert (summary.n, summary.correct, summary.stated_correct, summary.unparsed) == (4, 3, 2, 1)
    d = summary.to_dict()
    assert (d["accuracy"], d["stated_accuracy"], d["stated_share"]) == (0.75, 0.5, 0.75)


def test_mc_reports_length_normalized_accuracy_too(tmp_path):
    qs = [Question("m0", "Pick.", {"A": "a long right answer", "B": "no"}, "A"),
          Question("m1", "Pick.", {"A": "yes", "B": "no"}, "A")]
    loader = FakeLoader(logprobs=[[(-4.0, 4), (-2.0, 1)], [(-1.0, 1), (-3.0, 1)]])
    summary = evaluate_fake(loader, qs, tmp_path / "r.jsonl", system="mc").to_dict()
    assert [r["answer_norm"] for r in lines(tmp_path / "r.jsonl")] == ["A", "A"]
    assert (summary["correct"], summary["accuracy"], summary["accuracy_norm"]) == (1, 0.5, 1.0)


def test_questions_without_gold_are_unscored_not_wrong(tmp_path):
    qs = questions(2) + questions(3, gold=None)[2:]
    loader = FakeLoader(["Final Answer: A"] * 3)
    d = evaluate_fake(loader, qs, tmp_path / "r.jsonl").to_dict()
    assert (d["n"], d["correct"], d["unscored"], d["accuracy"]) == (2, 2, 1, 1.0)
    assert lines(tmp_path / "r.jsonl")[2]["correct"] is None


def test_duplicate_ids_are_refused_before_anything_loads(tmp_path):
    loader = FakeLoader()
    with pytest.raises(TmdError, match="more than once"):
        evaluate_fake(loader, questions(2) + questions(1), tmp_path / "r.jsonl")
    assert loader.loads == [] and not (tmp_path / "r.jsonl").exists()


def test_events_reach_the_pipeline_through_evaluate(tmp_path):
    finished = []

    class Count(Events):
        def generation_finished(self, stage, index, call, generation):
            finished.append((stage, generation.text))

    evaluate_fake(FakeLoader(["Final Answer: A"] * 2), questions(2), tmp_path / "r.jsonl", events=Count())
    assert finished == [("drd", "Final Answer: A")] * 2


def test_tmd_results_carry_every_stage(tmp_path):
    def reply(prompt):
        return {"analyzer": "1. Is it even?", "informant": "Even numbers divide by two.",
                "reasoner": "Final Answer: A"}[prompt.model]

    evaluate_fake(FakeLoader(reply), questions(2), tmp_path / "r.jsonl", system="tmd")
    for record in lines(tmp_path / "r.jsonl"):
        assert list(record["stages"]) == ["analyzer", "informant", "reasoner"]
        assert record["knowledge"] == ["Even numbers divide by two."] and record["correct"] is True


def test_run_config_labels_the_real_file_a_fake_run_used(tmp_path, embedded_model):
    """run_config reads the files' sha256 and headers; the fake never opens them."""
    modules = ModuleSet.single(embedded_model)
    loader = FakeLoader(["Final Answer: A"])
    cfg = run_config("drd", modules, settings(), dataset="obqa", split="test")
    summary = evaluate(questions(1), "drd", modules, settings(), cfg, tmp_path / "r.jsonl", pool=loader.pool())
    [record] = lines(tmp_path / "r.jsonl")
    assert record["config"]["models"]["drd"]["file_type"] == "q4_1" and summary.correct == 1
    assert record["stages"]["drd"]["file_type"] == "fake" and loader.loads == ["smollm2-135m-instruct"]
