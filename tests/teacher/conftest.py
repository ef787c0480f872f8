"""Fixtures for the teacher tests. Every server listens on 127.0.0.1 only: llama-cpp-python's own
OpenAI-compatible server with the embedded model (one per session), and scripted fakes per test."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from teacher_helpers import FakeAPI, free_port


@pytest.fixture
def fake_api():
    servers = []

    def start(script=None, delay=0.0) -> FakeAPI:
        servers.append(FakeAPI(script, delay))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def questions_file(tmp_path) -> Path:
    """Four yes/no questions, gold A, B, A, B: a teacher that always answers A gets half right."""
    path = tmp_path / "questions.jsonl"
    rows = [{"id": f"q{i}", "question": f"Is test statement number {i} true?",
             "options": {"A": "yes", "B": "no"}, "answer": "AB"[i % 2]} for i in range(4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --- llama-cpp-python's server with the embedded model -----------------------------------------

@pytest.fixture(scope="session")
def llama_server(embedded_model, tmp_path_factory):
    """URL of `python -m llama_cpp.server` serving the embedded GGUF; stopped at session end.
    Its log goes to a file: a pipe nobody reads would fill up and stall the server."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_model.path),
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "2"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_until_up(proc, url + "/models", log_path, timeout=120)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_until_up(proc: subprocess.Popen, url: str, log_path: Path, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"llama_cpp.server exited ({proc.returncode}): {tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"llama_cpp.server did not answer {url} within {timeout} s")
