import json

import pytest

from tmd_local.core.datasets import load_file, load_questions
from tmd_local.core.errors import TmdError


def write_lines(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


NORMALIZED = {"id": "q1", "question": "Predators eat", "answer": "C",
              "options": {"A": "lions", "B": "humans", "C": "bunnies", "D": "grass"}, "extra": {"k": 1}}


def test_normalized_jsonl(tmp_path):
    path = write_lines(tmp_path / "test.jsonl", [NORMALIZED])
    questions, report = load_file(path, "obqa")
    assert questions[0].options["C"] == "bunnies" and questions[0].answer == "C"
    assert questions[0].extra == {"k": 1} and report.loaded == 1 and not report.skipped


def test_openbookqa_original_format(tmp_path):
    raw = {"id": "7-980", "answerKey": "D", "fact1": "sun is a star",
           "question": {"stem": "The sun is responsible for", "choices": [
               {"text": "puppies learning new tricks", "label": "A"}, {"text": "children growing up", "label": "B"},
               {"text": "flowers wilting in a vase", "label": "C"}, {"text": "plants sprouting", "label": "D"}]}}
    q = load_file(write_lines(tmp_path / "o.jsonl", [raw]), "obqa")[0][0]
    assert (q.id, q.question, q.answer, q.options["D"]) == ("7-980", "The sun is responsible for", "D", "plants sprouting")
    assert q.extra["fact1"] == "sun is a star"


def test_openbookqa_hub_shape(tmp_path):
    raw = {"id": "1", "question_stem": "Fog is", "answerKey": "A",
           "choices": {"text": ["water", "sand"], "label": ["A", "B"]}}
    q = load_file(write_lines(tmp_path / "o.jsonl", [raw]), "obqa")[0][0]
    assert q.options == {"A": "water", "B": "sand"}


def test_strategyqa_original_json_array(tmp_path):
    records = [{"qid": "abc", "term": "Penguin", "description": "bird", "question": "Can penguins fly?",
                "answer": False, "facts": ["Penguins are flightless."], "decomposition": ["Can penguins fly?"]},
               {"qid": "def", "question": "Is water wet?", "answer": True}]
    path = tmp_path / "strategyqa_train.json"
    path.write_text(json.dumps(records))
    questions, _ = load_file(path, "strategyqa")
    assert [q.answer for q in questions] == ["B", "A"]
    assert questions[0].options == {"A": "yes", "B": "no"}
    assert questions[0].extra["facts"] == ["Penguins are flightless."]


def test_medqa_original_format_gets_stable_ids(tmp_path):
    raw = {"question": "A 23-year-old woman ...?", "answer": "Nitrofurantoin", "answer_idx": "D",
           "options": {"A": "Ampicillin", "B": "Ceftriaxone", "C": "Doxycycline", "D": "Nitrofurantoin"},
           "meta_info": "step1"}
    path = write_lines(tmp_path / "m.jsonl", [raw])
    first, second = load_file(path, "medqa")[0][0], load_file(path, "medqa")[0][0]
    assert first.answer == "D" and first.id == second.id and first.id.startswith("medqa-")


def test_malformed_lines_are_reported_with_file_and_line_and_skipped(tmp_path):
    bad_answer = {**NORMALIZED, "id": "q2", "answer": "E"}
    no_question = {k: v for k, v in NORMALIZED.items() if k != "question"}
    one_option = {**NORMALIZED, "id": "q3", "options": {"A": "only"}, "answer": "A"}
    path = write_lines(tmp_path / "t.jsonl", [NORMALIZED, "{not json", bad_answer, no_question, one_option, "[1, 2]"])
    questions, report = load_file(path, "obqa")
    assert [q.id for q in questions] == ["q1"]
    assert report.skipped == [
        f"{path}:2: invalid JSON (Expecting property name enclosed in double quotes at column 2)",
        f"{path}:3: field 'answer': expected one of A/B/C/D, got 'E'",
        f"{path}:4: missing field 'question'",
        f"{path}:5: field 'options': expected at least 2 options, got 1",
        f"{path}:6: expected a JSON object, got list",
    ]


def test_strict_rejects_at_first_malformed_record(tmp_path):
    path = write_lines(tmp_path / "t.jsonl", [NORMALIZED, {**NORMALIZED, "answer": "Z"}])
    with pytest.raises(TmdError, match=r"t\.jsonl:2: field 'answer'"):
        load_file(path, "obqa", strict=True)


def test_limit_and_errors(tmp_path):
    path = write_lines(tmp_path / "t.jsonl", [{**NORMALIZED, "id": f"q{i}"} for i in range(5)])
    assert len(load_questions("obqa", "test", path=path, limit=2)[0]) == 2
    with pytest.raises(TmdError, match="dataset 'squad': expected one of obqa, strategyqa, medqa"):
        load_questions("squad", "test")
    with pytest.raises(TmdError, match="no such file"):
        load_questions("obqa", "test", path=tmp_path / "missing.jsonl")
    with pytest.raises(TmdError, match="no usable obqa questions"):
        load_questions("obqa", "test", path=write_lines(tmp_path / "bad.jsonl", ["{}"]))
    with pytest.raises(TmdError, match="no local file"):
        load_questions("obqa", "test", data_dir=tmp_path, hub=False)


@pytest.mark.parametrize("dataset, split, count", [
    ("obqa", "test", 500), ("strategyqa", "test", 687), ("medqa", "test", 1273), ("strategyqa", "train", 1603)])
def test_shared_benchmark_files_load_completely(data_dir, dataset, split, count):
    questions, report = load_questions(dataset, split, data_dir=data_dir, hub=False)
    assert len(questions) == count and not report.skipped
    assert all(q.answer in q.options for q in questions)
