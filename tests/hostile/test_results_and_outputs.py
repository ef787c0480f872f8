"""Categories 4 and 6: output paths are checked before any work; every results line is validated
against the shape `tmd eval` writes, for `tmd report`, `--memory-budget` and eval's own resume."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given, strategies as st

from hostile_helpers import QUESTION, invoke, one_line_error, result_record, write_jsonl
from tmd_local.core.errors import TmdError
from tmd_local.evaluation.rows import fold_seeds, load_results

# --- category 4: output paths ---------------------------------------------------------------------


def _bad_outputs(tmp_path):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    return [(folder, "is a folder"), (a_file / "r.jsonl", "is a file, not a folder"),
            (a_file / "deeper" / "r.jsonl", "is a file, not a folder"), ("/proc/x", "cannot write there"),
            ("/proc/self/status", "cannot write there"), ("/dev/null", "not a regular file")]


def test_eval_out_is_checked_before_anything_runs(tmp_path):
    for out, fragment in _bad_outputs(tmp_path):
        one_line_error(invoke("eval", "--dataset", "obqa", "--out", out), "--out", fragment)


def test_report_out_and_readme_are_checked(tmp_path):
    results = write_jsonl(tmp_path / "r.jsonl", [result_record()])
    for out, fragment in _bad_outputs(tmp_path):
        one_line_error(invoke("report", results, "--out", out), "--out", fragment)
        if fragment not in ("cannot write there",):
            one_line_error(invoke("report", results, "--out", tmp_path / "rep" / "r.md", "--readme", out))
    assert invoke("report", results, "--out", tmp_path / "rep" / "r.md").exit_code == 0


@given(st.text(min_size=1, max_size=20).filter(lambda t: "\x00" not in t))
def test_generated_out_names_never_crash(tmp_path_factory, name):
    base = tmp_path_factory.mktemp("o")
    (base / "f").write_text("x")
    result = invoke("report", write_jsonl(base / "r.jsonl", [result_record()]), "--out", base / "f" / name)
    one_line_error(result)


# --- category 6: results lines --------------------------------------------------------------------

WRONG_VALUES = [None, "", "no", "1", 1, -1, 1.5, True, [], {}, [1], {"a": 1}]


def _paths(record, prefix=()):
    """Every field path in a record (to delete or replace one)."""
    for key, value in record.items():
        yield prefix + (key,)
        if isinstance(value, dict):
            yield from _paths(value, prefix + (key,))


def _set(record, path, value, delete=False):
    record = copy.deepcopy(record)
    target = record
    for key in path[:-1]:
        target = target[key]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return record


FIELDS = list(_paths(result_record()))


@given(st.sampled_from(FIELDS), st.sampled_from(WRONG_VALUES), st.booleans())
def test_damaged_lines_are_one_error_or_read_correctly(tmp_path_factory, field, value, delete):
    damaged = _set(result_record(1), field, value, delete)
    path = write_jsonl(tmp_path_factory.mktemp("r") / "r.jsonl", [result_record(0), damaged])
    try:
        results = load_results([path])
    except TmdError as e:
        assert str(e).startswith(f"{path}:2: ") and "\n" not in str(e)
        return
    # Accepted: then every figure is computable and "correct" is a real boolean or null.
    for result in results:
        for record in [*result.records.values(), *result.unscored.values()]:
            assert record["correct"] in (True, False, None)
    for row in fold_seeds(results):
        row.cell()
        row.runs[0].flops_per_question()
        row.runs[0].peak_rss_mb()


@pytest.mark.parametrize("change, fragment", [
    ({"config": None}, "config"),
    ({"stages": []}, "stages"),
    ({"stages": {}}, "stages"),
    ({"correct": "no"}, "correct"),
    ({"correct": 1}, "correct"),
    ({"correct": True, "answer": "B"}, "correct"),
    ({"id": None}, "id"),
    ({"id": 7}, "id"),
    ({"stages": {"drd": {"peak_rss_mb": "300", "prompt_tokens": 1, "completion_tokens": 1}}}, "peak_rss_mb"),
    ({"stages": {"drd": {"peak_rss_mb": 1, "prompt_tokens": 1.5, "completion_tokens": 1}}}, "prompt_tokens"),
    ({"wall_seconds": "1"}, "wall_seconds"),
])
def test_the_examples_from_the_issue(tmp_path, change, fragment):
    path = write_jsonl(tmp_path / "r.jsonl", [result_record(**change)])
    line = one_line_error(invoke("report", path, "--out", tmp_path / "rep.md"), "r.jsonl:1", fragment)
    assert "%" not in line


@pytest.mark.parametrize("missing", ["config", "id", "stages", "correct", "answer"])
def test_missing_fields(tmp_path, missing):
    record = result_record()
    del record[missing]
    one_line_error(invoke("report", write_jsonl(tmp_path / "r.jsonl", [record]), "--out", tmp_path / "rep.md"),
                   "r.jsonl:1", missing)


@pytest.mark.parametrize("other, kind", [
    (QUESTION, "a question from a data file"),
    ({"qid": "q0", "stage": "analyzer", "index": 0, "prompt_sha": "x", "reply": {"text": "t"}}, "teacher journal"),
    ({"id": "q0", "module": "drd", "messages": [], "target": "t"}, "training set"),
    ([1, 2], "not a tmd eval results record"),
])
def test_other_kinds_of_jsonl(tmp_path, other, kind):
    path = write_jsonl(tmp_path / "r.jsonl", [other])
    one_line_error(invoke("report", path, "--out", tmp_path / "rep.md"), "r.jsonl:1", kind)


def test_correct_no_is_never_counted_right(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [result_record(0), result_record(1, correct="no", answer="B")])
    with pytest.raises(TmdError, match="r.jsonl:2: field 'correct'"):
        load_results([path])


def test_memory_budget_reads_through_the_same_checks(tmp_path, embedded_model):
    from tmd_local.evaluation.quantmix import pick_quant

    folder = tmp_path / "b"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"format": "tmd-bundle/1", "base": "smollm2-135m-instruct",
                                                      "modules": {r: {"mode": "base"} for r in
                                                                  ("analyzer", "informant", "reasoner", "drd")}}))
    from tmd_local.runtime.bundle import load_bundle

    path = write_jsonl(tmp_path / "r.jsonl", [result_record(0, stages=[])])
    with pytest.raises(TmdError, match=r"r\.jsonl:1: field 'stages'"):
        pick_quant(load_bundle(folder), "1GB", ("drd",), (path,))


def test_eval_refuses_an_out_file_of_another_kind(tmp_path, data_dir):
    out = write_jsonl(tmp_path / "r.jsonl", [QUESTION])
    one_line_error(invoke("eval", "--dataset", "strategyqa", "--data-dir", data_dir, "--limit", "1",
                          "--system", "drd", "--out", out), "r.jsonl:1", "not a tmd eval results record")
