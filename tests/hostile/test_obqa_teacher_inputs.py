"""Issue #27, item 5: the OBQA gold teacher's inputs. `tmd teach --dataset obqa --teacher gold` on
crafted question files whose recorded rationales (`extra.teacher.rationales`) are missing, empty,
of the wrong type, blank, huge or not valid Unicode. Each run either finishes (the bad question is
rejected with a reason, the good one beside it still taught) or stops with one line naming the
file; never a traceback."""

from __future__ import annotations

import json

import pytest

from hostile_helpers import invoke, one_line_error

GOOD_RATIONALE = ("Fog forms where warm moist air meets cooler ground, which is common over wetlands. "
                  "So the correct answer is (A) a marsh.")


def obqa(qid: str, extra) -> dict:
    return {"id": qid, "question": "There is most likely going to be fog around:",
            "options": {"A": "a marsh", "B": "a tundra", "C": "the plains", "D": "a desert"},
            "answer": "A", "extra": extra}


def teacher(rationales) -> dict:
    return {"kard_id": "x", "teacher": {"model": "gpt-3.5-turbo-0613", "rationales": rationales}}


RATIONALES = {
    "missing": {"kard_id": "x"},
    "teacher-null": {"teacher": None},
    "teacher-not-an-object": {"teacher": "gpt"},
    "teacher-a-list": {"teacher": [GOOD_RATIONALE]},
    "rationales-null": teacher(None),
    "rationales-empty": teacher([]),
    "rationales-a-string": teacher(GOOD_RATIONALE),
    "rationales-an-object": teacher({"0": GOOD_RATIONALE}),
    "rationales-not-text": teacher([None, 7, {"text": GOOD_RATIONALE}, ["nested"]]),
    "rationales-blank": teacher(["", "   ", "\n\n"]),
    "rationale-naming-no-option": teacher(["Fog is water in the air."]),
    "rationale-huge": teacher(["word " * 200_000 + "So the answer is (A)."]),
    "rationale-control-chars": teacher(["\x1b[31mred\x1b[0m \x00 So the answer is (A) a marsh."]),
}


def write_questions(path, rows) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")


def teach(path, out):
    return invoke("teach", "--dataset", "obqa", "--teacher", "gold", "--data-path", path, "--out", out)


def finished_or_one_line(result, *fragments) -> bool:
    """True when the run finished, else checks it failed with one clean line."""
    if result.exit_code == 0:
        assert "Traceback" not in result.output, result.output
        return True
    one_line_error(result, *fragments)
    return False


def taught_ids(out, module: str) -> list[str]:
    path = out / f"{module}.jsonl"
    return [json.loads(line)["id"] for line in path.read_text().splitlines()] if path.exists() else []


# What becomes of the bad question: rejected by the teacher (a reason in rejected.jsonl), skipped
# when the file is read (a warning naming file:line and field), or, for text that is odd but a
# rationale all the same, taught.
FATE = {"missing": "rejected", "teacher-null": "rejected", "rationales-null": "rejected",
        "rationales-empty": "rejected", "rationales-blank": "rejected", "rationale-naming-no-option": "rejected",
        "teacher-not-an-object": "skipped", "teacher-a-list": "skipped", "rationales-a-string": "skipped",
        "rationales-an-object": "skipped", "rationales-not-text": "skipped",
        "rationale-huge": "taught", "rationale-control-chars": "taught"}


@pytest.mark.parametrize("case", list(RATIONALES))
def test_bad_rationales_are_rejected_or_skipped_and_the_good_question_is_still_taught(tmp_path, case):
    path = tmp_path / "obqa.jsonl"
    write_questions(path, [obqa("good", teacher([GOOD_RATIONALE])), obqa("bad", RATIONALES[case])])
    out = tmp_path / "out"
    result = teach(path, out)
    assert finished_or_one_line(result, "obqa.jsonl"), result.output  # these files are still usable
    rejected = {json.loads(line)["id"]: json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()}
    taught = taught_ids(out, "drd")
    fate = FATE[case]
    assert "good" in taught
    if fate == "rejected":
        assert taught == ["good"] and "bad" in rejected
    elif fate == "skipped":
        assert taught == ["good"] and "bad" not in rejected
        assert f"{path}:2: field 'extra.teacher" in " ".join(result.output.split()), result.output
    else:
        assert sorted(taught) == ["bad", "good"]


@pytest.mark.parametrize("line", [
    json.dumps(obqa("q", teacher([GOOD_RATIONALE]))).replace("So the", "\\ud800 So the"),  # lone surrogate
    json.dumps(obqa("q", teacher([GOOD_RATIONALE]))).replace('"rationales": [', '"rationales": ' + "[" * 200),
    json.dumps(obqa("q", "not an object")),
    json.dumps(obqa("q", [GOOD_RATIONALE])),
    '{"id": "q", "question": "Fog?", "options": {"A": "a", "B": "b"}, "answer": "A", "extra": {"teacher": {"rati',
])
def test_malformed_question_lines_never_end_in_a_traceback(tmp_path, line):
    path = tmp_path / "obqa.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    finished_or_one_line(teach(path, tmp_path / "out"))


def test_an_empty_question_file_is_one_line(tmp_path):
    path = tmp_path / "obqa.jsonl"
    path.write_text("")
    one_line_error(teach(path, tmp_path / "out"), "obqa.jsonl")
