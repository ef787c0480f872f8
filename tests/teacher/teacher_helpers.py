"""Helpers for the teacher tests: running `tmd teach`, reading its files, and a scripted
OpenAI-compatible server on 127.0.0.1 for error paths. (A plain module rather than conftest.py so
tests can import it by a name no other test folder uses.)"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

from click.testing import CliRunner

from tmd_local.cli import cli

MODULE_KEYS = {"id", "module", "messages", "target", "teacher", "dataset", "split", "prompt_version"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def teach(*args, env: dict | None = None):
    return CliRunner().invoke(cli, ["teach", *map(str, args)], catch_exceptions=False, env=env)


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def all_records(out: Path) -> dict[str, list[dict]]:
    """Every output file parsed; kept records checked against docs/FORMATS.md section 2."""
    files = {name: read_lines(out / f"{name}.jsonl")
             for name in ("analyzer", "informant", "reasoner", "drd", "rejected")}
    for module in ("analyzer", "informant", "reasoner", "drd"):
        for rec in files[module]:
            assert set(rec) == MODULE_KEYS and rec["module"] == module
            assert [m["role"] for m in rec["messages"]] == ["user"] and rec["target"].strip()
    for rec in files["rejected"]:
        assert set(rec) == MODULE_KEYS | {"reason"} and rec["reason"]
    return files


def ids_once(files: dict[str, list[dict]], module: str) -> list[str]:
    """The question ids of one module over kept + rejected, asserting none appears twice."""
    ids = [r["id"] for r in files[module]] + [r["id"] for r in files["rejected"] if r["module"] == module]
    assert len(ids) == len(set(ids)), f"duplicate {module} ids: {sorted(ids)}"
    return ids


# --- scripted OpenAI-compatible server -------------------------------------------------------

def chat_json(text, finish="stop") -> bytes:
    return json.dumps({"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "fake",
                       "choices": [{"index": 0, "finish_reason": finish,
                                    "message": {"role": "assistant", "content": text}}],
                       "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}).encode()


def well_behaved(prompt: str) -> str:
    """A teacher that always answers A, in the expected formats."""
    if "break down a given complex question" in prompt:
        return "Here are the subquestions:\n1. What is the first fact?\n2. What is the second fact?"
    if "Write Relevant Knowledge" in prompt:
        return "Some relevant background knowledge."
    return "1. A first reasoning step.\n2. A second one.\n**Final Answer:** A\nThat is all."


class FakeAPI:
    """Answers POST /v1/chat/completions. `script(n, body)` may return None (well-behaved reply),
    or (status, body_bytes, headers), or ("sleep", seconds) to stall before the normal reply."""

    def __init__(self, script: Callable | None = None, delay: float = 0.0):
        self.script = script or (lambda n, body: None)
        self.delay = delay
        self.requests: list[dict] = []
        self.auth: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with api._lock:
                    n = len(api.requests)
                    api.requests.append(body)
                    api.auth.append(self.headers.get("Authorization", ""))
                time.sleep(api.delay)
                action = api.script(n, body)
                if isinstance(action, tuple) and action[0] == "sleep":
                    time.sleep(action[1])
                    action = None
                status, payload, headers = action or (200, chat_json(well_behaved(
                    body["messages"][-1]["content"])), {})
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def log_message(self, *args):
                pass

        return Handler

    def close(self):
        self._server.shutdown()
        self._server.server_close()
