"""Category 9: ids are unique and typed, repeated lines are dropped with a warning, questions without
a gold answer are reported as unscored (never as wrong), annotations have the types they claim."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, strategies as st

from hostile_helpers import QUESTION, invoke, one_line_error, write_jsonl
from tmd_local.evaluation import evaluate as evaluate_mod
from tmd_local.core.datasets import load_questions
from tmd_local.core.errors import TmdError

SQA = {"qid": "s0", "question": "Is the sun a star?", "answer": True, "decomposition": ["What is the sun?"],
       "facts": ["The sun is a star."]}


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.sampled_from(["yes", "no"])),
                min_size=1, max_size=8))
def test_generated_duplicates(tmp_path_factory, rows):
    path = write_jsonl(tmp_path_factory.mktemp("d") / "q.jsonl",
                       [{**QUESTION, "id": qid, "options": {"A": option, "B": "other"}} for qid, option in rows])
    contents = {}
    conflict = any(contents.setdefault(qid, option) != option for qid, option in rows)
    if conflict:
        with pytest.raises(TmdError, match="is already used by"):
            load_questions("obqa", "test", path=path, hub=False)
        return
    questions, report = load_questions("obqa", "test", path=path, hub=False)
    assert sorted(q.id for q in questions) == sorted(set(qid for qid, _ in rows))
    assert len(report.duplicates) == len(rows) - len(questions)
    if report.duplicates:
        assert any("dropped" in w for w in report.warnings())


@pytest.mark.parametrize("bad_id", [None, True, False, [], {}, "", "  ", 1.5])
def test_ids_must_be_text_or_numbers(tmp_path, bad_id):
    path = write_jsonl(tmp_path / "q.jsonl", [{**QUESTION, "id": bad_id}, {**QUESTION, "id": "ok"}])
    with pytest.raises(TmdError, match="field 'id'"):
        load_questions("obqa", "test", path=path, strict=True, hub=False)
    questions, report = load_questions("obqa", "test", path=path, hub=False)
    assert [q.id for q in questions] == ["ok"] and "None" not in [q.id for q in questions]


@pytest.mark.parametrize("field, value", [("decomposition", "What is the sun?"), ("facts", "The sun is a star."),
                                          ("decomposition", [1, 2]), ("facts", {"a": 1}), ("evidence", "x")])
def test_annotations_of_the_wrong_type(tmp_path, field, value):
    path = write_jsonl(tmp_path / "q.jsonl", [{**SQA, field: value}])
    with pytest.raises(TmdError, match=f"field '{field}'"):
        load_questions("strategyqa", "train", path=path, strict=True, hub=False)


def test_same_id_twice_through_eval_and_teach(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", [QUESTION, {**QUESTION, "question": "Another?"}])
    one_line_error(invoke("eval", "--dataset", "obqa", "--data-path", path, "--out", tmp_path / "r.jsonl"),
                   "already used by")
    one_line_error(invoke("teach", "--dataset", "obqa", "--data-path", path, "--teacher", "gold",
                          "--out", tmp_path / "t"), "already used by")


def test_teach_writes_a_repeated_question_once(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", [SQA, SQA, {**SQA, "qid": "s1"}])
    result = invoke("teach", "--dataset", "strategyqa", "--split", "train", "--data-path", path,
                    "--teacher", "gold:facts", "--out", tmp_path / "t")
    assert result.exit_code == 0, result.output
    assert "dropped 1 repeated records" in result.output
    ids = [json.loads(line)["id"] for line in (tmp_path / "t" / "analyzer.jsonl").read_text().splitlines()]
    assert sorted(ids) == ["s0", "s1"]


def _evaluate(tmp_path, questions):
    """DRD through evaluate() on the fake module, every reasoning answering A."""
    from tmd_local.runtime.fake import FakeLoader
    from tmd_local.runtime.generation import GenerationSettings

    loader = FakeLoader(lambda prompt: "r\nFinal Answer: A",
                        option_probs=lambda reasoning, letters: {x: 0.9 if x == "A" else 0.1 for x in letters})
    config = {"system": "drd", "dataset": "obqa", "split": "test", "teacher": "none",
              "models": {"drd": {"name": "m", "sha256": "s"}}, "settings": GenerationSettings().to_dict()}
    return evaluate_mod.evaluate(questions, "drd", loader.module_set(), GenerationSettings(), config,
                                 tmp_path / "r.jsonl", pool=loader.pool())


def test_identical_repeats_are_counted_once(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", [QUESTION, QUESTION, {**QUESTION, "id": "q1", "answer": "B"}])
    questions, report = load_questions("obqa", "test", path=path, hub=False)
    summary = _evaluate(tmp_path, questions)
    assert (summary.n, summary.correct) == (2, 1) and len(report.duplicates) == 1


def test_duplicate_ids_never_reach_the_summary(tmp_path):
    from tmd_local.core.records import Question

    q = Question("same", "Q?", {"A": "y", "B": "n"}, "A")
    with pytest.raises(TmdError, match="more than once"):
        _evaluate(tmp_path, [q, Question("same", "Other?", {"A": "y", "B": "n"}, "B")])


@given(st.lists(st.sampled_from(["A", "B", None]), min_size=1, max_size=8))
def test_questions_without_gold_are_unscored_not_wrong(tmp_path_factory, golds):
    from tmd_local.core.records import Question

    tmp = tmp_path_factory.mktemp("u")
    questions = [Question(f"q{i}", "Q?", {"A": "y", "B": "n"}, gold) for i, gold in enumerate(golds)]
    summary = _evaluate(tmp, questions).to_dict()
    scored = [g for g in golds if g is not None]
    assert summary["n"] == len(scored) and summary["unscored"] == golds.count(None)
    assert summary["correct"] == scored.count("A")
    assert summary["accuracy"] == (round(scored.count("A") / len(scored), 4) if scored else 0.0)


def test_unscored_questions_are_said_out_loud(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", [{**QUESTION, "answer": None}])
    questions, report = load_questions("obqa", "test", path=path, hub=False)
    assert report.unscored == 1 and "no gold answer" in " ".join(report.warnings())
    from tmd_local.runtime.render import summary_table
    from rich.console import Console
    import io

    summary = _evaluate(tmp_path, questions).to_dict()
    summary["config"]["models"]["drd"]["file"] = "m.gguf"
    out = io.StringIO()
    Console(file=out, width=200).print(summary_table([summary]))
    assert "not scored" in out.getvalue() and "0.0%" not in out.getvalue()
