"""Real models as teachers on a StrategyQA train slice: llama-cpp-python's OpenAI-compatible server
(openai: backend) and the GGUF loaded in-process (gguf: backend), both with the embedded model.
The 135M model is a poor teacher, so these check the machinery, not the accuracy."""

from __future__ import annotations

import json

import pytest

from teacher_helpers import all_records, ids_once, teach
from tmd_local.core import prompts
from tmd_local.core.datasets import load_questions

pytestmark = pytest.mark.slow
LIMIT = 2


def check_run(out, data_dir, teacher_label, keep_wrong=False):
    files = all_records(out)
    questions = {q.id: q for q in load_questions("strategyqa", "train", data_dir=data_dir, limit=LIMIT)[0]}
    for module in ("analyzer", "reasoner", "drd"):
        assert sorted(ids_once(files, module)) == sorted(questions)  # every question exactly once
    for rec in files["drd"] + files["reasoner"]:
        letter = rec["target"][-1]
        assert rec["target"].endswith(f"Final Answer: {letter}") and letter in "AB"
        assert keep_wrong or letter == questions[rec["id"]].answer
    for rec in files["drd"]:
        assert rec["messages"] == prompts.drd_messages(questions[rec["id"]])
    for rec in files["analyzer"] + [r for r in files["rejected"] if r["module"] == "analyzer"]:
        assert rec["messages"] == prompts.analyzer_messages(questions[rec["id"]])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["teacher"] == teacher_label and summary["questions"] == LIMIT
    assert summary["tokens"]["prompt"] > 0 and summary["tokens"]["completion"] > 0
    return summary


def test_openai_backend_against_llama_cpp_server(llama_server, data_dir, tmp_path):
    out = tmp_path / "teacher"
    result = teach("--dataset", "strategyqa", "--limit", LIMIT, "--data-dir", data_dir,
                   "--teacher", "openai:smollm2", "--base-url", llama_server, "--out", out,
                   "--max-tokens", "24", "--concurrency", "2", env={"OPENAI_API_KEY": ""})
    assert result.exit_code == 0, result.output
    summary = check_run(out, data_dir, "openai:smollm2")
    assert summary["teacher_info"]["base_url"] == llama_server and summary["retries"] == 0


def test_gguf_backend_runs_offline_and_a_rerun_asks_nothing(embedded_model, data_dir, tmp_path):
    out = tmp_path / "teacher"
    args = ["--dataset", "strategyqa", "--limit", LIMIT, "--data-dir", data_dir,
            "--teacher", f"gguf:{embedded_model.name}", "--out", out, "--max-tokens", "24", "--keep-wrong"]
    result = teach(*args)
    assert result.exit_code == 0, result.output
    summary = check_run(out, data_dir, f"gguf:{embedded_model.name}", keep_wrong=True)
    assert summary["new_questions"] == LIMIT and summary["teacher_info"]["load_seconds"] > 0
    before = {p.name: p.read_text() for p in out.glob("*.jsonl")}

    again = teach(*args)
    assert again.exit_code == 0, again.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_questions"] == LIMIT and summary["teacher_calls"] == 0
    assert {p.name: p.read_text() for p in out.glob("*.jsonl")} == before


def test_gguf_prompt_beyond_the_context_costs_the_trace_not_the_run(embedded_model, data_dir, tmp_path):
    out = tmp_path / "teacher"
    result = teach("--dataset", "strategyqa", "--limit", 1, "--data-dir", data_dir, "--teacher",
                   f"gguf:{embedded_model.name}", "--out", out, "--n-ctx", "128")
    assert result.exit_code == 0, result.output
    files = all_records(out)
    assert {r["module"]: r["reason"] for r in files["rejected"]} == {
        "analyzer": "prompt_too_long", "reasoner": "prompt_too_long", "drd": "prompt_too_long"}
