"""The openai: teacher against scripted local servers: retries, fatal errors, malformed replies,
and bad input. Every error the user sees is one line; the API key never shows up anywhere."""

from __future__ import annotations

import json
import time

import pytest

from teacher_helpers import all_records, chat_json, free_port, ids_once, teach

KEY = "sk-test-SECRET-1234567890"


def run_fake(api, questions_file, out, *extra, env=None):
    return teach("--dataset", "strategyqa", "--data-path", questions_file, "--teacher", "openai:fake",
                 "--base-url", api.url if hasattr(api, "url") else api, "--out", out,
                 "--backoff", "0.01", "--concurrency", "2", *extra,
                 env={"OPENAI_API_KEY": KEY, **(env or {})})


def one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    assert "Traceback" not in result.output
    return lines[0]


def assert_key_nowhere(out, result) -> None:
    assert KEY not in result.output
    for path in out.rglob("*"):
        if path.is_file():
            assert KEY not in path.read_text(encoding="utf-8", errors="replace"), path


def test_well_behaved_run_keeps_right_answers_and_sends_the_key(fake_api, questions_file, tmp_path):
    api = fake_api()
    out = tmp_path / "out"
    result = run_fake(api, questions_file, out)
    assert result.exit_code == 0, result.output
    files = all_records(out)
    assert sorted(ids_once(files, "reasoner")) == ["q0", "q1", "q2", "q3"]
    assert sorted(r["id"] for r in files["reasoner"]) == ["q0", "q2"]  # the fake always says A
    assert {r["reason"] for r in files["rejected"]} == {"wrong_answer"}
    assert sorted(r["id"] for r in files["informant"]) == ["q0#1", "q0#2", "q2#1", "q2#2"]
    assert files["reasoner"][0]["target"].endswith("2. A second one.\nFinal Answer: A")  # normalized
    assert files["analyzer"][0]["target"] == "1. What is the first fact?\n2. What is the second fact?"
    assert all(r["teacher"] == "openai:fake" for r in files["drd"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tokens"] == {"prompt": 200, "completion": 100}  # 20 calls x (10, 5)
    assert summary["retries"] == 0 and summary["teacher_info"]["base_url"] == api.url
    assert set(api.auth) == {f"Bearer {KEY}"}
    assert_key_nowhere(out, result)


def test_500s_and_429_are_retried_then_the_run_completes(fake_api, questions_file, tmp_path):
    failures = {0: 500, 1: 503, 2: 429, 5: 502}  # by request number

    def script(n, body):
        if n in failures:
            headers = {"Retry-After": "0.05"} if failures[n] == 429 else {}
            return failures[n], b'{"error": {"message": "try again"}}', headers
        return None

    api = fake_api(script)
    out = tmp_path / "out"
    result = run_fake(api, questions_file, out, "--retries", "3")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["retries"] == 4
    assert len(api.requests) == 20 + 4
    assert sorted(ids_once(all_records(out), "drd")) == ["q0", "q1", "q2", "q3"]
    assert_key_nowhere(out, result)


def test_timeout_is_retried(fake_api, questions_file, tmp_path):
    api = fake_api(lambda n, body: ("sleep", 3.0) if n == 0 else None)
    out = tmp_path / "out"
    result = run_fake(api, questions_file, out, "--timeout", "0.5", "--limit", "1", "--concurrency", "1")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "summary.json").read_text())["retries"] == 1


def test_bad_key_fails_fast_with_one_line(fake_api, questions_file, tmp_path):
    body = json.dumps({"error": {"message": f"Incorrect API key provided: {KEY}",
                                 "type": "invalid_request_error", "code": "invalid_api_key"}}).encode()
    api = fake_api(lambda n, b: (401, body, {}))
    out = tmp_path / "out"
    started = time.perf_counter()
    result = run_fake(api, questions_file, out, "--retries", "5", "--backoff", "1")
    line = one_line_error(result)
    assert "HTTP 401" in line and "$OPENAI_API_KEY" in line
    assert time.perf_counter() - started < 5
    assert len(api.requests) <= 2  # one per worker at most: no retry storm
    assert_key_nowhere(out, result)


def test_server_down_is_one_line_after_retries(questions_file, tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    out = tmp_path / "out"
    result = run_fake(url, questions_file, out, "--retries", "2")
    line = one_line_error(result)
    assert "connection refused" in line and "failed 3 times" in line and "rerun" in line
    assert_key_nowhere(out, result)


def test_persistent_500_stops_the_run_and_a_rerun_resumes(fake_api, questions_file, tmp_path):
    state = {"broken": True}
    api = fake_api(lambda n, b: (500, b"{}", {}) if state["broken"] and n >= 6 else None)
    out = tmp_path / "out"
    line = one_line_error(run_fake(api, questions_file, out, "--retries", "1", "--concurrency", "1"))
    assert "HTTP 500" in line and "rerun the same command" in line
    state["broken"] = False
    asked_before = len(api.requests)
    result = run_fake(api, questions_file, out, "--concurrency", "1")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_questions"] == 1 and summary["teacher_calls"] == 20 - 6
    assert len(api.requests) - asked_before == 14


MALFORMED = {
    # question text fragment -> what the server sends back for that question's reasoner and drd
    "number 0": (200, chat_json(""), {}),  # empty reply
    "number 1": (200, chat_json("x" * 100_000), {}),  # huge reply
    "number 2": (200, b'{"choices": [{"message": {"content": "Final Answer: A \xff\xfe bad bytes"}}]}', {}),
    "number 3": (200, b"<html>not json</html>", {}),
}


def _malformed(n, body):
    prompt = body["messages"][-1]["content"]
    if "break down" in prompt or "Write Relevant Knowledge" in prompt:
        return None
    for fragment, reply in MALFORMED.items():
        if fragment in prompt:
            return reply
    return None


def test_malformed_replies_never_crash_the_run(fake_api, questions_file, tmp_path):
    api = fake_api(_malformed)
    out = tmp_path / "out"
    result = run_fake(api, questions_file, out)
    assert result.exit_code == 0, result.output
    files = all_records(out)
    assert sorted(ids_once(files, "reasoner")) == ["q0", "q1", "q2", "q3"]
    expected = {"q0": "empty_reply", "q1": "reply_too_long", "q2": "malformed_reply", "q3": "malformed_reply"}
    for module in ("reasoner", "drd"):
        assert {r["id"]: r["reason"] for r in files["rejected"] if r["module"] == module} == expected
    assert files["reasoner"] == files["drd"] == []
    assert all(len(r["target"]) <= 16_000 for r in files["rejected"])


def test_request_rejected_by_the_server_costs_one_trace(fake_api, questions_file, tmp_path):
    api = fake_api(lambda n, b: (400, b'{"error": {"message": "context too long"}}', {})
                   if "number 2" in b["messages"][-1]["content"] else None)
    out = tmp_path / "out"
    result = run_fake(api, questions_file, out)
    assert result.exit_code == 0, result.output
    rejected = [r for r in all_records(out)["rejected"] if r["id"].startswith("q2")]
    assert {r["reason"] for r in rejected} == {"request_rejected"}


@pytest.mark.parametrize("args, message", [
    (["--teacher", "claude:x"], "--teacher 'claude:x': unknown teacher"),
    (["--teacher", "openai:"], "the model after 'openai:' is missing"),
    (["--teacher", "gguf:/nonexistent/model.gguf"], "no such file"),
    (["--teacher", "openai:gpt-4o"], "set $OPENAI_API_KEY"),
    (["--teacher", "gold", "--data-path", "/nonexistent/q.jsonl"], "/nonexistent/q.jsonl: no such file"),
    (["--teacher", "gold", "--limit", "0"], "--limit 0: expected a positive number"),
    (["--teacher", "gold", "--concurrency", "0"], "--concurrency 0: expected a positive number"),
])
def test_bad_input_is_one_line_error(args, message, questions_file, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    if "--data-path" not in args:
        args = [*args, "--data-path", str(questions_file)]
    result = teach("--dataset", "strategyqa", "--out", tmp_path / "out", *args)
    assert message in one_line_error(result)


def test_unwritable_out_dir_is_one_line_error(questions_file, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = teach("--dataset", "strategyqa", "--data-path", questions_file, "--teacher", "gold",
                   "--out", blocker / "teacher")
    assert "cannot write there" in one_line_error(result)


def test_out_dir_of_another_teacher_is_refused(fake_api, questions_file, tmp_path):
    api = fake_api()
    out = tmp_path / "out"
    assert run_fake(api, questions_file, out, "--limit", "1").exit_code == 0
    result = teach("--dataset", "strategyqa", "--data-path", questions_file, "--teacher", "openai:other",
                   "--base-url", api.url, "--out", out, env={"OPENAI_API_KEY": KEY})
    assert "holds a run with different teacher" in one_line_error(result)
