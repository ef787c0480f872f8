"""Categories 10 and 11: the teacher journal never replays what it should not (another teacher's
replies, a failure on this side), and --timeout bounds a whole request against a dribbling server."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hostile_helpers import QUESTION, finishes_within, invoke, one_line_error, write_jsonl
from teacher.backends import OpenAIBackend, Reply
from teacher.journal import JOURNAL_NAME, RUN_NAME, Journal
from teacher.run import Progress, RunConfig, run_model
from tmd_local.core.datasets import load_questions
from tmd_local.core.errors import TmdError

ANSWERS = {"break down": "1. What is the sun?", "Relevant Knowledge": "The sun is a star."}


class FakeTeacher:
    """A backend answering every prompt at once, counting what it was asked."""

    def __init__(self, name: str):
        self.name, self.retried, self.asked = name, 0, 0

    def complete(self, messages, max_tokens):
        self.asked += 1
        prompt = messages[-1]["content"]
        text = next((a for k, a in ANSWERS.items() if k in prompt), "1. It is.\nFinal Answer: A")
        return Reply(text, 5, 5, 0.01, "stop")


def _run(tmp_path: Path, teacher) -> dict:
    path = write_jsonl(tmp_path / "q.jsonl", [QUESTION, {**QUESTION, "id": "q1"}])
    questions, report = load_questions("obqa", "train", path=path, hub=False)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    cfg = RunConfig("obqa", "train", None, report.source, out, teacher.name, max_tokens={"analyzer": 8,
                    "informant": 8, "reasoner": 8, "drd": 8})
    return run_model(questions, cfg, teacher, Progress())


def test_journal_lines_name_their_teacher(tmp_path):
    _run(tmp_path, FakeTeacher("openai:a"))
    lines = [json.loads(x) for x in (tmp_path / "out" / JOURNAL_NAME).read_text().splitlines()]
    assert lines and {line["teacher"] for line in lines} == {"openai:a"}


@pytest.mark.parametrize("damage", ["missing", "corrupt", "not an object"])
def test_another_teacher_never_replays_the_first_ones_replies(tmp_path, damage):
    first = FakeTeacher("openai:a")
    _run(tmp_path, first)
    run_json = tmp_path / "out" / RUN_NAME
    {"missing": run_json.unlink, "corrupt": lambda: run_json.write_text("{not json"),
     "not an object": lambda: run_json.write_text("[1]")}[damage]()
    second = FakeTeacher("openai:b")
    with pytest.raises(TmdError, match="a reply from teacher 'openai:a', not 'openai:b'"):
        _run(tmp_path, second)
    assert second.asked == 0
    assert not (tmp_path / "out" / "summary.json").exists() or "openai:b" not in (tmp_path / "out" / "summary.json").read_text()


def test_the_same_teacher_resumes_with_run_json_lost(tmp_path):
    first = FakeTeacher("openai:a")
    _run(tmp_path, first)
    (tmp_path / "out" / RUN_NAME).unlink()
    again = FakeTeacher("openai:a")
    summary = _run(tmp_path, again)
    assert again.asked == 0 and summary["resumed_questions"] == 2


def test_unnamed_lines_need_run_json(tmp_path):
    _run(tmp_path, FakeTeacher("openai:a"))
    journal = tmp_path / "out" / JOURNAL_NAME
    lines = [json.loads(x) for x in journal.read_text().splitlines()]
    journal.write_text("".join(json.dumps({k: v for k, v in line.items() if k != "teacher"}) + "\n" for line in lines))
    assert _run(tmp_path, FakeTeacher("openai:a"))["resumed_questions"] == 2  # run.json pins the teacher
    (tmp_path / "out" / RUN_NAME).unlink()
    with pytest.raises(TmdError, match="names no teacher"):
        _run(tmp_path, FakeTeacher("openai:b"))


def test_journal_lines_of_the_wrong_shape(tmp_path):
    for line in ({"qid": "q", "stage": "drd", "index": 0, "reply": {"text": 5}},
                 {"qid": "q", "stage": "drd", "index": "x", "reply": {}},
                 {"qid": "q", "stage": "drd", "index": 0, "reply": [1]}):
        (tmp_path / JOURNAL_NAME).write_text(json.dumps(line) + "\n")
        with pytest.raises(TmdError, match=r"journal\.jsonl:1: "):
            Journal(tmp_path, "openai:a")


def test_a_failure_on_this_side_is_never_journaled(tmp_path):
    backend = OpenAIBackend("fake", base_url="http://127.0.0.1:9/v1", api_key="k", api_key_env="K",
                            timeout=5, retries=0, backoff=0)

    def broken(**kwargs):
        raise TypeError("a local bug")

    backend._client.chat.completions.create = broken
    with pytest.raises(TmdError, match="failed on this side"):
        _run(tmp_path, backend)
    journal = tmp_path / "out" / JOURNAL_NAME
    assert not journal.exists() or journal.read_text() == ""
    fixed = FakeTeacher(backend.name)
    _run(tmp_path, fixed)
    assert fixed.asked > 0  # the rerun asks the teacher instead of replaying the failure


# --- category 11: a deadline for the whole request ---------------------------------------------

class Dribbler(BaseHTTPRequestHandler):
    """Promises a long reply and sends one byte every 0.2 s, forever (until the client gives up)."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "100000")
        self.end_headers()
        try:
            while not self.server.stopping.is_set():
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def dribbling_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Dribbler)
    server.daemon_threads = True
    server.stopping = threading.Event()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.stopping.set()
    server.shutdown()
    server.server_close()


def test_timeout_bounds_the_whole_request(dribbling_server):
    backend = OpenAIBackend("fake", base_url=dribbling_server, api_key="k", api_key_env="K",
                            timeout=1.0, retries=1, backoff=0)
    started = time.monotonic()
    with pytest.raises(TmdError, match="no complete reply within --timeout 1 s"):
        backend.complete([{"role": "user", "content": "hi"}], 8)
    assert time.monotonic() - started < 6  # two attempts of 1 s, not forever


def test_timeout_through_the_command(tmp_path, dribbling_server):
    path = write_jsonl(tmp_path / "q.jsonl", [QUESTION])
    ended, result = finishes_within(30, invoke, "teach", "--dataset", "obqa", "--data-path", path,
                                    "--teacher", "openai:fake", "--base-url", dribbling_server, "--out",
                                    tmp_path / "t", "--timeout", "1", "--retries", "1", "--backoff", "0",
                                    env={"OPENAI_API_KEY": "sk-x"})
    assert ended, "--timeout 1 must bound a request to a server that dribbles one byte at a time"
    one_line_error(result, "no complete reply within --timeout 1 s")
