"""Issue #27: what one client may cost `tmd serve`. A real server on 127.0.0.1 (the embedded model,
which none of these requests reaches unless they are valid) and raw sockets, so a test can send what
no HTTP library would: a body larger than declared limits, headers a byte at a time, a request that
never ends. Every refusal is a JSON error, and the server goes on answering everyone else."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tmd_local.serve.process import ServerProcess

LIMIT = 64 * 1024
TIMEOUT = 2.0  # --request-timeout
PENGUIN = "Could a penguin live in the Sahara?\nA. yes\nB. no"


def server_args(*extra) -> list[str]:
    return ["--threads", "1", "--queue-size", "4", "--max-body-size", "64KiB", "--request-timeout", str(TIMEOUT),
            "--log-level", "warning", *extra]


def server_env() -> dict:
    return {"PYTHONPATH": os.getcwd(), "OMP_WAIT_POLICY": "PASSIVE"}


@pytest.fixture(scope="module")
def server(embedded_model, tmp_path_factory):
    with ServerProcess(server_args(), log=tmp_path_factory.mktemp("limits") / "server.log",
                       env=server_env()) as running:
        yield running


def connect(server) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def read_reply(sock: socket.socket, seconds: float = 10) -> tuple[int | None, dict, bytes]:
    """(status, headers, body) of one HTTP reply; status None when the server closed without one."""
    sock.settimeout(seconds)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                headers = dict(line.decode().lower().split(": ", 1) for line in head.split(b"\r\n")[1:])
                if len(body) >= int(headers.get("content-length", 1 << 60)):
                    break
    except ConnectionResetError:
        pass
    if not data:
        return None, {}, b""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def closed_by_server(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def healthy(server) -> bool:
    return requests.get(server.url + "/health", timeout=5).status_code == 200


def error_of(body: bytes) -> dict:
    error = json.loads(body)["error"]
    assert "\n" not in error["message"]
    return error


# --- body size ---------------------------------------------------------------------------------

def test_a_declared_body_over_the_limit_is_413_before_it_is_read(server):
    sock = connect(server)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 31457280\r\n\r\n" + b"{" * 1000)  # says 30 MB, sends 1 KB of it
    started = time.monotonic()
    status, headers, body = read_reply(sock)
    assert status == 413 and time.monotonic() - started < 2, (status, body)
    error = error_of(body)
    assert "at most 65536 bytes" in error["message"] and error["code"] == "request_too_large"
    sock.close()


def test_a_body_over_the_limit_sent_whole_or_chunked_is_413(server):
    url = server.url + "/v1/chat/completions"
    headers = {"Content-Type": "application/json"}
    whole = requests.post(url, data=b" " * (LIMIT + 1), headers=headers, timeout=10)
    assert whole.status_code == 413 and "--max-body-size" in whole.json()["error"]["message"]

    def chunks():  # no Content-Length: the body is counted as it arrives
        for _ in range(40):
            yield b" " * 4096

    chunked = requests.post(url, data=chunks(), headers=headers, timeout=10)
    assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "request_too_large"
    assert healthy(server)


def test_a_body_at_the_limit_is_read_and_parsed(server):
    body = json.dumps({"model": "tmd", "messages": [{"role": "user", "content": "x"}], "pad": "y" * 100})
    body = body.ljust(LIMIT)  # trailing spaces: still valid JSON, exactly at the limit
    reply = requests.post(server.url + "/v1/chat/completions", data=body,
                          headers={"Content-Type": "application/json"}, timeout=10)
    assert reply.status_code == 422 and "no answer options" in reply.json()["error"]["message"]


def test_headers_over_16_kib_are_refused_and_the_server_goes_on(server):
    reply = requests.get(server.url + "/health", headers={"X-Big": "a" * 20_000}, timeout=10)
    assert reply.status_code == 431 and reply.json()["error"]["code"] == "headers_too_large"
    sock = connect(server)  # the same, arriving in pieces: h11 stops buffering them at 16 KiB
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    sent = 0
    try:
        for _ in range(40):
            sock.sendall(b"X-Pad: " + b"a" * 2000 + b"\r\n")
            sent += 2009
            time.sleep(0.02)
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused while still sending: the 400 may be lost to the reset, the close is not
    assert sent < 24 * 1024, "the server kept reading headers past 16 KiB"
    status, _, _ = read_reply(sock)
    assert status in (400, None)
    sock.close()
    assert healthy(server)


# --- time to send a request --------------------------------------------------------------------

def test_a_client_dribbling_its_headers_gets_408_and_is_dropped(server):
    sock = connect(server)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    status = None
    for _ in range(20):  # one header byte every 0.25 s: it would take minutes to finish
        try:
            sock.sendall(b"X")
        except (BrokenPipeError, ConnectionResetError):
            break
        time.sleep(0.25)
        assert healthy(server)  # everyone else is served meanwhile
        sock.setblocking(False)
        try:
            if sock.recv(1, socket.MSG_PEEK):
                break
        except BlockingIOError:
            pass
        finally:
            sock.setblocking(True)
    status, _, body = read_reply(sock, seconds=5)
    dropped_after = time.monotonic() - started
    assert status == 408 and "--request-timeout" in error_of(body)["message"]
    assert TIMEOUT - 0.5 < dropped_after < TIMEOUT + 1.5, dropped_after
    sock.close()


def test_a_client_stalling_mid_body_gets_408(server):
    sock = connect(server)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 1000\r\n\r\n{\"model\": ")
    started = time.monotonic()
    status, _, body = read_reply(sock, seconds=TIMEOUT + 5)
    assert status == 408 and error_of(body)["code"] == "request_timeout"
    assert time.monotonic() - started < TIMEOUT + 1.5
    sock.close()


def test_an_idle_connection_is_closed_without_a_reply(server):
    sock = connect(server)
    started = time.monotonic()
    assert closed_by_server(sock, TIMEOUT + 5)
    assert time.monotonic() - started < TIMEOUT + 1.5
    sock.close()


def test_fifty_slow_clients_at_once_do_not_stop_a_fast_one(server):
    socks = [connect(server) for _ in range(50)]
    for sock in socks:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
    started = time.monotonic()
    for _ in range(5):
        assert healthy(server)
    assert time.monotonic() - started < TIMEOUT  # answered while all 50 are still connected
    assert all(closed_by_server(sock, TIMEOUT + 5) for sock in socks)
    assert time.monotonic() - started < TIMEOUT + 3
    for sock in socks:
        sock.close()
    assert healthy(server)


def test_a_keep_alive_connection_gets_a_fresh_deadline_for_each_request(server):
    sock = connect(server)
    for _ in range(3):  # three requests, 1 s apart: 3 s in all, more than TIMEOUT
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = read_reply(sock)
        assert status == 200 and json.loads(body)["status"] == "ok"
        time.sleep(1.0)
    sock.close()


# --- stopping --------------------------------------------------------------------------------

def ask(url: str, max_tokens: int, seed: int, stream: bool = False) -> tuple[int | None, str]:
    """(status, body) of one question; (None, why) when no complete reply came."""
    body = {"model": "drd", "max_tokens": max_tokens, "seed": seed, "stream": stream,
            "messages": [{"role": "user", "content": PENGUIN}]}
    try:
        reply = requests.post(url + "/v1/chat/completions", json=body, timeout=120)
        return reply.status_code, reply.text
    except requests.RequestException as e:
        return None, str(e)


def wait_running(server, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.get("/metrics")["running"]:
            return
        time.sleep(0.05)
    raise AssertionError("no question started running")


@pytest.mark.slow
@pytest.mark.parametrize("grace, running_gets", [(60, 200), (0, 503)])
def test_sigterm_finishes_or_refuses_every_request_and_exits(embedded_model, tmp_path, grace, running_gets):
    """SIGTERM with questions running and queued: the running one is answered (a long grace) or gets
    503 (no grace), the queued ones get 503 at once, streams end with an error event rather than
    being cut, and the process exits."""
    args = server_args("--shutdown-grace", str(grace), "--max-batch", "1")
    with ServerProcess(args, log=tmp_path / "server.log", env=server_env()) as server:
        ask(server.url, 1, seed=0)  # the model is loaded: the timing below is the question's own
        with ThreadPoolExecutor(max_workers=4) as pool:
            running = pool.submit(ask, server.url, 24, 1)
            wait_running(server)
            queued = [pool.submit(ask, server.url, 24, seed) for seed in (2, 3)]
            streamed = pool.submit(ask, server.url, 24, 4, True)
            time.sleep(0.5)  # all three queued behind the running one
            assert server.get("/metrics")["queue_length"] == 3
            server.proc.send_signal(signal.SIGTERM)
            results = [running.result(), *[f.result() for f in queued], streamed.result()]
        try:
            exit_code = server.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError("the server did not exit after SIGTERM") from None
    # uvicorn re-raises the signal once it has shut down cleanly, so the exit is "killed by SIGTERM",
    # as a service manager expects of a stopped service; the replies below show it was graceful.
    assert exit_code in (0, -signal.SIGTERM), server.log_text()[-2000:]
    status, text = results[0]
    assert status == running_gets, text
    if status == 200:
        assert json.loads(text)["tmd"]["trace"]["answer"] in ("A", "B")
    for status, text in results[1:3]:
        assert status == 503 and json.loads(text)["error"]["code"] == "shutting_down", text
    status, text = results[3]
    # A stream that had started is 200 and ends with an error event; one refused earlier is 503.
    if status == 200:
        events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
        assert "shutting down" in events[-1], events[-3:]
    else:
        assert status == 503, text
    assert "Traceback" not in server.log_text()
