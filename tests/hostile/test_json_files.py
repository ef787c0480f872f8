"""Category 3: one reader for every JSON/JSONL tmd reads. Deep nesting, huge numbers, NaN, invalid
UTF-8 and lone surrogates become one error naming file and line, in data files, manifests, results
and teacher runs alike."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, strategies as st

from hostile_helpers import QUESTION, invoke, one_line_error, result_record, write_jsonl
from tmd_local.runtime.bundle import load_bundle
from tmd_local.core.datasets import load_questions
from tmd_local.core.errors import TmdError
from tmd_local.core.jsonl import MAX_DEPTH, JsonError, append_jsonl, parse_json, read_jsonl
from tmd_local.evaluation.rows import load_results

EDGE_CASES = [
    ("[" * 100_000, "nested more than"),
    ("{\"a\": " * 50_000 + "1" + "}" * 50_000, "nested more than"),
    ("[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5), "nested more than"),
    ("1" * 5000, "digits"),
    ("-" + "9" * 2000, "digits"),
    ("1e999", "too large"),
    ("NaN", "NaN"),
    ("[Infinity]", "Infinity"),
    ('{"x": -Infinity}', "Infinity"),
    ('"\\ud800"', "lone surrogate"),
    ('{"\\udfff": 1}', "lone surrogate"),
    ('["ok", "a\\ud83d"]', "lone surrogate"),
]


@pytest.mark.parametrize("text, fragment", EDGE_CASES)
def test_edge_cases_are_one_error_naming_the_place(text, fragment):
    with pytest.raises(JsonError, match=fragment) as caught:
        parse_json(text.encode(), "f.jsonl:7")
    assert str(caught.value).startswith("f.jsonl:7: ")


@pytest.mark.parametrize("data", [b"\xff\xfe", b'{"a": "\xc3"}', b'"\xed\xa0\x80"', b"\x80abc"])
def test_bytes_that_are_not_utf8(data):
    with pytest.raises(JsonError, match="not UTF-8"):
        parse_json(data, "x:1")


def test_valid_json_still_reads():
    assert parse_json('{"a": [1, 2.5, "\\ud83d\\ude00", null, true]}', "x") == {"a": [1, 2.5, "😀", None, True]}
    assert parse_json(b"\xef\xbb\xbf[1]", "x") == [1]  # a byte-order mark


@given(st.binary(max_size=200))
def test_any_bytes_parse_or_fail_as_one_jsonerror(data):
    try:
        parse_json(data, "x:1")
    except JsonError as e:
        assert str(e).startswith("x:1: ") and "\n" not in str(e)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=15))
def test_generated_values_round_trip_or_are_refused_at_write_time(tmp_path_factory, value):
    path = tmp_path_factory.mktemp("w") / "r.jsonl"
    try:
        append_jsonl(path, {"v": value})
    except TmdError as e:  # NaN, Infinity or a lone surrogate: refused before anything is written
        assert "refusing to write" in str(e) and not path.exists() or path.read_text() == ""
        return
    assert read_jsonl(path) == [json.loads(json.dumps({"v": value}))]


def _bad_lines():
    return [b"[" * 100_000, b"1" * 5000, b'{"id": "\\ud800"}', b'{"id": "q\xff"}', b"NaN", b'{"x": 1e999}']


@pytest.mark.parametrize("bad", _bad_lines())
def test_data_file(tmp_path, bad):
    path = tmp_path / "q.jsonl"
    path.write_bytes(json.dumps(QUESTION).encode() + b"\n" + bad + b"\n")
    with pytest.raises(TmdError, match=r"q\.jsonl:2: "):
        load_questions("strategyqa", "test", path=path, strict=True, hub=False)
    questions, report = load_questions("strategyqa", "test", path=path, hub=False)  # lenient: skipped
    assert [q.id for q in questions] == ["q0"] and report.skipped[0].startswith(f"{path}:2: ")


@pytest.mark.parametrize("bad", _bad_lines())
def test_data_file_through_eval(tmp_path, bad):
    path = tmp_path / "q.jsonl"
    path.write_bytes(bad + b"\n")
    where = "q.jsonl" if bad.startswith(b"[") else "q.jsonl:1"  # "[" opens a JSON array file
    one_line_error(invoke("eval", "--dataset", "strategyqa", "--data-path", path, "--strict",
                          "--out", tmp_path / "r.jsonl"), where)


@pytest.mark.parametrize("bad", _bad_lines())
def test_results_file(tmp_path, bad):
    path = tmp_path / "r.jsonl"
    path.write_bytes(json.dumps(result_record()).encode() + b"\n" + bad + b"\n")
    with pytest.raises(TmdError, match=r"r\.jsonl:2: "):
        load_results([path])
    one_line_error(invoke("report", path, "--out", tmp_path / "rep" / "r.md"), "r.jsonl:2")


@pytest.mark.parametrize("bad", _bad_lines())
def test_bundle_manifest(tmp_path, bad):
    (tmp_path / "manifest.json").write_bytes(bad)
    with pytest.raises(TmdError, match=r"manifest\.json: "):
        load_bundle(tmp_path)
    one_line_error(invoke("ask", "Q?", "--option", "A=y", "--option", "B=n", "--bundle", tmp_path), "manifest.json")


@pytest.mark.parametrize("bad", _bad_lines())
def test_teacher_journal(tmp_path, bad):
    from teacher.journal import Journal

    (tmp_path / "journal.jsonl").write_bytes(bad + b"\n")
    with pytest.raises(TmdError, match=r"journal\.jsonl:1: "):
        Journal(tmp_path, "openai:x")


@pytest.mark.parametrize("bad", _bad_lines())
def test_training_set(tmp_path, bad):
    from trainer.data import load_records

    path = tmp_path / "analyzer.jsonl"
    path.write_bytes(bad + b"\n")
    with pytest.raises(TmdError, match=r"analyzer\.jsonl:1: "):
        load_records(path, "analyzer")


def test_a_strategyqa_json_array_too_deep(tmp_path):
    path = tmp_path / "train.json"
    path.write_text("[" * 100_000)
    with pytest.raises(TmdError, match=r"train\.json: not valid JSON \(nested"):
        load_questions("strategyqa", "train", path=path, hub=False)


def test_lone_surrogate_in_a_question_file_never_reaches_tokenize(tmp_path):
    line = json.dumps({**QUESTION, "question": "Is @ a star?"}).replace("@", "\\ud800")
    path = write_jsonl(tmp_path / "q.jsonl", [line])
    with pytest.raises(TmdError, match="lone surrogate"):
        load_questions("strategyqa", "test", path=path, strict=True, hub=False)
