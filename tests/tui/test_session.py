"""The app's non-UI logic: options parsing, compare targets, history records, exports."""

import json

import pytest

from tmd_local.runtime.bundle import load_bundle, zero_shot_bundle
from tmd_local.core.errors import TmdError
from tmd_local.runtime.pipeline import StageRecord, Trace
from tmd_local.core.records import Question
from tmd_local.tui.session import (RunRecord, compare_target, export_run, make_question, parse_options,
                                   run_markdown)


@pytest.mark.parametrize("text, expected", [
    ("A. a marsh\nB. a tundra", {"A": "a marsh", "B": "a tundra"}),
    ("(a) yes\n(b) no", {"A": "yes", "B": "no"}),
    ("C: plains\nD) desert", {"C": "plains", "D": "desert"}),
    ("yes\n\nno\n", {"A": "yes", "B": "no"}),
])
def test_parse_options(text, expected):
    assert parse_options(text) == expected


def test_parse_options_errors():
    with pytest.raises(TmdError, match="at least two"):
        parse_options("A. only one")
    with pytest.raises(TmdError, match="letter A appears twice"):
        parse_options("A. yes\nA. no")
    with pytest.raises(TmdError, match="type a question first"):
        make_question("  ", "yes\nno")


def test_make_question_keeps_gold_only_when_it_is_an_option():
    assert make_question("Q?", "yes\nno", gold="B").answer == "B"
    assert make_question("Q?", "yes\nno", gold="C").answer is None


def test_compare_target(embedded_model):
    bundle = zero_shot_bundle("smollm2-135m-instruct")
    assert compare_target("", bundle) is None
    assert compare_target("Q4_1", bundle).quant == "q4_1"
    other = compare_target(str(embedded_model.path), bundle)
    assert other.bundle.name == embedded_model.path.stem and other.label.endswith("(q4_1)")
    with pytest.raises(TmdError, match="not a known model name"):
        compare_target("q9_9", bundle)


def test_compare_target_takes_a_per_module_mix(tmp_path, embedded_model):
    folder = tmp_path / "b"
    folder.mkdir()
    entry = {"sha256": embedded_model.sha256(), "size": embedded_model.path.stat().st_size}
    modules = {}
    for role in ("analyzer", "informant", "reasoner", "drd"):
        for quant in ("f16", "q4_k_m"):
            (folder / f"{role}.{quant}.gguf").symlink_to(embedded_model.path)
        modules[role] = {"mode": "merged",
                         "files": {q: {"file": f"{role}.{q}.gguf", **entry} for q in ("f16", "q4_k_m")}}
    (folder / "manifest.json").write_text(json.dumps({"format": "tmd-bundle/1", "base": "smollm2-135m-instruct",
                                                      "modules": modules}))
    bundle = load_bundle(folder)
    target = compare_target("f16,Reasoner=q4_k_m", bundle)
    assert target.label == "b (f16,reasoner=q4_k_m)" and target.modules().reasoner.quant == "q4_k_m"
    with pytest.raises(TmdError, match="no 'q8_0' file for reasoner"):
        compare_target("f16,reasoner=q8_0", bundle)


def _record() -> RunRecord:
    q = Question("q1", "Is fog likely near a marsh?", {"A": "yes", "B": "no"}, "A")
    trace = Trace(q, "tmd", subquestions=["What is fog?"], knowledge=["Fog is a cloud at ground level."],
                  reasoning="1. Marshes are wet.\nFinal Answer: A", answer="A")
    trace.stages["analyzer"] = StageRecord("analyzer", "m", "q4_1", calls=1, prompt_tokens=90,
                                           completion_tokens=12, seconds=0.5, load_seconds=0.2)
    record = RunRecord(q, "tmd", ["m (q4_1)"], {"m (q4_1)": trace}, status="done")
    return record


def test_export_json_and_markdown(tmp_path):
    record = _record()
    data = json.loads(export_run(record, tmp_path / "out" / "run.json").read_text())
    assert data["runs"][0]["target"] == "m (q4_1)" and data["runs"][0]["trace"]["answer"] == "A"
    assert data["runs"][0]["trace"]["stages"]["analyzer"]["completion_tokens"] == 12
    md = export_run(record, tmp_path / "run.md").read_text()
    assert md == run_markdown(record)
    assert "# TMD: Is fog likely near a marsh?" in md and "1. **What is fog?**" in md
    assert "**Final answer: A. yes** (correct)" in md and "| analyzer | load | 0.20 | 0.50 | 90 | 12 |" in md


def test_history_summary():
    record = _record()
    assert "TMD A  Is fog likely" in record.summary()
    record.status = "stopped"
    assert "(stopped)" in record.summary()
